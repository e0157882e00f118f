// Optimizer updates on the CPU (reference implementations; formulas in optimizers.h).
#include "kernels/cpu/optimizers.h"
#include "kernels/cpu/parallel.h"

#include <cmath>

namespace mb::cpu {
namespace {

double norm_of(const float* data, std::int64_t size, double scale) {
  const double sum = parallel_sum(size, [&](std::int64_t begin, std::int64_t end) {
    double partial = 0.0;
    for (std::int64_t i = begin; i < end; ++i) {
      const double value = data[i];
      partial += value * value;
    }
    return partial;
  });
  return std::abs(scale) * std::sqrt(sum);
}

// One slot of SGD with the flags as template parameters, so each loop body is branch-free
// and the compiler can vectorize it.
template <bool kMomentum, bool kNesterov, bool kFirstStep>
void sgd_slot(const ParamSlot& slot, const SgdOptions& o) {
  const float lr = o.lr;
  const float momentum = o.momentum;
  const float grad_weight = 1.0f - o.dampening;
  const float grad_scale = o.grad_scale;
  const float decay = slot.weight_decay;
  float* param = slot.param;
  const float* grad = slot.grad;
  float* buffer = slot.state0;
  parallel_elements(slot.size, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      float g = grad_scale * grad[i] + decay * param[i];
      if (kMomentum) {
        const float buf = kFirstStep ? g : momentum * buffer[i] + grad_weight * g;
        buffer[i] = buf;
        g = kNesterov ? g + momentum * buf : buf;
      }
      param[i] -= lr * g;
    }
  });
}

}  // namespace

void sgd_update(const Stream& /*stream*/, const ParamSlot* slots, int count, const SgdOptions& o) {
  detail::check_sgd_options(o);
  const bool use_momentum = o.momentum != 0.0f;
  detail::check_param_slots(slots, count, use_momentum, false, "sgd_update");
  for (int s = 0; s < count; ++s) {
    const ParamSlot& slot = slots[s];
    if (!use_momentum) {
      sgd_slot<false, false, false>(slot, o);
    } else if (o.first_step) {
      o.nesterov ? sgd_slot<true, true, true>(slot, o) : sgd_slot<true, false, true>(slot, o);
    } else {
      o.nesterov ? sgd_slot<true, true, false>(slot, o) : sgd_slot<true, false, false>(slot, o);
    }
  }
}

void adamw_update(const Stream& /*stream*/, const ParamSlot* slots, int count,
                  const AdamWOptions& o) {
  detail::check_adamw_options(o);
  detail::check_param_slots(slots, count, true, true, "adamw_update");
  const float beta1 = o.beta1;
  const float beta2 = o.beta2;
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(o.beta1), o.step);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(o.beta2), o.step);
  const float step_size = static_cast<float>(o.lr / bias_correction1);
  const float inv_sqrt_bias_correction2 = static_cast<float>(1.0 / std::sqrt(bias_correction2));
  for (int s = 0; s < count; ++s) {
    const ParamSlot& slot = slots[s];
    const float decay_factor = 1.0f - o.lr * slot.weight_decay;
    parallel_elements(slot.size, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) {
        const float g = o.grad_scale * slot.grad[i];
        const float m = beta1 * slot.state0[i] + (1.0f - beta1) * g;
        const float v = beta2 * slot.state1[i] + (1.0f - beta2) * g * g;
        slot.state0[i] = m;
        slot.state1[i] = v;
        const float denom = std::sqrt(v) * inv_sqrt_bias_correction2 + o.eps;
        slot.param[i] = slot.param[i] * decay_factor - step_size * m / denom;
      }
    });
  }
}

void lars_update(const Stream& /*stream*/, const ParamSlot* slots, int count,
                 const LarsOptions& o) {
  detail::check_lars_options(o);
  const bool use_momentum = o.momentum != 0.0f;
  detail::check_param_slots(slots, count, use_momentum, false, "lars_update");
  for (int s = 0; s < count; ++s) {
    const ParamSlot& slot = slots[s];
    float local_lr = 1.0f;
    if (slot.use_trust_ratio) {
      const double weight_norm = norm_of(slot.param, slot.size, 1.0);
      const double grad_norm = norm_of(slot.grad, slot.size, o.grad_scale);
      local_lr = static_cast<float>(detail::lars_local_lr(weight_norm, grad_norm, slot.weight_decay,
                                                          o.trust_coefficient, o.eps));
    }
    const float decay = slot.weight_decay;
    parallel_elements(slot.size, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) {
        const float update = local_lr * (o.grad_scale * slot.grad[i] + decay * slot.param[i]);
        float buf = update;
        if (use_momentum) {
          buf = o.momentum * slot.state0[i] + update;
          slot.state0[i] = buf;
        }
        slot.param[i] -= o.lr * buf;
      }
    });
  }
}

}  // namespace mb::cpu
