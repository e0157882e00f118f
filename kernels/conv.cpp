// Convolution geometry and the dispatch of the three convolution ops.
#include "kernels/conv.h"

#include "kernels/cpu/conv.h"
#include "kernels/cuda/conv.h"
#include "kernels/dispatch.h"
#include "runtime/error.h"

namespace mb {

std::int64_t conv_output_size(std::int64_t input, int kernel, int stride, int padding,
                              int dilation) {
  const std::int64_t span = static_cast<std::int64_t>(dilation) * (kernel - 1) + 1;
  const std::int64_t padded = input + 2 * static_cast<std::int64_t>(padding);
  if (stride <= 0 || padded < span) return 0;
  return (padded - span) / stride + 1;
}

std::int64_t ConvGeometry::out_h() const {
  return conv_output_size(in_h, kernel_h, stride, padding, dilation);
}

std::int64_t ConvGeometry::out_w() const {
  return conv_output_size(in_w, kernel_w, stride, padding, dilation);
}

std::string ConvGeometry::to_string() const {
  return detail::concat("x [", batch, ", ", in_channels, ", ", in_h, ", ", in_w, "], w [",
                        out_channels, ", ", in_channels / groups, ", ", kernel_h, ", ", kernel_w,
                        "], stride ", stride, ", padding ", padding, ", dilation ", dilation,
                        ", groups ", groups);
}

void conv2d_forward(const Stream& stream, const ConvGeometry& geometry, const float* x,
                    const float* w, float* y, GradientMode mode) {
  MB_DISPATCH(stream, conv2d_forward, geometry, x, w, y, mode);
}

void conv2d_backward_data(const Stream& stream, const ConvGeometry& geometry, const float* w,
                          const float* dy, float* dx, GradientMode mode) {
  MB_DISPATCH(stream, conv2d_backward_data, geometry, w, dy, dx, mode);
}

void conv2d_backward_filter(const Stream& stream, const ConvGeometry& geometry, const float* x,
                            const float* dy, float* dw, GradientMode mode) {
  MB_DISPATCH(stream, conv2d_backward_filter, geometry, x, dy, dw, mode);
}

}  // namespace mb
