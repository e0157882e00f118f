// UpsampleNearest2d over kernels/upsample.h.
#include "layers/upsample.h"

#include "kernels/upsample.h"
#include "runtime/error.h"

namespace mb {

UpsampleNearest2d::UpsampleNearest2d(int scale) : Module("UpsampleNearest2d"), scale_(scale) {
  MB_CHECK(scale >= 1, "UpsampleNearest2d: scale ", scale, " must be a positive integer");
}

Shape UpsampleNearest2d::output_shape(const Shape& input) const {
  MB_CHECK(input.ndim() == 4, "UpsampleNearest2d: input shape ", input.to_string(),
           " is not [N, C, H, W]");
  return Shape{input[0], input[1], input[2] * scale_, input[3] * scale_};
}

Tensor UpsampleNearest2d::forward_impl(const Tensor& input, const RunState& /*state*/) {
  MB_CHECK(input.dtype() == DType::Float32, "UpsampleNearest2d.forward: expected float32, got ",
           dtype_name(input.dtype()));
  const Shape out_shape = output_shape(input.shape());
  input_shape_ = input.shape();
  Tensor output = Tensor::empty(out_shape, tensor_options(input.device(), MemoryTag::Activation));
  const std::int64_t planes = input.dim(0) * input.dim(1);
  upsample_nearest2d_forward(stream(), input.data<float>(), output.data<float>(), planes,
                             input.dim(2), input.dim(3), scale_);
  return output;
}

Tensor UpsampleNearest2d::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  MB_CHECK(input_shape_.ndim() == 4,
           "UpsampleNearest2d.backward: no forward pass to differentiate. Fix: call forward() "
           "first");
  const Shape expected = output_shape(input_shape_);
  MB_CHECK(grad_output.shape() == expected, "UpsampleNearest2d.backward: gradient shape ",
           grad_output.shape().to_string(), " does not match the output shape ",
           expected.to_string());
  if (!state.need_input_grad) return Tensor();
  Tensor grad_input =
      Tensor::empty(input_shape_, tensor_options(grad_output.device(), MemoryTag::Activation));
  const std::int64_t planes = input_shape_[0] * input_shape_[1];
  upsample_nearest2d_backward(stream(), grad_output.data<float>(), grad_input.data<float>(), planes,
                              input_shape_[2], input_shape_[3], scale_);
  return grad_input;
}

}  // namespace mb
