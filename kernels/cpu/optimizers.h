// Optimizer updates over tables of parameters on the CPU: the reference for
// kernels/cuda/optimizers.cu. Formulas and contract: kernels/optimizers.h.
#pragma once

#include "kernels/multi_tensor.h"
#include "runtime/stream.h"

namespace mb::cpu {

void sgd_update(const Stream& stream, const ParamSlot* slots, int count, const SgdOptions& options);
void adamw_update(const Stream& stream, const ParamSlot* slots, int count,
                  const AdamWOptions& options);
void lars_update(const Stream& stream, const ParamSlot* slots, int count,
                 const LarsOptions& options);

}  // namespace mb::cpu
