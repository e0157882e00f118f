// ReLU and ReLU6: dispatch to kernels/cpu/activation or kernels/cuda/activation.
#include "layers/activation.h"

#include "kernels/cpu/activation.h"
#include "runtime/context.h"
#include "runtime/error.h"

#if MB_WITH_CUDA
#include "kernels/cuda/activation.h"
#include "runtime/cuda_context.h"
#endif

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
  if (input.device().is_cpu()) {
    if (kind == Kind::Relu) {
      cpu::relu_forward(x, y, input.numel());
    } else {
      cpu::relu6_forward(x, y, input.numel());
    }
  } else {
#if MB_WITH_CUDA
    cudaStream_t stream = compute_stream(input.device());
    if (kind == Kind::Relu) {
      cuda::relu_forward(x, y, input.numel(), stream);
    } else {
      cuda::relu6_forward(x, y, input.numel(), stream);
    }
#endif
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
  if (output.device().is_cpu()) {
    if (kind == Kind::Relu) {
      cpu::relu_backward(y, dy, dx, output.numel());
    } else {
      cpu::relu6_backward(y, dy, dx, output.numel());
    }
  } else {
#if MB_WITH_CUDA
    cudaStream_t stream = compute_stream(output.device());
    if (kind == Kind::Relu) {
      cuda::relu_backward(y, dy, dx, output.numel(), stream);
    } else {
      cuda::relu6_backward(y, dy, dx, output.numel(), stream);
    }
#endif
  }
  return grad_input;
}

}  // namespace

std::size_t ReLU::saved_bytes(const Shape& input) const {
  return static_cast<std::size_t>(input.numel()) * sizeof(float);
}

Tensor ReLU::forward_impl(const Tensor& input, const RunState& /*state*/) {
  output_ = activation_forward(Kind::Relu, input);
  return output_;
}

Tensor ReLU::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  if (!state.need_input_grad) {
    output_ = Tensor();
    return Tensor();
  }
  Tensor grad_input = activation_backward(Kind::Relu, output_, grad_output);
  output_ = Tensor();
  return grad_input;
}

std::size_t ReLU6::saved_bytes(const Shape& input) const {
  return static_cast<std::size_t>(input.numel()) * sizeof(float);
}

Tensor ReLU6::forward_impl(const Tensor& input, const RunState& /*state*/) {
  output_ = activation_forward(Kind::Relu6, input);
  return output_;
}

Tensor ReLU6::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  if (!state.need_input_grad) {
    output_ = Tensor();
    return Tensor();
  }
  Tensor grad_input = activation_backward(Kind::Relu6, output_, grad_output);
  output_ = Tensor();
  return grad_input;
}

}  // namespace mb
