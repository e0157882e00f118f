// Inverted dropout on the CPU (reference implementation).
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/parallel.h"

#include <algorithm>

#include "runtime/philox.h"

namespace mb::cpu {

void dropout_apply(const Stream& /*stream*/, const float* input, float* output,
                   std::int64_t samples, std::int64_t elements_per_sample, const DropoutKey& key) {
  const float scale = dropout_scale(key.p);
  const PhiloxKey stream_key = philox_key(key.seed, key.stream_id);
  parallel_for(samples, samples * elements_per_sample, [&](std::int64_t s) {
    const auto global_sample = static_cast<std::uint32_t>(key.sample_offset + s);
    const float* in = input + s * elements_per_sample;
    float* out = output + s * elements_per_sample;
    // One Philox call gives the uniforms of elements 4k .. 4k+3 (see philox_element_uniform:
    // counter c0 = e / 4, output e % 4), so draw once per group of four.
    for (std::int64_t group = 0; group * 4 < elements_per_sample; ++group) {
      const PhiloxCounter counter{static_cast<std::uint32_t>(group), global_sample, key.step,
                                  0x6D62u};
      const PhiloxOutput bits = philox4x32_10(counter, stream_key);
      const std::int64_t begin = group * 4;
      const std::int64_t end = std::min(begin + 4, elements_per_sample);
      for (std::int64_t e = begin; e < end; ++e) {
        out[e] = philox_uniform(bits.v[e - begin]) >= key.p ? in[e] * scale : 0.0f;
      }
    }
  });
}

}  // namespace mb::cpu
