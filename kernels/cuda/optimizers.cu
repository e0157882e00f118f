// Optimizer updates over tables of device parameters (CUDA twins of
// kernels/cpu/optimizers.cpp; formulas in kernels/optimizers.h). Each update is one
// multi_tensor_apply launch (kernels/multi_tensor.h); LARS first computes ||w||^2 and ||g||^2
// of every tensor on the device with per_slot_sum_of_squares, and each block of the update
// derives its tensor's trust ratio from them.
#include "kernels/cuda/optimizers.h"

#include <cmath>
#include <vector>

#include "kernels/cuda/accumulate_grads.h"

namespace mb::cuda {
namespace {

using detail::aligned16_on_device;

// Applies `update(param, grad, state0, state1, context)` to four consecutive elements of
// every stream an optimizer touches (unused state pointers are not dereferenced).
template <bool kUsesState0, bool kUsesState1, typename Context, typename Update>
__device__ inline void update_vec4(const ParamSlot& slot, Context context, std::int64_t i,
                                   const Update& update) {
  float4 param = *reinterpret_cast<const float4*>(slot.param + i);
  const float4 grad = *reinterpret_cast<const float4*>(slot.grad + i);
  float4 state0 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 state1 = state0;
  if (kUsesState0) state0 = *reinterpret_cast<const float4*>(slot.state0 + i);
  if (kUsesState1) state1 = *reinterpret_cast<const float4*>(slot.state1 + i);
  update(param.x, grad.x, state0.x, state1.x, slot, context);
  update(param.y, grad.y, state0.y, state1.y, slot, context);
  update(param.z, grad.z, state0.z, state1.z, slot, context);
  update(param.w, grad.w, state0.w, state1.w, slot, context);
  *reinterpret_cast<float4*>(slot.param + i) = param;
  if (kUsesState0) *reinterpret_cast<float4*>(slot.state0 + i) = state0;
  if (kUsesState1) *reinterpret_cast<float4*>(slot.state1 + i) = state1;
}

template <bool kUsesState0, bool kUsesState1, typename Context, typename Update>
__device__ inline void update_scalar(const ParamSlot& slot, Context context, std::int64_t i,
                                     const Update& update) {
  float param = slot.param[i];
  float state0 = kUsesState0 ? slot.state0[i] : 0.0f;
  float state1 = kUsesState1 ? slot.state1[i] : 0.0f;
  update(param, slot.grad[i], state0, state1, slot, context);
  slot.param[i] = param;
  if (kUsesState0) slot.state0[i] = state0;
  if (kUsesState1) slot.state1[i] = state1;
}

template <bool kUsesState0, bool kUsesState1>
__device__ inline bool params_aligned(const ParamSlot& slot) {
  return aligned16_on_device(slot.param) && aligned16_on_device(slot.grad) &&
         (!kUsesState0 || aligned16_on_device(slot.state0)) &&
         (!kUsesState1 || aligned16_on_device(slot.state1));
}

struct SgdElement {
  SgdOptions o;
  __device__ void operator()(float& param, float grad, float& buf, float&, const ParamSlot& slot,
                             int) const {
    float g = o.grad_scale * grad + slot.weight_decay * param;
    if (o.momentum != 0.0f) {
      buf = o.first_step ? g : o.momentum * buf + (1.0f - o.dampening) * g;
      g = o.nesterov ? g + o.momentum * buf : buf;
    }
    param -= o.lr * g;
  }
};

template <bool kMomentum>
struct SgdOp {
  SgdElement element;
  __device__ int context(const ParamSlot&, int) const { return 0; }
  __device__ bool aligned(const ParamSlot& slot) const {
    return params_aligned<kMomentum, false>(slot);
  }
  __device__ void vec4(const ParamSlot& slot, int context, std::int64_t i) const {
    update_vec4<kMomentum, false>(slot, context, i, element);
  }
  __device__ void scalar(const ParamSlot& slot, int context, std::int64_t i) const {
    update_scalar<kMomentum, false>(slot, context, i, element);
  }
};

struct AdamWElement {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float grad_scale;
  float step_size;                  // lr / (1 - beta1^step)
  float inv_sqrt_bias_correction2;  // 1 / sqrt(1 - beta2^step)
  __device__ void operator()(float& param, float grad, float& m, float& v, const ParamSlot& slot,
                             int) const {
    const float g = grad_scale * grad;
    m = beta1 * m + (1.0f - beta1) * g;
    v = beta2 * v + (1.0f - beta2) * g * g;
    const float denom = sqrtf(v) * inv_sqrt_bias_correction2 + eps;
    param = param * (1.0f - lr * slot.weight_decay) - step_size * m / denom;
  }
};

struct AdamWOp {
  AdamWElement element;
  __device__ int context(const ParamSlot&, int) const { return 0; }
  __device__ bool aligned(const ParamSlot& slot) const { return params_aligned<true, true>(slot); }
  __device__ void vec4(const ParamSlot& slot, int context, std::int64_t i) const {
    update_vec4<true, true>(slot, context, i, element);
  }
  __device__ void scalar(const ParamSlot& slot, int context, std::int64_t i) const {
    update_scalar<true, true>(slot, context, i, element);
  }
};

struct LarsElement {
  float lr;
  float momentum;
  float grad_scale;
  // local_lr is the block's context: the trust ratio of its tensor (1 without trust ratio).
  __device__ void operator()(float& param, float grad, float& buf, float&, const ParamSlot& slot,
                             float local_lr) const {
    const float update = local_lr * (grad_scale * grad + slot.weight_decay * param);
    buf = momentum != 0.0f ? momentum * buf + update : update;
    param -= lr * buf;
  }
};

template <bool kMomentum>
struct LarsOp {
  LarsElement element;
  const double* sums;  // [count] ||w||^2 then [count] ||grad||^2 (unscaled), on the device
  int count;
  float trust_coefficient;
  float eps;
  __device__ float context(const ParamSlot& slot, int s) const {
    if (!slot.use_trust_ratio) return 1.0f;
    const double weight_norm = sqrt(sums[s]);
    const double grad_norm = fabs(static_cast<double>(element.grad_scale)) * sqrt(sums[count + s]);
    return static_cast<float>(mb::detail::lars_local_lr(weight_norm, grad_norm, slot.weight_decay,
                                                        trust_coefficient, eps));
  }
  __device__ bool aligned(const ParamSlot& slot) const {
    return params_aligned<kMomentum, false>(slot);
  }
  __device__ void vec4(const ParamSlot& slot, float context, std::int64_t i) const {
    update_vec4<kMomentum, false>(slot, context, i, element);
  }
  __device__ void scalar(const ParamSlot& slot, float context, std::int64_t i) const {
    update_scalar<kMomentum, false>(slot, context, i, element);
  }
};

}  // namespace

void sgd_update(const Stream& stream, const ParamSlot* slots, int count, const SgdOptions& o) {
  mb::detail::check_sgd_options(o);
  const bool use_momentum = o.momentum != 0.0f;
  mb::detail::check_param_slots(slots, count, use_momentum, false, "sgd_update");
  if (use_momentum) {
    detail::multi_tensor_apply(slots, count, SgdOp<true>{SgdElement{o}}, stream);
  } else {
    detail::multi_tensor_apply(slots, count, SgdOp<false>{SgdElement{o}}, stream);
  }
}

void adamw_update(const Stream& stream, const ParamSlot* slots, int count, const AdamWOptions& o) {
  mb::detail::check_adamw_options(o);
  mb::detail::check_param_slots(slots, count, true, true, "adamw_update");
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(o.beta1), o.step);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(o.beta2), o.step);
  AdamWElement element{o.lr,
                       o.beta1,
                       o.beta2,
                       o.eps,
                       o.grad_scale,
                       static_cast<float>(o.lr / bias_correction1),
                       static_cast<float>(1.0 / std::sqrt(bias_correction2))};
  detail::multi_tensor_apply(slots, count, AdamWOp{element}, stream);
}

void lars_update(const Stream& stream, const ParamSlot* slots, int count, const LarsOptions& o) {
  mb::detail::check_lars_options(o);
  const bool use_momentum = o.momentum != 0.0f;
  mb::detail::check_param_slots(slots, count, use_momentum, false, "lars_update");
  if (count == 0) return;
  // Norms only for the tensors that use a trust ratio; the others get empty entries.
  std::vector<ConstBufferSlot> norm_slots(2 * static_cast<std::size_t>(count));
  for (int s = 0; s < count; ++s) {
    const std::int64_t size = slots[s].use_trust_ratio ? slots[s].size : 0;
    norm_slots[s] = ConstBufferSlot{slots[s].param, size};
    norm_slots[count + s] = ConstBufferSlot{slots[s].grad, size};
  }
  DeviceBuffer sums(allocator_for(stream.device()), sizeof(double) * 2 * count,
                    MemoryTag::Workspace, stream.handle());
  per_slot_sum_of_squares(stream, norm_slots.data(), 2 * count, static_cast<double*>(sums.get()));
  const LarsElement element{o.lr, o.momentum, o.grad_scale};
  const auto* sums_device = static_cast<const double*>(sums.get());
  if (use_momentum) {
    detail::multi_tensor_apply(
        slots, count, LarsOp<true>{element, sums_device, count, o.trust_coefficient, o.eps},
        stream);
  } else {
    detail::multi_tensor_apply(
        slots, count, LarsOp<false>{element, sums_device, count, o.trust_coefficient, o.eps},
        stream);
  }
}

}  // namespace mb::cuda
