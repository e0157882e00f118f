// ReLU and ReLU6: dispatch to the CPU or CUDA twin.
#include "kernels/activation.h"

#include "kernels/cpu/activation.h"
#include "kernels/cuda/activation.h"
#include "kernels/dispatch.h"

namespace mb {

void relu_forward(const Stream& stream, const float* input, float* output, std::int64_t count) {
  MB_DISPATCH(stream, relu_forward, input, output, count);
}

void relu_backward(const Stream& stream, const float* output, const float* grad_output,
                   float* grad_input, std::int64_t count) {
  MB_DISPATCH(stream, relu_backward, output, grad_output, grad_input, count);
}

void relu6_forward(const Stream& stream, const float* input, float* output, std::int64_t count) {
  MB_DISPATCH(stream, relu6_forward, input, output, count);
}

void relu6_backward(const Stream& stream, const float* output, const float* grad_output,
                    float* grad_input, std::int64_t count) {
  MB_DISPATCH(stream, relu6_backward, output, grad_output, grad_input, count);
}

void relu_forward_masked(const Stream& stream, const float* input, float* output,
                         std::uint32_t* mask, std::int64_t count) {
  MB_DISPATCH(stream, relu_forward_masked, input, output, mask, count);
}

void relu6_forward_masked(const Stream& stream, const float* input, float* output,
                          std::uint32_t* mask, std::int64_t count) {
  MB_DISPATCH(stream, relu6_forward_masked, input, output, mask, count);
}

void activation_backward_masked(const Stream& stream, const std::uint32_t* mask,
                                const float* grad_output, float* grad_input, std::int64_t count) {
  MB_DISPATCH(stream, activation_backward_masked, mask, grad_output, grad_input, count);
}

}  // namespace mb
