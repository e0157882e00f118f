// im2col / col2im for one image, any stride, padding and dilation.
#include "kernels/cpu/im2col.h"

#include "kernels/conv.h"
#include "runtime/error.h"

namespace mb::cpu {

namespace {

void check_window(const ConvWindow& w, const char* op) {
  MB_CHECK(w.kernel_h > 0 && w.kernel_w > 0 && w.stride_h > 0 && w.stride_w > 0 && w.pad_h >= 0 &&
               w.pad_w >= 0 && w.dilation_h > 0 && w.dilation_w > 0,
           op, ": invalid window kernel=", w.kernel_h, "x", w.kernel_w, " stride=", w.stride_h, "x",
           w.stride_w, " padding=", w.pad_h, "x", w.pad_w, " dilation=", w.dilation_h, "x",
           w.dilation_w);
}

// Visits every (column entry, image pixel) pair of the lowering; `f(column_index,
// image_index)` is called only for taps inside the image.
template <typename F>
void for_each_tap(std::int64_t channels, std::int64_t height, std::int64_t width,
                  const ConvWindow& w, F&& f, float* zero_target) {
  const std::int64_t out_h =
      conv_output_size(height, w.kernel_h, w.stride_h, w.pad_h, w.dilation_h);
  const std::int64_t out_w = conv_output_size(width, w.kernel_w, w.stride_w, w.pad_w, w.dilation_w);
  const std::int64_t out_area = out_h * out_w;
  for (std::int64_t c = 0; c < channels; ++c) {
    for (int ki = 0; ki < w.kernel_h; ++ki) {
      for (int kj = 0; kj < w.kernel_w; ++kj) {
        const std::int64_t row = (c * w.kernel_h + ki) * w.kernel_w + kj;
        for (std::int64_t oh = 0; oh < out_h; ++oh) {
          const std::int64_t ih =
              oh * w.stride_h - w.pad_h + static_cast<std::int64_t>(ki) * w.dilation_h;
          const std::int64_t column_base = row * out_area + oh * out_w;
          if (ih < 0 || ih >= height) {
            if (zero_target != nullptr) {
              for (std::int64_t ow = 0; ow < out_w; ++ow) zero_target[column_base + ow] = 0.0f;
            }
            continue;
          }
          for (std::int64_t ow = 0; ow < out_w; ++ow) {
            const std::int64_t iw =
                ow * w.stride_w - w.pad_w + static_cast<std::int64_t>(kj) * w.dilation_w;
            if (iw < 0 || iw >= width) {
              if (zero_target != nullptr) zero_target[column_base + ow] = 0.0f;
              continue;
            }
            f(column_base + ow, (c * height + ih) * width + iw);
          }
        }
      }
    }
  }
}

}  // namespace

void im2col(const float* image, std::int64_t channels, std::int64_t height, std::int64_t width,
            const ConvWindow& window, float* columns) {
  check_window(window, "im2col");
  for_each_tap(
      channels, height, width, window,
      [&](std::int64_t column, std::int64_t pixel) { columns[column] = image[pixel]; }, columns);
}

void col2im(const float* columns, std::int64_t channels, std::int64_t height, std::int64_t width,
            const ConvWindow& window, float* image) {
  check_window(window, "col2im");
  for_each_tap(
      channels, height, width, window,
      [&](std::int64_t column, std::int64_t pixel) { image[pixel] += columns[column]; }, nullptr);
}

}  // namespace mb::cpu
