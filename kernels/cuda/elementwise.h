// Elementwise and channel-routing ops on CUDA: grid-stride kernels, float4-vectorized where
// every pointer is 16-byte aligned. CPU twins: kernels/cpu/elementwise.h (same arguments,
// plus the stream here).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mb::cuda {

void add(const float* a, const float* b, float* out, std::int64_t count, cudaStream_t stream);
void add_into(float* dst, const float* src, std::int64_t count, cudaStream_t stream);
void scale(float* data, float factor, std::int64_t count, cudaStream_t stream);
void fill(float* data, float value, std::int64_t count, cudaStream_t stream);

// Tensors viewed as [outer, channels, inner]: out = [a's channels, b's channels] per outer.
void concat_channels(const float* a, const float* b, float* out, std::int64_t outer,
                     std::int64_t channels_a, std::int64_t channels_b, std::int64_t inner,
                     cudaStream_t stream);
void split_channels(const float* in, float* a, float* b, std::int64_t outer,
                    std::int64_t channels_a, std::int64_t channels_b, std::int64_t inner,
                    cudaStream_t stream);

}  // namespace mb::cuda
