// Optimizer updates over tables of device parameters: the CUDA twins of
// kernels/cpu/optimizers.h (formulas there; same arguments plus a stream).
//
// SGD and AdamW are one fused multi-tensor launch over every slot. LARS needs ||w|| and ||g||
// per tensor first: a multi-tensor reduction pass, a per-tensor trust-ratio launch, then one
// fused update launch, all on `stream` with no host synchronization.
#pragma once

#include <cuda_runtime.h>

#include "kernels/multi_tensor.h"

namespace mb::cuda {

void sgd_update(const ParamSlot* slots, int count, const SgdOptions& options, cudaStream_t stream);
void adamw_update(const ParamSlot* slots, int count, const AdamWOptions& options,
                  cudaStream_t stream);
void lars_update(const ParamSlot* slots, int count, const LarsOptions& options,
                 cudaStream_t stream);

}  // namespace mb::cuda
