// ReLU and ReLU6 modules over kernels/activation.
#include "layers/activation.h"

#include "kernels/activation.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace mb {
namespace {

enum class Kind { Relu, Relu6 };

void check_float(const Tensor& t, const char* op) {
  MB_CHECK(t.dtype() == DType::Float32, op, ": expected a float32 tensor, got ",
           dtype_name(t.dtype()));
}

Tensor activation_forward(Kind kind, const Tensor& input) {
  check_float(input, kind == Kind::Relu ? "ReLU.forward" : "ReLU6.forward");
  Tensor output =
      Tensor::empty(input.shape(), tensor_options(input.device(), MemoryTag::Activation));
  const float* x = input.data<float>();
  float* y = output.data<float>();
  const Stream stream = Stream::compute(input.device());
  if (kind == Kind::Relu) {
    relu_forward(stream, x, y, input.numel());
  } else {
    relu6_forward(stream, x, y, input.numel());
  }
  return output;
}

Tensor activation_backward(Kind kind, const Tensor& output, const Tensor& grad_output) {
  const char* name = kind == Kind::Relu ? "ReLU.backward" : "ReLU6.backward";
  MB_CHECK(output.defined(), name, ": no saved output. Fix: call forward() before backward()");
  check_float(grad_output, name);
  MB_CHECK(grad_output.shape() == output.shape(), name, ": gradient shape ",
           grad_output.shape().to_string(), " does not match the output shape ",
           output.shape().to_string());
  Tensor grad_input =
      Tensor::empty(output.shape(), tensor_options(output.device(), MemoryTag::Activation));
  const float* y = output.data<float>();
  const float* dy = grad_output.data<float>();
  float* dx = grad_input.data<float>();
  const Stream stream = Stream::compute(output.device());
  if (kind == Kind::Relu) {
    relu_backward(stream, y, dy, dx, output.numel());
  } else {
    relu6_backward(stream, y, dy, dx, output.numel());
  }
  return grad_input;
}

}  // namespace

std::int64_t PointwiseActivation::forward_flops(const Shape& input) const {
  return (relu6_ ? 2 : 1) * input.numel();
}

MemoryTrace::Id PointwiseActivation::trace_forward(MemoryTrace& trace,
                                                   MemoryTrace::Id input) const {
  if (absorbed_) return input;
  return trace.layer(input, trace.shape(input), Keep::Output);
}

Tensor PointwiseActivation::forward_impl(const Tensor& input, const RunState& /*state*/) {
  if (absorbed_) return input;
  output_ = activation_forward(relu6_ ? Kind::Relu6 : Kind::Relu, input);
  return output_;
}

Tensor PointwiseActivation::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  if (absorbed_) return state.need_input_grad ? grad_output : Tensor();
  if (!state.need_input_grad) {
    output_ = Tensor();
    return Tensor();
  }
  Tensor grad_input = activation_backward(relu6_ ? Kind::Relu6 : Kind::Relu, output_, grad_output);
  output_ = Tensor();
  return grad_input;
}

}  // namespace mb
