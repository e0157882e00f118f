// Nearest-neighbour 2-D upsampling by an integer factor on CUDA. CPU twin:
// kernels/cpu/upsample.h (same arguments, plus the stream here).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mb::cuda {

void upsample_nearest2d_forward(const float* input, float* output, std::int64_t planes,
                                std::int64_t height, std::int64_t width, int scale,
                                cudaStream_t stream);
void upsample_nearest2d_backward(const float* grad_output, float* grad_input, std::int64_t planes,
                                 std::int64_t height, std::int64_t width, int scale,
                                 cudaStream_t stream);

}  // namespace mb::cuda
