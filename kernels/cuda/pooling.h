// 2-D pooling on CUDA: the same operations and arguments as kernels/cpu/pooling.h (the
// reference they are tested against); semantics in kernels/pooling.h.
//
// Note: backward passes gather (one thread per input element visits the output windows
// that cover it) rather than scatter with atomics, so overlapping windows (ResNet's 3x3
// stride-2 max pool) give deterministic gradients.
#pragma once

#include <cstdint>

#include "kernels/pooling.h"
#include "runtime/stream.h"

namespace mb::cuda {

void max_pool2d_forward(const Stream& stream, const float* x, const Pool2dGeometry& geometry,
                        float* y, std::uint8_t* argmax);
void max_pool2d_backward(const Stream& stream, const float* grad_y, const std::uint8_t* argmax,
                         const Pool2dGeometry& geometry, float* grad_x);

void avg_pool2d_forward(const Stream& stream, const float* x, const Pool2dGeometry& geometry,
                        float* y);
void avg_pool2d_backward(const Stream& stream, const float* grad_y, const Pool2dGeometry& geometry,
                         float* grad_x);

void global_avg_pool2d_forward(const Stream& stream, const float* x, std::int64_t planes,
                               std::int64_t plane_size, float* y);
void global_avg_pool2d_backward(const Stream& stream, const float* grad_y, std::int64_t planes,
                                std::int64_t plane_size, float* grad_x);

}  // namespace mb::cuda
