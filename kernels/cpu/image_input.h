// 8-bit images to float32 input on the CPU: the reference for kernels/cuda/image_input.cu.
#pragma once

#include <cstdint>

#include "kernels/image_input.h"
#include "runtime/stream.h"

namespace mb::cpu {

void images_to_float(const Stream& stream, const std::uint8_t* src, float* dst, std::int64_t images,
                     std::int64_t channels, std::int64_t plane,
                     const ChannelNormalization& normalization);

}  // namespace mb::cpu
