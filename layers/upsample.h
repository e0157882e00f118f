// UpsampleNearest2d: nearest-neighbour upsampling by an integer factor (x2 in U-Net's
// decoder): [N, C, H, W] -> [N, C, scale*H, scale*W]. Nothing is saved for backward besides
// the input's shape; the gradient of an input pixel is the sum over its scale x scale block.
#pragma once

#include "layers/module.h"

namespace mb {

class UpsampleNearest2d : public Module {
 public:
  // Throws mb::InvalidArgument unless scale >= 1.
  explicit UpsampleNearest2d(int scale = 2);

  int scale() const { return scale_; }
  // Throws mb::InvalidArgument unless the input is [N, C, H, W].
  Shape output_shape(const Shape& input) const override;
  // One copy per output element; backward needs only the input shape.
  std::int64_t forward_flops(const Shape& input) const override {
    return output_shape(input).numel();
  }
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override {
    return trace.layer(input, output_shape(trace.shape(input)), Keep::Nothing);
  }
  void clear_cache() override { input_shape_ = Shape(); }

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  int scale_;
  Shape input_shape_;
};

}  // namespace mb
