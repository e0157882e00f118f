// ReLU and ReLU6 on the CPU: the reference for kernels/cuda/activation.cu.
//
// Backward reads the forward *output*: y > 0 exactly where x > 0 (and 0 < y < 6 exactly
// where 0 < x < 6), so a module keeps only its output, which the next layer often keeps
// anyway. At the kinks the gradient is 0, as in PyTorch.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb::cpu {

void relu_forward(const Stream& stream, const float* input, float* output, std::int64_t count);
void relu_backward(const Stream& stream, const float* output, const float* grad_output,
                   float* grad_input, std::int64_t count);
void relu6_forward(const Stream& stream, const float* input, float* output, std::int64_t count);
void relu6_backward(const Stream& stream, const float* output, const float* grad_output,
                    float* grad_input, std::int64_t count);

void relu_forward_masked(const Stream& stream, const float* input, float* output,
                         std::uint32_t* mask, std::int64_t count);
void relu6_forward_masked(const Stream& stream, const float* input, float* output,
                          std::uint32_t* mask, std::int64_t count);
void activation_backward_masked(const Stream& stream, const std::uint32_t* mask,
                                const float* grad_output, float* grad_input, std::int64_t count);

}  // namespace mb::cpu
