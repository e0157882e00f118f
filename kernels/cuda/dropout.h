// Inverted dropout on CUDA. The mask is philox_element_uniform(seed, stream_id, step,
// sample_offset + s, e) >= p, bit for bit the CPU twin's (kernels/cpu/dropout.h), so CPU and
// CUDA, and any micro-batch split, draw the same masks. The same call serves forward and
// backward (the mask and the 1 / (1 - p) scale are recomputed, never stored).
#pragma once

#include <cstdint>

#include "kernels/dropout.h"
#include "runtime/stream.h"

namespace mb::cuda {

void dropout_apply(const Stream& stream, const float* input, float* output, std::int64_t samples,
                   std::int64_t elements_per_sample, const DropoutKey& key);

}  // namespace mb::cuda
