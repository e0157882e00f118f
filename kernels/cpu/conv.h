// Convolution on the CPU by lowering (kernels/cpu/im2col.h) and BLAS GEMM, per sample and
// group: the reference for the cuDNN twins (kernels/cuda/conv.h). Semantics: kernels/conv.h.
//
// Note: a 1x1, stride-1, unpadded convolution needs no lowering: the input is its own
// column matrix, so no workspace is taken.
#pragma once

#include "kernels/conv.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cpu {

void conv2d_forward(const Stream& stream, const ConvGeometry& geometry, const float* x,
                    const float* w, float* y, GradientMode mode);
void conv2d_backward_data(const Stream& stream, const ConvGeometry& geometry, const float* w,
                          const float* dy, float* dx, GradientMode mode);
void conv2d_backward_filter(const Stream& stream, const ConvGeometry& geometry, const float* x,
                            const float* dy, float* dw, GradientMode mode);

}  // namespace mb::cpu
