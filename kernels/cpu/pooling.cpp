// Pooling reference kernels: plain loops over output windows.
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/parallel.h"
#include "runtime/error.h"

#include <algorithm>
#include <cmath>

namespace mb::cpu {
namespace {

// The window's maximum and its position in the window ((ih - h0) * kernel_w + (iw - w0)):
// the first maximum, or the first NaN (NaN propagates, like PyTorch). Windows always hold
// at least one input element.
struct WindowMax {
  float value;
  int position;
};

WindowMax window_max(const float* plane, std::int64_t in_w, std::int64_t h0, std::int64_t w0,
                     int kernel_w, std::int64_t h_begin, std::int64_t h_end, std::int64_t w_begin,
                     std::int64_t w_end) {
  WindowMax best{plane[h_begin * in_w + w_begin],
                 static_cast<int>((h_begin - h0) * kernel_w + (w_begin - w0))};
  for (std::int64_t ih = h_begin; ih < h_end; ++ih) {
    const float* row = plane + ih * in_w;
    const int row_position = static_cast<int>((ih - h0) * kernel_w - w0);
    for (std::int64_t iw = w_begin; iw < w_end; ++iw) {
      const float v = row[iw];
      if (std::isnan(v)) return WindowMax{v, row_position + static_cast<int>(iw)};
      if (v > best.value) best = WindowMax{v, row_position + static_cast<int>(iw)};
    }
  }
  return best;
}

}  // namespace

void max_pool2d_forward(const Stream& /*stream*/, const float* x, const Pool2dGeometry& g, float* y,
                        std::uint8_t* argmax) {
  MB_CHECK(g.kernel_h * g.kernel_w <= kMaxPoolWindow, "max_pool2d: a ", g.kernel_h, "x", g.kernel_w,
           " window has more than ", kMaxPoolWindow,
           " elements, whose argmax needs more than a byte. Fix: use a smaller kernel");
  const std::int64_t planes = g.batch * g.channels;
  parallel_for(planes, planes * g.out_h * g.out_w * g.kernel_h * g.kernel_w, [&](std::int64_t p) {
    const float* in = x + p * g.in_h * g.in_w;
    float* out = y + p * g.out_h * g.out_w;
    std::uint8_t* index = argmax + p * g.out_h * g.out_w;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const std::int64_t h0 = oh * g.stride_h - g.pad_h;
      const std::int64_t h_begin = std::max<std::int64_t>(h0, 0);
      const std::int64_t h_end = std::min<std::int64_t>(h0 + g.kernel_h, g.in_h);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const std::int64_t w0 = ow * g.stride_w - g.pad_w;
        const std::int64_t w_begin = std::max<std::int64_t>(w0, 0);
        const std::int64_t w_end = std::min<std::int64_t>(w0 + g.kernel_w, g.in_w);
        const WindowMax best =
            window_max(in, g.in_w, h0, w0, g.kernel_w, h_begin, h_end, w_begin, w_end);
        out[oh * g.out_w + ow] = best.value;
        index[oh * g.out_w + ow] = static_cast<std::uint8_t>(best.position);
      }
    }
  });
}

void max_pool2d_backward(const Stream& /*stream*/, const float* grad_y, const std::uint8_t* argmax,
                         const Pool2dGeometry& g, float* grad_x) {
  // Position p of a window is input element (p / kernel_w) * in_w + p % kernel_w from its
  // corner.
  std::int64_t offset[kMaxPoolWindow] = {};
  for (int p = 0; p < g.kernel_h * g.kernel_w && p < kMaxPoolWindow; ++p) {
    offset[p] = (p / g.kernel_w) * g.in_w + p % g.kernel_w;
  }
  const std::int64_t planes = g.batch * g.channels;
  parallel_for(planes, planes * (g.in_h * g.in_w + g.out_h * g.out_w), [&](std::int64_t p) {
    const float* gy = grad_y + p * g.out_h * g.out_w;
    const std::uint8_t* index = argmax + p * g.out_h * g.out_w;
    float* gx = grad_x + p * g.in_h * g.in_w;
    std::fill(gx, gx + g.in_h * g.in_w, 0.0f);
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const std::int64_t o = oh * g.out_w + ow;
        // The window's corner plus the position's offset within it (tables: no division).
        const std::int64_t corner =
            (oh * g.stride_h - g.pad_h) * g.in_w + (ow * g.stride_w - g.pad_w);
        gx[corner + offset[index[o]]] += gy[o];
      }
    }
  });
}

void avg_pool2d_forward(const Stream& /*stream*/, const float* x, const Pool2dGeometry& g,
                        float* y) {
  const std::int64_t planes = g.batch * g.channels;
  const double divisor = static_cast<double>(g.kernel_h) * g.kernel_w;
  parallel_for(planes, planes * g.out_h * g.out_w * g.kernel_h * g.kernel_w, [&](std::int64_t p) {
    const float* in = x + p * g.in_h * g.in_w;
    float* out = y + p * g.out_h * g.out_w;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const std::int64_t h0 = oh * g.stride_h - g.pad_h;
      const std::int64_t h_begin = std::max<std::int64_t>(h0, 0);
      const std::int64_t h_end = std::min<std::int64_t>(h0 + g.kernel_h, g.in_h);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const std::int64_t w0 = ow * g.stride_w - g.pad_w;
        const std::int64_t w_begin = std::max<std::int64_t>(w0, 0);
        const std::int64_t w_end = std::min<std::int64_t>(w0 + g.kernel_w, g.in_w);
        double sum = 0.0;
        for (std::int64_t ih = h_begin; ih < h_end; ++ih) {
          for (std::int64_t iw = w_begin; iw < w_end; ++iw) sum += in[ih * g.in_w + iw];
        }
        out[oh * g.out_w + ow] = static_cast<float>(sum / divisor);
      }
    }
  });
}

void avg_pool2d_backward(const Stream& /*stream*/, const float* grad_y, const Pool2dGeometry& g,
                         float* grad_x) {
  const std::int64_t planes = g.batch * g.channels;
  const float inv_divisor = 1.0f / (static_cast<float>(g.kernel_h) * g.kernel_w);
  parallel_for(planes, planes * g.out_h * g.out_w * g.kernel_h * g.kernel_w, [&](std::int64_t p) {
    const float* gy = grad_y + p * g.out_h * g.out_w;
    float* gx = grad_x + p * g.in_h * g.in_w;
    std::fill(gx, gx + g.in_h * g.in_w, 0.0f);
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const std::int64_t h0 = oh * g.stride_h - g.pad_h;
      const std::int64_t h_begin = std::max<std::int64_t>(h0, 0);
      const std::int64_t h_end = std::min<std::int64_t>(h0 + g.kernel_h, g.in_h);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const std::int64_t w0 = ow * g.stride_w - g.pad_w;
        const std::int64_t w_begin = std::max<std::int64_t>(w0, 0);
        const std::int64_t w_end = std::min<std::int64_t>(w0 + g.kernel_w, g.in_w);
        const float share = gy[oh * g.out_w + ow] * inv_divisor;
        for (std::int64_t ih = h_begin; ih < h_end; ++ih) {
          for (std::int64_t iw = w_begin; iw < w_end; ++iw) gx[ih * g.in_w + iw] += share;
        }
      }
    }
  });
}

void global_avg_pool2d_forward(const Stream& /*stream*/, const float* x, std::int64_t planes,
                               std::int64_t plane_size, float* y) {
  parallel_for(planes, planes * plane_size, [&](std::int64_t p) {
    double sum = 0.0;
    const float* in = x + p * plane_size;
    for (std::int64_t i = 0; i < plane_size; ++i) sum += in[i];
    y[p] = static_cast<float>(sum / static_cast<double>(plane_size));
  });
}

void global_avg_pool2d_backward(const Stream& /*stream*/, const float* grad_y, std::int64_t planes,
                                std::int64_t plane_size, float* grad_x) {
  const float inv_size = 1.0f / static_cast<float>(plane_size);
  parallel_for(planes, planes * plane_size, [&](std::int64_t p) {
    const float share = grad_y[p] * inv_size;
    float* out = grad_x + p * plane_size;
    for (std::int64_t i = 0; i < plane_size; ++i) out[i] = share;
  });
}

}  // namespace mb::cpu
