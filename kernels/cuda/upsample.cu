// Nearest-neighbour upsampling kernels and their host launchers.
//
// Forward: one thread per output element (coalesced writes). Backward: one thread per input
// element summing its scale x scale block, so no atomics and a deterministic result.
#include "kernels/cuda/upsample.h"

#include <algorithm>

#include "kernels/cuda/launch.cuh"

namespace mb::cuda {
namespace {

__global__ void upsample_forward_kernel(const float* input, float* output, std::int64_t planes,
                                        std::int64_t height, std::int64_t width, int scale) {
  const std::int64_t out_h = height * scale, out_w = width * scale;
  const std::int64_t total = planes * out_h * out_w;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t x = i % out_w;
    const std::int64_t y = (i / out_w) % out_h;
    const std::int64_t p = i / (out_w * out_h);
    output[i] = input[(p * height + y / scale) * width + x / scale];
  }
}

__global__ void upsample_backward_kernel(const float* grad_output, float* grad_input,
                                         std::int64_t planes, std::int64_t height,
                                         std::int64_t width, int scale) {
  const std::int64_t out_h = height * scale, out_w = width * scale;
  const std::int64_t total = planes * height * width;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t x = i % width;
    const std::int64_t y = (i / width) % height;
    const std::int64_t p = i / (width * height);
    const float* block = grad_output + (p * out_h + y * scale) * out_w + x * scale;
    float sum = 0.0f;
    for (int dy = 0; dy < scale; ++dy) {
      for (int dx = 0; dx < scale; ++dx) sum += block[dy * out_w + dx];
    }
    grad_input[i] = sum;
  }
}

void check_sizes(const char* name, std::int64_t planes, std::int64_t height, std::int64_t width,
                 int scale) {
  MB_CHECK(planes >= 0 && height >= 0 && width >= 0, name, ": negative sizes (", planes, ", ",
           height, ", ", width, ")");
  MB_CHECK(scale >= 1, name, ": scale ", scale, " must be >= 1");
}

}  // namespace

void upsample_nearest2d_forward(const Stream& where, const float* input, float* output,
                                std::int64_t planes, std::int64_t height, std::int64_t width,
                                int scale) {
  const cudaStream_t stream = cuda_stream(where);
  check_sizes("upsample_nearest2d_forward", planes, height, width, scale);
  const std::int64_t total = planes * height * width * scale * scale;
  if (total == 0) return;
  MB_CHECK(input != nullptr && output != nullptr, "upsample_nearest2d_forward: null pointer");
  upsample_forward_kernel<<<grid_for(total), kThreads, 0, stream>>>(input, output, planes, height,
                                                                    width, scale);
  MB_CUDA_LAUNCH_CHECK();
}

void upsample_nearest2d_backward(const Stream& where, const float* grad_output, float* grad_input,
                                 std::int64_t planes, std::int64_t height, std::int64_t width,
                                 int scale) {
  const cudaStream_t stream = cuda_stream(where);
  check_sizes("upsample_nearest2d_backward", planes, height, width, scale);
  const std::int64_t total = planes * height * width;
  if (total == 0) return;
  MB_CHECK(grad_output != nullptr && grad_input != nullptr,
           "upsample_nearest2d_backward: null pointer");
  upsample_backward_kernel<<<grid_for(total), kThreads, 0, stream>>>(grad_output, grad_input,
                                                                     planes, height, width, scale);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
