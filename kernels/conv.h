// 2-D convolution (cross-correlation, as in PyTorch), its input gradient and its filter
// gradient (twins: kernels/cpu/conv.h, im2col + GEMM, the reference; kernels/cuda/conv.h,
// cuDNN). ConvTranspose2d is these three with the roles swapped: its forward is a
// convolution's backward-data, and so on.
//
// `mode` says whether the destination is overwritten or added to (cuDNN's beta 0 or 1).
// Workspaces (the CPU's column matrix, cuDNN's scratch) come from the allocator of the
// stream's device, tagged Workspace, so they count in the allocator's report.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb {

// Output extent of a convolution along one axis: floor((in + 2p - d(k-1) - 1) / s) + 1.
// Returns a value <= 0 when the dilated kernel does not fit the padded input.
std::int64_t conv_output_size(std::int64_t input, int kernel, int stride, int padding,
                              int dilation);

// A grouped, dilated 2-D convolution: input [batch, in_channels, in_h, in_w] (x), filter
// [out_channels, in_channels / groups, kernel_h, kernel_w] (w), output
// [batch, out_channels, out_h, out_w] (y).
struct ConvGeometry {
  std::int64_t batch = 0;
  std::int64_t in_channels = 0;
  std::int64_t in_h = 0, in_w = 0;
  std::int64_t out_channels = 0;
  int kernel_h = 1, kernel_w = 1;
  int stride = 1, padding = 0, dilation = 1, groups = 1;

  std::int64_t out_h() const;
  std::int64_t out_w() const;
  std::string to_string() const;
};

// y (+)= conv(x, w)
void conv2d_forward(const Stream& stream, const ConvGeometry& geometry, const float* x,
                    const float* w, float* y, GradientMode mode);
// dx (+)= conv^T(dy, w): the input gradient.
void conv2d_backward_data(const Stream& stream, const ConvGeometry& geometry, const float* w,
                          const float* dy, float* dx, GradientMode mode);
// dw (+)= the filter gradient from x and dy.
void conv2d_backward_filter(const Stream& stream, const ConvGeometry& geometry, const float* x,
                            const float* dy, float* dw, GradientMode mode);

}  // namespace mb
