// 2-D pooling on the CPU (max, average, global average): the reference the CUDA kernels
// (kernels/cuda/pooling.h) are tested against. Semantics: kernels/pooling.h.
#pragma once

#include <cstdint>

#include "kernels/pooling.h"
#include "runtime/stream.h"

namespace mb::cpu {

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

}  // namespace mb::cpu
