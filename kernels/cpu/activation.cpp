// ReLU and ReLU6 on the CPU (reference implementations).
#include "kernels/cpu/activation.h"

#include <algorithm>

namespace mb::cpu {

void relu_forward(const float* input, float* output, std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) output[i] = input[i] > 0.0f ? input[i] : 0.0f;
}

void relu_backward(const float* output, const float* grad_output, float* grad_input,
                   std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) {
    grad_input[i] = output[i] > 0.0f ? grad_output[i] : 0.0f;
  }
}

void relu6_forward(const float* input, float* output, std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) {
    const float x = input[i];
    output[i] = x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f;
  }
}

void relu6_backward(const float* output, const float* grad_output, float* grad_input,
                    std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) {
    grad_input[i] = (output[i] > 0.0f && output[i] < 6.0f) ? grad_output[i] : 0.0f;
  }
}

}  // namespace mb::cpu
