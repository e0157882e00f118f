// 8-bit planar images to float32 input, normalized per channel, and its host launcher.
//
// Memory-bound: each thread reads 4 bytes (one 32-bit load when the plane allows) and
// writes one float4. The arithmetic is torchvision's, in its order: v / 255, minus the
// mean, divided by the std (IEEE division, as the CPU twin's table computes it).
#include "kernels/cuda/image_input.h"

#include "kernels/cuda/launch.cuh"

namespace mb::cuda {
namespace {

__device__ __forceinline__ float normalize_value(unsigned value, float mean, float std) {
  return (__fdiv_rn(static_cast<float>(value), 255.0f) - mean) / std;
}

// Planes whose size is a multiple of 4: every thread converts 4 bytes of one channel.
__global__ void images_to_float4_kernel(const std::uint32_t* src, float4* dst, std::int64_t words,
                                        std::int64_t words_per_plane, int channels,
                                        ChannelNormalization normalization) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < words;
       i += stride) {
    const int c = static_cast<int>((i / words_per_plane) % channels);
    const float mean = normalization.mean[c], std = normalization.std[c];
    const std::uint32_t w = src[i];
    dst[i] = make_float4(
        normalize_value(w & 0xFFu, mean, std), normalize_value((w >> 8) & 0xFFu, mean, std),
        normalize_value((w >> 16) & 0xFFu, mean, std), normalize_value(w >> 24, mean, std));
  }
}

__global__ void images_to_float_kernel(const std::uint8_t* src, float* dst, std::int64_t count,
                                       std::int64_t plane, int channels,
                                       ChannelNormalization normalization) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const int c = static_cast<int>((i / plane) % channels);
    dst[i] = normalize_value(src[i], normalization.mean[c], normalization.std[c]);
  }
}

}  // namespace

void images_to_float(const Stream& where, const std::uint8_t* src, float* dst, std::int64_t images,
                     std::int64_t channels, std::int64_t plane,
                     const ChannelNormalization& normalization) {
  const cudaStream_t stream = cuda_stream(where);
  const std::int64_t count = images * channels * plane;
  if (plane % 4 == 0 && aligned16(dst) && reinterpret_cast<std::uintptr_t>(src) % 4 == 0) {
    const std::int64_t words = count / 4;
    images_to_float4_kernel<<<grid_for(words), kThreads, 0, stream>>>(
        reinterpret_cast<const std::uint32_t*>(src), reinterpret_cast<float4*>(dst), words,
        plane / 4, static_cast<int>(channels), normalization);
  } else {
    images_to_float_kernel<<<grid_for(count), kThreads, 0, stream>>>(
        src, dst, count, plane, static_cast<int>(channels), normalization);
  }
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
