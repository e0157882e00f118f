// im2col / col2im on the CPU: the lowering that turns a convolution into one GEMM.
//
// For one image [channels, height, width], im2col writes the column matrix
// [channels * kernel_h * kernel_w, out_h * out_w]: row (c, ki, kj) holds, for every output
// position, the input pixel that kernel tap (ki, kj) of channel c reads (0 in the padding).
// col2im is its adjoint: it adds every column entry back onto the pixel it came from.
// Conv2d forward is W x im2col(x); its input gradient is col2im(W^T dy); ConvTranspose2d
// uses the same two in the opposite roles.
#pragma once

#include <cstdint>

namespace mb::cpu {

struct ConvWindow {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int dilation_h = 1, dilation_w = 1;
};

// columns[(c*kh + ki)*kw + kj][oh*out_w + ow] = image[c][oh*sh - ph + ki*dh][ow*sw - pw + kj*dw]
// (0 outside the image). out_h/out_w follow from conv_output_size (kernels/conv.h).
void im2col(const float* image, std::int64_t channels, std::int64_t height, std::int64_t width,
            const ConvWindow& window, float* columns);

// The adjoint of im2col: image[...] += columns[...] for every entry im2col would read.
// Adds onto `image`; zero it first to overwrite.
void col2im(const float* columns, std::int64_t channels, std::int64_t height, std::int64_t width,
            const ConvWindow& window, float* image);

}  // namespace mb::cpu
