// im2col / col2im for one image, any stride, padding and dilation.
#include "kernels/cpu/im2col.h"

#include <algorithm>

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

// The output columns [first, last) whose tap at input offset `offset` (= kj * dilation -
// pad) lands inside [0, size) for stride `stride`: iw = ow * stride + offset.
void valid_range(std::int64_t out, std::int64_t size, std::int64_t stride, std::int64_t offset,
                 std::int64_t& first, std::int64_t& last) {
  // ow >= ceil(-offset / stride) and ow * stride + offset <= size - 1.
  first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  last = size - offset <= 0 ? 0 : (size - 1 - offset) / stride + 1;
  first = std::min(first, out);
  last = std::max(first, std::min(last, out));
}

// Visits every column row (c, ki, kj) and output row oh: `row(column_row_base, image_row,
// first, last, iw_offset)` for image rows inside the image (columns [first, last) valid,
// iw = ow * stride_w + iw_offset), `outside(column_row_base)` for rows in the padding.
template <typename Row, typename Outside>
void for_each_row(std::int64_t channels, std::int64_t height, std::int64_t width,
                  const ConvWindow& w, Row&& row, Outside&& outside) {
  const std::int64_t out_h =
      conv_output_size(height, w.kernel_h, w.stride_h, w.pad_h, w.dilation_h);
  const std::int64_t out_w = conv_output_size(width, w.kernel_w, w.stride_w, w.pad_w, w.dilation_w);
  const std::int64_t out_area = out_h * out_w;
  for (std::int64_t c = 0; c < channels; ++c) {
    for (int ki = 0; ki < w.kernel_h; ++ki) {
      for (int kj = 0; kj < w.kernel_w; ++kj) {
        const std::int64_t column_row = (c * w.kernel_h + ki) * w.kernel_w + kj;
        const std::int64_t iw_offset = static_cast<std::int64_t>(kj) * w.dilation_w - w.pad_w;
        std::int64_t first = 0, last = 0;
        valid_range(out_w, width, w.stride_w, iw_offset, first, last);
        for (std::int64_t oh = 0; oh < out_h; ++oh) {
          const std::int64_t ih =
              oh * w.stride_h - w.pad_h + static_cast<std::int64_t>(ki) * w.dilation_h;
          const std::int64_t base = column_row * out_area + oh * out_w;
          if (ih < 0 || ih >= height) {
            outside(base, out_w);
            continue;
          }
          row(base, (c * height + ih) * width, first, last, out_w, iw_offset);
        }
      }
    }
  }
}

}  // namespace

void im2col(const float* image, std::int64_t channels, std::int64_t height, std::int64_t width,
            const ConvWindow& window, float* columns) {
  check_window(window, "im2col");
  const std::int64_t stride = window.stride_w;
  for_each_row(
      channels, height, width, window,
      [&](std::int64_t base, std::int64_t image_row, std::int64_t first, std::int64_t last,
          std::int64_t out_w, std::int64_t iw_offset) {
        float* out = columns + base;
        const float* in = image + image_row;  // in[ow * stride + iw_offset] for valid ow
        std::fill(out, out + first, 0.0f);
        if (stride == 1) {
          std::copy(in + first + iw_offset, in + last + iw_offset, out + first);
        } else {
          for (std::int64_t ow = first; ow < last; ++ow) out[ow] = in[ow * stride + iw_offset];
        }
        std::fill(out + last, out + out_w, 0.0f);
      },
      [&](std::int64_t base, std::int64_t out_w) {
        std::fill(columns + base, columns + base + out_w, 0.0f);
      });
}

void col2im(const float* columns, std::int64_t channels, std::int64_t height, std::int64_t width,
            const ConvWindow& window, float* image) {
  check_window(window, "col2im");
  const std::int64_t stride = window.stride_w;
  for_each_row(
      channels, height, width, window,
      [&](std::int64_t base, std::int64_t image_row, std::int64_t first, std::int64_t last,
          std::int64_t /*out_w*/, std::int64_t iw_offset) {
        const float* in = columns + base;
        float* out = image + image_row;
        if (stride == 1) {  // contiguous: vectorizes
          float* shifted = out + iw_offset + first;
          const float* from = in + first;
          for (std::int64_t i = 0; i < last - first; ++i) shifted[i] += from[i];
        } else {
          for (std::int64_t ow = first; ow < last; ++ow) out[ow * stride + iw_offset] += in[ow];
        }
      },
      [](std::int64_t, std::int64_t) {});
}

}  // namespace mb::cpu
