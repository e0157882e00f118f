// Elementwise and channel-routing ops on CUDA: grid-stride kernels, float4-vectorized where
// every pointer is 16-byte aligned. CPU twins: kernels/cpu/elementwise.h (the same
// signatures).
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb::cuda {

void add(const Stream& stream, const float* a, const float* b, float* out, std::int64_t count);
void add_into(const Stream& stream, float* dst, const float* src, std::int64_t count);

// Tensors viewed as [outer, channels, inner]: out = [a's channels, b's channels] per outer.
void concat_channels(const Stream& stream, const float* a, const float* b, float* out,
                     std::int64_t outer, std::int64_t channels_a, std::int64_t channels_b,
                     std::int64_t inner);
void split_channels(const Stream& stream, const float* in, float* a, float* b, std::int64_t outer,
                    std::int64_t channels_a, std::int64_t channels_b, std::int64_t inner);

}  // namespace mb::cuda
