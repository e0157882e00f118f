// 2-D pooling: max, average, global average, forward and backward (twins:
// kernels/cpu/pooling.h, the reference, and kernels/cuda/pooling.h). Tensors are NCHW
// float32.
//
// Windows follow PyTorch (floor mode): out = (in + 2 * pad - kernel) / stride + 1. Max
// pooling treats padding as -inf and records, per output, where in its window the chosen
// input lies: one byte, (ih - h0) * kernel_w + (iw - w0) with (h0, w0) = (oh * stride_h -
// pad_h, ow * stride_w - pad_w) the window's corner (so windows hold at most
// kMaxPoolWindow elements); the first maximum wins, a NaN wins over numbers. Average
// pooling counts padding (count_include_pad = true), so the divisor is kernel_h * kernel_w.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb {

// The most elements a max-pooling window may hold: its argmax is one byte.
inline constexpr int kMaxPoolWindow = 256;

struct Pool2dGeometry {
  std::int64_t batch = 0;
  std::int64_t channels = 0;
  std::int64_t in_h = 0;
  std::int64_t in_w = 0;
  std::int64_t out_h = 0;
  std::int64_t out_w = 0;
  int kernel_h = 1;
  int kernel_w = 1;
  int stride_h = 1;
  int stride_w = 1;
  int pad_h = 0;
  int pad_w = 0;
};

// Output extent of one axis; <= 0 when the kernel does not fit the padded input.
inline std::int64_t pool_output_size(std::int64_t in, int kernel, int stride, int pad) {
  const std::int64_t span = in + 2 * static_cast<std::int64_t>(pad) - kernel;
  return span < 0 ? 0 : span / stride + 1;
}

// y: [batch, channels, out_h, out_w]; argmax: same count, positions within the windows.
// Throws mb::InvalidArgument when kernel_h * kernel_w > kMaxPoolWindow.
void max_pool2d_forward(const Stream& stream, const float* x, const Pool2dGeometry& geometry,
                        float* y, std::uint8_t* argmax);
// grad_x (overwritten) receives each grad_y at its recorded argmax.
void max_pool2d_backward(const Stream& stream, const float* grad_y, const std::uint8_t* argmax,
                         const Pool2dGeometry& geometry, float* grad_x);

void avg_pool2d_forward(const Stream& stream, const float* x, const Pool2dGeometry& geometry,
                        float* y);
// grad_x (overwritten): each input gets grad_y / (kernel_h * kernel_w) from every window
// that covers it.
void avg_pool2d_backward(const Stream& stream, const float* grad_y, const Pool2dGeometry& geometry,
                         float* grad_x);

// y[p] = mean of plane p (planes = batch * channels, each of `plane_size` elements).
void global_avg_pool2d_forward(const Stream& stream, const float* x, std::int64_t planes,
                               std::int64_t plane_size, float* y);
void global_avg_pool2d_backward(const Stream& stream, const float* grad_y, std::int64_t planes,
                                std::int64_t plane_size, float* grad_x);

}  // namespace mb
