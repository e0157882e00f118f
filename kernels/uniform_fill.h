// Parameter initialization: U(-bound, bound) from Philox (twins: kernels/cpu/uniform_fill.h,
// the reference, and kernels/cuda/uniform_fill.h).
//
// Element i of the buffer is (2 * philox_element_uniform(seed, stream_id, 0, 0, i) - 1) *
// bound (runtime/philox.h), computed in float, so every platform and backend draws the same
// weights. One Philox call gives elements 4k .. 4k+3; both twins call it once per group of four.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb {

// `count` <= 2^32: the element index is a 32-bit counter.
void uniform_fill(const Stream& stream, float* output, std::int64_t count, float bound,
                  std::uint64_t seed, std::uint32_t stream_id);

}  // namespace mb
