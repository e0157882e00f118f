// Inverted dropout on the CPU: the reference for kernels/cuda/dropout.cu. Semantics:
// kernels/dropout.h.
#pragma once

#include <cstdint>

#include "kernels/dropout.h"
#include "runtime/stream.h"

namespace mb::cpu {

void dropout_apply(const Stream& stream, const float* input, float* output, std::int64_t samples,
                   std::int64_t elements_per_sample, const DropoutKey& key);

}  // namespace mb::cpu
