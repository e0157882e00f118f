// Inverted dropout: the scale both twins use, and the dispatch.
#include "kernels/dropout.h"

#include "kernels/cpu/dropout.h"
#include "kernels/cuda/dropout.h"
#include "kernels/dispatch.h"

namespace mb {

float dropout_scale(float p) {
  return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
}

void dropout_apply(const Stream& stream, const float* input, float* output, std::int64_t samples,
                   std::int64_t elements_per_sample, const DropoutKey& key) {
  MB_DISPATCH(stream, dropout_apply, input, output, samples, elements_per_sample, key);
}

}  // namespace mb
