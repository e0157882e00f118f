// ReLU and ReLU6 modules over kernels/activation.
#include "layers/activation.h"

#include "kernels/activation.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace mb {

std::int64_t PointwiseActivation::forward_flops(const Shape& input) const {
  return (relu6_ ? 2 : 1) * input.numel();
}

MemoryTrace::Id PointwiseActivation::trace_forward(MemoryTrace& trace,
                                                   MemoryTrace::Id input) const {
  if (absorbed_) return input;
  const std::int64_t words = activation_mask_words(trace.shape(input).numel());
  return trace.layer(input, trace.shape(input), Keep::Nothing,
                     static_cast<std::size_t>(words) * sizeof(std::uint32_t));
}

Tensor PointwiseActivation::forward_impl(const Tensor& input, const RunState& /*state*/) {
  if (absorbed_) return input;
  const char* name = relu6_ ? "ReLU6.forward" : "ReLU.forward";
  MB_CHECK(input.dtype() == DType::Float32, name, ": expected a float32 tensor, got ",
           dtype_name(input.dtype()));
  Tensor output =
      Tensor::empty(input.shape(), tensor_options(input.device(), MemoryTag::Activation));
  mask_ = Tensor::empty(Shape{activation_mask_words(input.numel())},
                        tensor_options(input.device(), MemoryTag::Activation, DType::Int32));
  auto* mask = reinterpret_cast<std::uint32_t*>(mask_.data<std::int32_t>());
  if (relu6_) {
    relu6_forward_masked(stream(), input.data<float>(), output.data<float>(), mask, input.numel());
  } else {
    relu_forward_masked(stream(), input.data<float>(), output.data<float>(), mask, input.numel());
  }
  output_shape_ = input.shape();
  return output;
}

Tensor PointwiseActivation::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  if (absorbed_) return state.need_input_grad ? grad_output : Tensor();
  const char* name = relu6_ ? "ReLU6.backward" : "ReLU.backward";
  MB_CHECK(mask_.defined(), name, ": nothing kept. Fix: call forward() before backward()");
  MB_CHECK(grad_output.dtype() == DType::Float32, name, ": expected a float32 gradient, got ",
           dtype_name(grad_output.dtype()));
  MB_CHECK(grad_output.shape() == output_shape_, name, ": gradient ",
           grad_output.shape().to_string(), " does not match the output shape ",
           output_shape_.to_string());
  Tensor grad_input;
  if (state.need_input_grad) {
    grad_input = Tensor::empty(grad_output.shape(),
                               tensor_options(grad_output.device(), MemoryTag::Activation));
    activation_backward_masked(
        stream(), reinterpret_cast<const std::uint32_t*>(mask_.data<std::int32_t>()),
        grad_output.data<float>(), grad_input.data<float>(), grad_output.numel());
  }
  mask_ = Tensor();
  return grad_input;
}

}  // namespace mb
