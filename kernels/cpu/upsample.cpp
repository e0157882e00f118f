// Nearest-neighbour 2-D upsampling on the CPU (reference implementation).
#include "kernels/cpu/upsample.h"
#include "kernels/cpu/parallel.h"

namespace mb::cpu {

void upsample_nearest2d_forward(const Stream& /*stream*/, const float* input, float* output,
                                std::int64_t planes, std::int64_t height, std::int64_t width,
                                int scale) {
  const std::int64_t out_h = height * scale, out_w = width * scale;
  parallel_for(planes, planes * out_h * out_w, [&](std::int64_t p) {
    const float* in = input + p * height * width;
    float* out = output + p * out_h * out_w;
    for (std::int64_t y = 0; y < out_h; ++y) {
      const float* in_row = in + (y / scale) * width;
      float* out_row = out + y * out_w;
      for (std::int64_t x = 0; x < width; ++x) {
        for (int dx = 0; dx < scale; ++dx) out_row[x * scale + dx] = in_row[x];
      }
    }
  });
}

void upsample_nearest2d_backward(const Stream& /*stream*/, const float* grad_output,
                                 float* grad_input, std::int64_t planes, std::int64_t height,
                                 std::int64_t width, int scale) {
  const std::int64_t out_h = height * scale, out_w = width * scale;
  parallel_for(planes, planes * out_h * out_w, [&](std::int64_t p) {
    const float* go = grad_output + p * out_h * out_w;
    float* gi = grad_input + p * height * width;
    for (std::int64_t y = 0; y < height; ++y) {
      for (std::int64_t x = 0; x < width; ++x) {
        float sum = 0.0f;
        for (int dy = 0; dy < scale; ++dy) {
          const float* row = go + (y * scale + dy) * out_w + x * scale;
          for (int dx = 0; dx < scale; ++dx) sum += row[dx];
        }
        gi[y * width + x] = sum;
      }
    }
  });
}

}  // namespace mb::cpu
