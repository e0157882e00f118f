// Gradient accumulation, in-place scaling and norms over tables of device buffers: the CUDA
// twins of kernels/cpu/accumulate_grads.h (same arguments and semantics, plus a stream).
//
// The slot table is a host array whose pointers are device pointers. Each call copies the
// table to a small workspace block from the device's allocator (MemoryTag::Workspace) and
// processes every slot with ONE fused multi-tensor launch (plus a final reduction launch for
// the norms). sum_of_squares and per_slot_norms return results to the host, so they
// synchronize `stream`; the others are asynchronous.
#pragma once

#include <cuda_runtime.h>

#include "kernels/multi_tensor.h"
#include "runtime/gradient_mode.h"

namespace mb::cuda {

void accumulate_grads(const GradSlot* slots, int count, float factor, GradientMode mode,
                      cudaStream_t stream);
void scale_buffers(const BufferSlot* slots, int count, float factor, cudaStream_t stream);
// Per-chunk partial sums in double, reduced in a fixed order: deterministic run to run.
double sum_of_squares(const ConstBufferSlot* slots, int count, cudaStream_t stream);
void per_slot_norms(const ConstBufferSlot* slots, int count, float* norms_host,
                    cudaStream_t stream);
// sums_device[s] = sum of squares of slot s, left on the device (asynchronous): what LARS
// needs for its per-tensor trust ratios without a host round trip.
void per_slot_sum_of_squares(const ConstBufferSlot* slots, int count, double* sums_device,
                             cudaStream_t stream);

}  // namespace mb::cuda
