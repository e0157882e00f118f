// 8-bit images to float32 input on the CPU, through a 256-entry table per channel (the same
// float operations as the CUDA twin, done once per value instead of once per pixel).
#include "kernels/cpu/image_input.h"

#include "kernels/cpu/parallel.h"

namespace mb::cpu {

void images_to_float(const Stream&, const std::uint8_t* src, float* dst, std::int64_t images,
                     std::int64_t channels, std::int64_t plane,
                     const ChannelNormalization& normalization) {
  float table[kMaxImageChannels][256];
  for (std::int64_t c = 0; c < channels; ++c) {
    for (int v = 0; v < 256; ++v) {
      const float scaled = static_cast<float>(v) / 255.0f;
      table[c][v] = (scaled - normalization.mean[c]) / normalization.std[c];
    }
  }
  parallel_for(images * channels, images * channels * plane, [&](std::int64_t row) {
    const float* lookup = table[row % channels];
    const std::uint8_t* in = src + row * plane;
    float* out = dst + row * plane;
    for (std::int64_t i = 0; i < plane; ++i) out[i] = lookup[in[i]];
  });
}

}  // namespace mb::cpu
