// Gradient accumulation and norms over tables of device buffers: the CUDA twins of
// kernels/cpu/accumulate_grads.h (contract: kernels/accumulate_grads.h).
//
// The slot table is a host array whose pointers are device pointers. Each call copies the
// table to a small workspace block from the device's allocator (MemoryTag::Workspace) and
// processes every slot with ONE fused multi-tensor launch (plus a final reduction launch for
// the norms). sum_of_squares returns its result to the host, so it synchronizes the stream;
// accumulate_grads is asynchronous.
#pragma once

#include "kernels/multi_tensor.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cuda {

void accumulate_grads(const Stream& stream, const GradSlot* slots, int count, float factor,
                      GradientMode mode);
// Per-chunk partial sums in double, reduced in a fixed order: deterministic run to run.
double sum_of_squares(const Stream& stream, const ConstBufferSlot* slots, int count);
// The per-slot sums, then one thread adds them in slot order into *total (device memory), as
// sum_of_squares adds them on the host: the same bits, asynchronous.
void sum_of_squares_into(const Stream& stream, const ConstBufferSlot* slots, int count,
                         double* total);
// sums_device[s] = sum of squares of slot s, left on the device (asynchronous): what LARS
// needs for its per-tensor trust ratios without a host round trip. CUDA only.
void per_slot_sum_of_squares(const Stream& stream, const ConstBufferSlot* slots, int count,
                             double* sums_device);

}  // namespace mb::cuda
