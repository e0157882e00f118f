// Inverted dropout (twins: kernels/cpu/dropout.h, the reference, and kernels/cuda/dropout.h).
//
// The keep decision for element e of the sample with global index s is
//   philox_element_uniform(seed, stream_id, step, s, e) >= p
// (runtime/philox.h), the same function on CPU and CUDA, so the masks depend only on the
// global sample index: any split of a batch into micro-batches gives the same masks.
// Kept elements are scaled by 1 / (1 - p); with p = 1 everything is dropped (output 0).
// Backward recomputes the mask instead of storing it.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb {

struct DropoutKey {
  float p = 0.5f;
  std::uint64_t seed = 0;
  std::uint32_t stream_id = 0;
  std::uint32_t step = 0;
  std::int64_t sample_offset = 0;  // global index of the first sample in the buffer
};

// The factor applied to kept elements: 1 / (1 - p), or 0 when p == 1.
float dropout_scale(float p);

// input/output: `samples` x `elements_per_sample` floats. Also used for backward (the mask
// and scale are the same): pass grad_output as input and grad_input as output.
void dropout_apply(const Stream& stream, const float* input, float* output, std::int64_t samples,
                   std::int64_t elements_per_sample, const DropoutKey& key);

}  // namespace mb
