// Gradient accumulation and the global gradient norm over tables of buffers (twins:
// kernels/cpu/accumulate_grads.h, the reference, and kernels/cuda/accumulate_grads.h, one
// fused multi-tensor launch for all slots).
//
// The micro-batch engine calls accumulate_grads once per micro-batch k with factor = n_k / B
// (Overwrite for the first micro-batch, Accumulate after), so the fp32 accumulators end up
// holding the gradient of the full-batch mean loss whatever the split. sum_of_squares feeds
// global-norm clipping. NaN and Inf are never filtered: they propagate into the accumulators
// and the norm, so the engine can report them.
#pragma once

#include "kernels/multi_tensor.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb {

// accum = factor * grad (Overwrite) or accum += factor * grad (Accumulate), every slot.
void accumulate_grads(const Stream& stream, const GradSlot* slots, int count, float factor,
                      GradientMode mode);

// Sum of x^2 over every element of every slot, accumulated in double; returns when known.
double sum_of_squares(const Stream& stream, const ConstBufferSlot* slots, int count);
// The same sum written to *total (memory of the stream's device) without waiting, ordered on
// the stream: a step reads it with its loss, once. The same bits as sum_of_squares.
void sum_of_squares_into(const Stream& stream, const ConstBufferSlot* slots, int count,
                         double* total);

}  // namespace mb
