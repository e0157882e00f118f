// Optimizer updates over tables of parameters (twins: kernels/cpu/optimizers.h, the
// reference, and kernels/cuda/optimizers.h, one fused multi-tensor launch). One call
// updates every parameter of the model once per full batch. g below is always
// grad_scale * grad (the engine folds e.g. a clipping factor in).
//
// sgd_update (torch.optim.SGD, coupled L2 decay):
//   g = grad_scale*grad + weight_decay*w
//   momentum != 0:  buf = first_step ? g : momentum*buf + (1 - dampening)*g
//                   g   = nesterov ? g + momentum*buf : buf
//   w -= lr*g                                  (state0 = buf; may be null when momentum == 0)
//
// adamw_update (torch.optim.AdamW, decoupled decay; state0 = m, state1 = v):
//   w *= 1 - lr*weight_decay
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
//   w -= (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
//
// lars_update (You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional
// Networks"; state0 = buf). Note: the learning rate stays outside the momentum buffer, as
// in torch's SGD and NVIDIA apex's LARC; the paper (Algorithm 1) puts it inside,
// v = m*v + lr*local_lr*(g + wd*w). The two agree while lr is constant and differ during
// warmup, where this form applies the new lr to the whole momentum history. eps = 1e-9.
//   use_trust_ratio:  local_lr = trust_coefficient*||w|| / (||g|| + weight_decay*||w|| + eps)
//                     (local_lr = 1 when ||w|| == 0 or ||g|| == 0; norms over the whole
//                     tensor, taken before the update)
//                     buf = momentum*buf + local_lr*(g + weight_decay*w)
//   otherwise (biases, BN):  buf = momentum*buf + (g + weight_decay*w)
//   w -= lr*buf                                (state0 may be null when momentum == 0)
// The momentum buffer starts at zero, so no first-step flag is needed.
//
// Every launcher checks its arguments (mb::InvalidArgument); NaN/Inf in gradients propagate.
#pragma once

#include "kernels/multi_tensor.h"
#include "runtime/stream.h"

namespace mb {

void sgd_update(const Stream& stream, const ParamSlot* slots, int count, const SgdOptions& options);
void adamw_update(const Stream& stream, const ParamSlot* slots, int count,
                  const AdamWOptions& options);
void lars_update(const Stream& stream, const ParamSlot* slots, int count,
                 const LarsOptions& options);

}  // namespace mb
