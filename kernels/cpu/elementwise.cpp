// Elementwise and channel-routing ops on the CPU (reference implementations).
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/parallel.h"

#include <cstring>

namespace mb::cpu {

void add(const Stream& /*stream*/, const float* a, const float* b, float* out, std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) out[i] = a[i] + b[i];
  });
}

void add_into(const Stream& /*stream*/, float* dst, const float* src, std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) dst[i] += src[i];
  });
}

void concat_channels(const Stream& /*stream*/, const float* a, const float* b, float* out,
                     std::int64_t outer, std::int64_t channels_a, std::int64_t channels_b,
                     std::int64_t inner) {
  const std::int64_t block_a = channels_a * inner;
  const std::int64_t block_b = channels_b * inner;
  for (std::int64_t n = 0; n < outer; ++n) {
    float* row = out + n * (block_a + block_b);
    std::memcpy(row, a + n * block_a, static_cast<std::size_t>(block_a) * sizeof(float));
    std::memcpy(row + block_a, b + n * block_b, static_cast<std::size_t>(block_b) * sizeof(float));
  }
}

void split_channels(const Stream& /*stream*/, const float* in, float* a, float* b,
                    std::int64_t outer, std::int64_t channels_a, std::int64_t channels_b,
                    std::int64_t inner) {
  const std::int64_t block_a = channels_a * inner;
  const std::int64_t block_b = channels_b * inner;
  for (std::int64_t n = 0; n < outer; ++n) {
    const float* row = in + n * (block_a + block_b);
    std::memcpy(a + n * block_a, row, static_cast<std::size_t>(block_a) * sizeof(float));
    std::memcpy(b + n * block_b, row + block_a, static_cast<std::size_t>(block_b) * sizeof(float));
  }
}

}  // namespace mb::cpu
