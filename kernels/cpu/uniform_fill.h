// Philox parameter initialization on the CPU: the reference for kernels/cuda/uniform_fill.cu.
// Semantics: kernels/uniform_fill.h.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb::cpu {

void uniform_fill(const Stream& stream, float* output, std::int64_t count, float bound,
                  std::uint64_t seed, std::uint32_t stream_id);

}  // namespace mb::cpu
