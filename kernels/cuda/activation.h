// ReLU and ReLU6 on CUDA: grid-stride kernels, float4-vectorized when every pointer is
// 16-byte aligned. CPU twins: kernels/cpu/activation.h (same semantics: backward reads the
// forward output, gradient 0 at the kinks).
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb::cuda {

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

}  // namespace mb::cuda
