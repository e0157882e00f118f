// ReLU and ReLU6 on the CPU (reference implementations).
#include "kernels/cpu/activation.h"
#include "kernels/cpu/parallel.h"

#include <algorithm>

namespace mb::cpu {

void relu_forward(const Stream& /*stream*/, const float* input, float* output, std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) output[i] = input[i] > 0.0f ? input[i] : 0.0f;
  });
}

void relu_backward(const Stream& /*stream*/, const float* output, const float* grad_output,
                   float* grad_input, std::int64_t count) {
  // Note: the gradient is loaded unconditionally so the select vectorizes; a conditional
  // load compiles to a branch that mispredicts on every other element.
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float g = grad_output[i];
      grad_input[i] = output[i] > 0.0f ? g : 0.0f;
    }
  });
}

void relu6_forward(const Stream& /*stream*/, const float* input, float* output,
                   std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float x = input[i];
      output[i] = x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f;
    }
  });
}

void relu6_backward(const Stream& /*stream*/, const float* output, const float* grad_output,
                    float* grad_input, std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float g = grad_output[i];
      const float y = output[i];
      grad_input[i] = (y > 0.0f) & (y < 6.0f) ? g : 0.0f;
    }
  });
}

}  // namespace mb::cpu
