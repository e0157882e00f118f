// 2-D pooling on CUDA: the same operations and arguments as kernels/cpu/pooling.h (the
// reference they are tested against, and the home of Pool2dGeometry) plus a stream.
//
// Note: backward passes gather (one thread per input element visits the output windows
// that cover it) rather than scatter with atomics, so overlapping windows (ResNet's 3x3
// stride-2 max pool) give deterministic gradients.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/pooling.h"

namespace mb::cuda {

using cpu::Pool2dGeometry;

void max_pool2d_forward(const float* x, const Pool2dGeometry& geometry, float* y,
                        std::int32_t* argmax, cudaStream_t stream);
void max_pool2d_backward(const float* grad_y, const std::int32_t* argmax,
                         const Pool2dGeometry& geometry, float* grad_x, cudaStream_t stream);

void avg_pool2d_forward(const float* x, const Pool2dGeometry& geometry, float* y,
                        cudaStream_t stream);
void avg_pool2d_backward(const float* grad_y, const Pool2dGeometry& geometry, float* grad_x,
                         cudaStream_t stream);

void global_avg_pool2d_forward(const float* x, std::int64_t planes, std::int64_t plane_size,
                               float* y, cudaStream_t stream);
void global_avg_pool2d_backward(const float* grad_y, std::int64_t planes, std::int64_t plane_size,
                                float* grad_x, cudaStream_t stream);

}  // namespace mb::cuda
