// Elementwise sums and channel routing (twins: kernels/cpu/elementwise.h, the reference,
// and kernels/cuda/elementwise.h).
//
// Concat and split work on tensors viewed as [outer, channels, inner] (outer = N,
// inner = H*W for NCHW): concat writes a's channels then b's for each outer index; split is
// its exact inverse (the backward of concat).
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb {

void add(const Stream& stream, const float* a, const float* b, float* out, std::int64_t count);
// dst += src
void add_into(const Stream& stream, float* dst, const float* src, std::int64_t count);
void concat_channels(const Stream& stream, const float* a, const float* b, float* out,
                     std::int64_t outer, std::int64_t channels_a, std::int64_t channels_b,
                     std::int64_t inner);
void split_channels(const Stream& stream, const float* in, float* a, float* b, std::int64_t outer,
                    std::int64_t channels_a, std::int64_t channels_b, std::int64_t inner);

}  // namespace mb
