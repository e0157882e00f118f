// ReLU and ReLU6 modules. Each keeps its forward output for backward (the output says
// where the input was in the linear range), not its input.
#pragma once

#include "layers/module.h"

namespace mb {

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Shape output_shape(const Shape& input) const override { return input; }
  std::int64_t forward_flops(const Shape& input) const override { return input.numel(); }
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  void clear_cache() override { output_ = Tensor(); }

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  Tensor output_;
};

// min(max(x, 0), 6), as in MobileNetV2.
class ReLU6 : public Module {
 public:
  ReLU6() : Module("ReLU6") {}
  Shape output_shape(const Shape& input) const override { return input; }
  std::int64_t forward_flops(const Shape& input) const override { return 2 * input.numel(); }
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  void clear_cache() override { output_ = Tensor(); }

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  Tensor output_;
};

}  // namespace mb
