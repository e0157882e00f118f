// Philox parameter initialization kernel and its host launcher: one thread per group of four
// elements (one Philox call), as the CPU twin.
#include "kernels/cuda/uniform_fill.h"

#include "kernels/cuda/launch.cuh"
#include "runtime/philox.h"

namespace mb::cuda {
namespace {

__global__ void uniform_fill_kernel(float* output, std::int64_t count, float bound, PhiloxKey key) {
  const std::int64_t groups = (count + 3) / 4;
  for (std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       g < groups; g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const PhiloxCounter counter{static_cast<std::uint32_t>(g), 0, 0, 0x6D62u};
    const PhiloxOutput bits = philox4x32_10(counter, key);
    const std::int64_t base = g * 4;
    const std::int64_t in_group = min(static_cast<std::int64_t>(4), count - base);
    for (int j = 0; j < in_group; ++j) {
      output[base + j] = (2.0f * philox_uniform(bits.v[j]) - 1.0f) * bound;
    }
  }
}

}  // namespace

void uniform_fill(const Stream& stream, float* output, std::int64_t count, float bound,
                  std::uint64_t seed, std::uint32_t stream_id) {
  const PhiloxKey key = philox_key(seed, stream_id);
  uniform_fill_kernel<<<grid_for((count + 3) / 4), kThreads, 0, cuda_stream(stream)>>>(
      output, count, bound, key);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
