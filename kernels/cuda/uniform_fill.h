// Philox parameter initialization on CUDA, bit for bit the CPU twin's
// (kernels/cpu/uniform_fill.h). Semantics: kernels/uniform_fill.h.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb::cuda {

void uniform_fill(const Stream& stream, float* output, std::int64_t count, float bound,
                  std::uint64_t seed, std::uint32_t stream_id);

}  // namespace mb::cuda
