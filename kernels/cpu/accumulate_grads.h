// Gradient accumulation and norms over tables of buffers, on the CPU: the reference for
// kernels/cuda/accumulate_grads.cu. Contract: kernels/accumulate_grads.h.
#pragma once

#include "kernels/multi_tensor.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cpu {

void accumulate_grads(const Stream& stream, const GradSlot* slots, int count, float factor,
                      GradientMode mode);
// Accumulated in double.
double sum_of_squares(const Stream& stream, const ConstBufferSlot* slots, int count);
void sum_of_squares_into(const Stream& stream, const ConstBufferSlot* slots, int count,
                         double* total);

}  // namespace mb::cpu
