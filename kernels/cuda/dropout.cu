// Inverted dropout kernel and its host launcher.
//
// Note: one Philox call yields four uniforms, for elements 4k .. 4k+3 of a sample (that is
// how philox_element_uniform counts: counter c0 = element / 4, output element % 4), so each
// thread handles one such group and calls the generator once instead of four times.
#include "kernels/cuda/dropout.h"

#include "kernels/cuda/launch.cuh"
#include "runtime/philox.h"

namespace mb::cuda {
namespace {

__global__ void dropout_kernel(const float* input, float* output, std::int64_t samples,
                               std::int64_t elements_per_sample, float p, float scale,
                               std::uint64_t seed, std::uint32_t stream_id, std::uint32_t step,
                               std::int64_t sample_offset) {
  const std::int64_t groups_per_sample = (elements_per_sample + 3) / 4;
  const std::int64_t groups = samples * groups_per_sample;
  const PhiloxKey key = philox_key(seed, stream_id);
  for (std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       g < groups; g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t s = g / groups_per_sample;
    const std::int64_t group = g - s * groups_per_sample;
    const PhiloxCounter counter{static_cast<std::uint32_t>(group),
                                static_cast<std::uint32_t>(sample_offset + s), step, 0x6D62u};
    const PhiloxOutput bits = philox4x32_10(counter, key);
    const std::int64_t base = s * elements_per_sample + group * 4;
    const std::int64_t in_sample =
        min(static_cast<std::int64_t>(4), elements_per_sample - group * 4);
    for (int j = 0; j < in_sample; ++j) {
      const float u = philox_uniform(bits.v[j]);
      output[base + j] = u >= p ? input[base + j] * scale : 0.0f;
    }
  }
}

}  // namespace

void dropout_apply(const Stream& stream, const float* input, float* output, std::int64_t samples,
                   std::int64_t elements_per_sample, const DropoutKey& key) {
  MB_CHECK(key.p >= 0.0f && key.p <= 1.0f, "dropout: p = ", key.p,
           " is outside [0, 1]. Fix: pass a drop probability in [0, 1]");
  MB_CHECK(samples >= 0 && elements_per_sample >= 0, "dropout: negative sizes (", samples, ", ",
           elements_per_sample, ")");
  if (samples == 0 || elements_per_sample == 0) return;
  MB_CHECK(input != nullptr && output != nullptr, "dropout: null pointer");
  const std::int64_t groups = samples * ((elements_per_sample + 3) / 4);
  dropout_kernel<<<grid_for(groups), kThreads, 0, cuda_stream(stream)>>>(
      input, output, samples, elements_per_sample, key.p, dropout_scale(key.p), key.seed,
      key.stream_id, key.step, key.sample_offset);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
