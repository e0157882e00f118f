// 8-bit images to a model's float32 input (twins: kernels/cpu/image_input.h, the reference,
// and kernels/cuda/image_input.h).
//
// Image folders ship batches as 8-bit planar [N, C, H, W] (a quarter of float32's bytes across
// the host-to-device copy); the device computes what torchvision's ToTensor + Normalize give:
//   dst[n, c, i] = (src[n, c, i] / 255 - mean[c]) / std[c]
// in that order of float32 operations, so both twins and torchvision agree bit for bit.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb {

inline constexpr int kMaxImageChannels = 16;

// Per-channel constants (mean 0 and std 1: pixels / 255 only).
struct ChannelNormalization {
  int channels = 0;
  float mean[kMaxImageChannels] = {};
  float std[kMaxImageChannels] = {};
};

// src: images * channels * plane bytes; dst: as many floats. Throws mb::InvalidArgument for
// a channel count that differs from normalization.channels or a std that is not > 0.
void images_to_float(const Stream& stream, const std::uint8_t* src, float* dst, std::int64_t images,
                     std::int64_t channels, std::int64_t plane,
                     const ChannelNormalization& normalization);

}  // namespace mb
