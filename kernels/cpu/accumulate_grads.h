// Gradient accumulation, in-place scaling and norms over tables of buffers, on the CPU: the
// reference for kernels/cuda/accumulate_grads.cu.
//
// The micro-batch engine calls accumulate_grads once per micro-batch k with factor = n_k / B
// (Overwrite for the first micro-batch, Accumulate after), so the fp32 accumulators end up
// holding the gradient of the full-batch mean loss whatever the split. sum_of_squares feeds
// global-norm clipping, per_slot_norms feeds LARS. NaN and Inf are never filtered: they
// propagate into the accumulators and the norms, so the engine can report them.
#pragma once

#include "kernels/multi_tensor.h"
#include "runtime/gradient_mode.h"

namespace mb::cpu {

// accum = factor * grad (Overwrite) or accum += factor * grad (Accumulate), every slot.
void accumulate_grads(const GradSlot* slots, int count, float factor, GradientMode mode);

// data *= factor in place, every slot.
void scale_buffers(const BufferSlot* slots, int count, float factor);

// Sum of x^2 over every element of every slot, accumulated in double.
double sum_of_squares(const ConstBufferSlot* slots, int count);

// norms_host[i] = ||slots[i]||_2 (accumulated in double, rounded to float once).
void per_slot_norms(const ConstBufferSlot* slots, int count, float* norms_host);

}  // namespace mb::cpu
