// Pooling reference kernels: plain loops over output windows.
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/parallel.h"
#include "runtime/error.h"

#include <algorithm>
#include <cmath>

namespace mb::cpu {
namespace {

// Index (ih * in_w + iw) of the window's maximum: the first maximum, or the first NaN (NaN
// propagates, like PyTorch). Windows always hold at least one input element.
std::int64_t window_argmax(const float* plane, std::int64_t in_w, std::int64_t h_begin,
                           std::int64_t h_end, std::int64_t w_begin, std::int64_t w_end) {
  std::int64_t best_index = h_begin * in_w + w_begin;
  float best = plane[best_index];
  for (std::int64_t ih = h_begin; ih < h_end; ++ih) {
    for (std::int64_t iw = w_begin; iw < w_end; ++iw) {
      const float v = plane[ih * in_w + iw];
      if (std::isnan(v)) return ih * in_w + iw;
      if (v > best) {
        best = v;
        best_index = ih * in_w + iw;
      }
    }
  }
  return best_index;
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
        const std::int64_t best_index = window_argmax(in, g.in_w, h_begin, h_end, w_begin, w_end);
        out[oh * g.out_w + ow] = in[best_index];
        index[oh * g.out_w + ow] = static_cast<std::uint8_t>(
            (best_index / g.in_w - h0) * g.kernel_w + (best_index % g.in_w - w0));
      }
    }
  });
}

void max_pool2d_backward(const Stream& /*stream*/, const float* grad_y, const std::uint8_t* argmax,
                         const Pool2dGeometry& g, float* grad_x) {
  const std::int64_t planes = g.batch * g.channels;
  parallel_for(planes, planes * (g.in_h * g.in_w + g.out_h * g.out_w), [&](std::int64_t p) {
    const float* gy = grad_y + p * g.out_h * g.out_w;
    const std::uint8_t* index = argmax + p * g.out_h * g.out_w;
    float* gx = grad_x + p * g.in_h * g.in_w;
    std::fill(gx, gx + g.in_h * g.in_w, 0.0f);
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const std::int64_t o = oh * g.out_w + ow;
        const std::int64_t ih = oh * g.stride_h - g.pad_h + index[o] / g.kernel_w;
        const std::int64_t iw = ow * g.stride_w - g.pad_w + index[o] % g.kernel_w;
        gx[ih * g.in_w + iw] += gy[o];
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
