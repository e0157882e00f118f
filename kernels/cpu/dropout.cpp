// Inverted dropout on the CPU (reference implementation).
#include "kernels/cpu/dropout.h"

#include "runtime/philox.h"

namespace mb::cpu {

float dropout_scale(float p) {
  return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
}

void dropout_apply(const float* input, float* output, std::int64_t samples,
                   std::int64_t elements_per_sample, const DropoutKey& key) {
  const float scale = dropout_scale(key.p);
  for (std::int64_t s = 0; s < samples; ++s) {
    const auto global_sample = static_cast<std::uint32_t>(key.sample_offset + s);
    const float* in = input + s * elements_per_sample;
    float* out = output + s * elements_per_sample;
    for (std::int64_t e = 0; e < elements_per_sample; ++e) {
      const float u = philox_element_uniform(key.seed, key.stream_id, key.step, global_sample,
                                             static_cast<std::uint32_t>(e));
      out[e] = u >= key.p ? in[e] * scale : 0.0f;
    }
  }
}

}  // namespace mb::cpu
