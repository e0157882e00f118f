// ReLU and ReLU6 on CUDA: grid-stride kernels, float4-vectorized when every pointer is
// 16-byte aligned. CPU twins: kernels/cpu/activation.h (same semantics: backward reads the
// forward output, gradient 0 at the kinks).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mb::cuda {

void relu_forward(const float* input, float* output, std::int64_t count, cudaStream_t stream);
void relu_backward(const float* output, const float* grad_output, float* grad_input,
                   std::int64_t count, cudaStream_t stream);
void relu6_forward(const float* input, float* output, std::int64_t count, cudaStream_t stream);
void relu6_backward(const float* output, const float* grad_output, float* grad_input,
                    std::int64_t count, cudaStream_t stream);

}  // namespace mb::cuda
