// Optimizer updates over tables of device parameters: the CUDA twins of
// kernels/cpu/optimizers.h (formulas: kernels/optimizers.h).
//
// SGD and AdamW are one fused multi-tensor launch over every slot. LARS needs ||w|| and ||g||
// per tensor first: a multi-tensor reduction pass, a per-tensor trust-ratio launch, then one
// fused update launch, all on `stream` with no host synchronization.
#pragma once

#include "kernels/multi_tensor.h"
#include "runtime/stream.h"

namespace mb::cuda {

void sgd_update(const Stream& stream, const ParamSlot* slots, int count, const SgdOptions& options);
void adamw_update(const Stream& stream, const ParamSlot* slots, int count,
                  const AdamWOptions& options);
void lars_update(const Stream& stream, const ParamSlot* slots, int count,
                 const LarsOptions& options);

}  // namespace mb::cuda
