// Nearest-neighbour 2-D upsampling by an integer factor on the CPU: the reference for
// kernels/cuda/upsample.cu. Output pixel (y, x) copies input pixel (y / scale, x / scale);
// backward sums each scale x scale block of the output gradient into one input pixel.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb::cpu {

void upsample_nearest2d_forward(const Stream& stream, const float* input, float* output,
                                std::int64_t planes, std::int64_t height, std::int64_t width,
                                int scale);
void upsample_nearest2d_backward(const Stream& stream, const float* grad_output, float* grad_input,
                                 std::int64_t planes, std::int64_t height, std::int64_t width,
                                 int scale);

}  // namespace mb::cpu
