// Flatten: [N, d1, d2, ...] -> [N, d1*d2*...], a view that shares the input's storage
// (nothing is copied or saved). Backward views the gradient back to the input's shape.
#pragma once

#include "layers/module.h"

namespace mb {

class Flatten : public Module {
 public:
  Flatten() : Module("Flatten") {}
  // Throws mb::InvalidArgument for an input with no batch axis.
  Shape output_shape(const Shape& input) const override;
  // A view: no arithmetic, nothing kept (the input shape only).
  std::int64_t forward_flops(const Shape& /*input*/) const override { return 0; }
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override {
    return trace.view(input, output_shape(trace.shape(input)));
  }
  void clear_cache() override { input_shape_ = Shape(); }

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  Shape input_shape_;
};

}  // namespace mb
