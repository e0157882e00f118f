// Convolution on CUDA through cuDNN: the twins of kernels/cpu/conv.h; contract:
// kernels/conv.h.
//
// Note: cuDNN's heuristics (cudnnGet*Algorithm_v7) are asked once per shape key (geometry,
// direction, TF32 flag, deterministic mode) and their usable candidates cached in cuDNN's
// order; each call takes the fastest candidate whose workspace fits what the allocator can
// still give at that call (report().available()). In deterministic mode (Context) only
// deterministic algorithms are candidates and a layer keeps the first algorithm chosen for it
// at every batch size. Descriptors are cached per geometry. The heuristic query runs nothing
// on the device, so it cannot clobber an output that is being
// accumulated into (cudnnFind*AlgorithmEx writes its output buffers). Workspaces come from
// our allocator, tagged Workspace, never from cudaMalloc.
#pragma once

#include <cstddef>

#include "kernels/conv.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cuda {

void conv2d_forward(const Stream& stream, const ConvGeometry& geometry, const float* x,
                    const float* w, float* y, GradientMode mode);
void conv2d_backward_data(const Stream& stream, const ConvGeometry& geometry, const float* w,
                          const float* dy, float* dx, GradientMode mode);
void conv2d_backward_filter(const Stream& stream, const ConvGeometry& geometry, const float* x,
                            const float* dy, float* dw, GradientMode mode);

// Whether an algorithm of cuDNN math type `math_type` (a cudnnMathType_t) may run: tensor-op
// math only with TF32 allowed, and never CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, which lets
// cuDNN down-convert fp32 operands to fp16.
bool cudnn_math_allowed(int math_type, bool tf32);

// Number of convolution shapes whose algorithm candidates are cached (for tests and logs).
std::size_t conv_algorithm_cache_size();

}  // namespace mb::cuda
