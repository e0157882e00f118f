// Optimizer: state allocation and dispatch to the fused update kernels.
#include "engine/optimizer.h"

#include <cmath>

#include "kernels/multi_tensor.h"
#include "kernels/optimizers.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace mb {

const char* optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::Sgd: return "sgd";
    case OptimizerKind::AdamW: return "adamw";
    case OptimizerKind::Lars: return "lars";
  }
  return "unknown";
}

OptimizerKind parse_optimizer(const std::string& name) {
  for (OptimizerKind kind : {OptimizerKind::Sgd, OptimizerKind::AdamW, OptimizerKind::Lars}) {
    if (name == optimizer_name(kind)) return kind;
  }
  MB_THROW(InvalidArgument, "unknown optimizer '", name, "'. Fix: use sgd, adamw or lars");
}

Optimizer::Optimizer(std::vector<std::pair<std::string, Parameter*>> parameters,
                     const OptimizerOptions& options)
    : parameters_(std::move(parameters)), options_(options) {
  MB_CHECK(options.momentum >= 0.0f && options.weight_decay >= 0.0f,
           "optimizer: momentum and weight decay must be >= 0");
  const bool needs_state0 = options.kind != OptimizerKind::Sgd || options.momentum != 0.0f;
  const bool needs_state1 = options.kind == OptimizerKind::AdamW;
  for (auto& [name, p] : parameters_) {
    TensorOptions state_options;
    state_options.device = p->value.device();
    state_options.tag = MemoryTag::Optimizer;
    state0_.push_back(needs_state0 ? Tensor::zeros(p->value.shape(), state_options) : Tensor());
    state1_.push_back(needs_state1 ? Tensor::zeros(p->value.shape(), state_options) : Tensor());
  }
}

std::vector<std::pair<std::string, Tensor*>> Optimizer::named_state() {
  std::vector<std::pair<std::string, Tensor*>> result;
  const char* name0 = options_.kind == OptimizerKind::AdamW ? "exp_avg" : "momentum_buffer";
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    if (state0_[i].defined()) result.emplace_back(parameters_[i].first + "." + name0, &state0_[i]);
    if (state1_[i].defined())
      result.emplace_back(parameters_[i].first + ".exp_avg_sq", &state1_[i]);
  }
  return result;
}

void Optimizer::step(const std::vector<Tensor>& grads, float lr, float grad_scale) {
  MB_CHECK(grads.size() == parameters_.size(), "optimizer: ", grads.size(), " gradients for ",
           parameters_.size(), " parameters");
  MB_CHECK(std::isfinite(lr) && std::isfinite(grad_scale), "optimizer: lr ", lr, " and grad_scale ",
           grad_scale, " must be finite");
  if (parameters_.empty()) return;
  std::vector<ParamSlot> slots;
  slots.reserve(parameters_.size());
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    Parameter& p = *parameters_[i].second;
    MB_CHECK(grads[i].shape() == p.value.shape(), "optimizer: gradient of ", parameters_[i].first,
             " has shape ", grads[i].shape().to_string(), ", parameter has ",
             p.value.shape().to_string());
    ParamSlot slot{};
    slot.param = p.value.data<float>();
    slot.grad = grads[i].data<float>();
    slot.state0 = state0_[i].defined() ? state0_[i].data<float>() : nullptr;
    slot.state1 = state1_[i].defined() ? state1_[i].data<float>() : nullptr;
    slot.size = p.value.numel();
    slot.weight_decay = p.decay ? options_.weight_decay : 0.0f;
    slot.use_trust_ratio = p.decay;
    slots.push_back(slot);
  }
  const Stream stream = Stream::compute(parameters_.front().second->value.device());
  const int count = static_cast<int>(slots.size());
  const bool first_step = steps_ == 0;
  ++steps_;
  switch (options_.kind) {
    case OptimizerKind::Sgd: {
      SgdOptions o;
      o.lr = lr;
      o.momentum = options_.momentum;
      o.nesterov = options_.nesterov;
      o.grad_scale = grad_scale;
      o.first_step = first_step;
      sgd_update(stream, slots.data(), count, o);
      break;
    }
    case OptimizerKind::AdamW: {
      AdamWOptions o;
      o.lr = lr;
      o.beta1 = options_.beta1;
      o.beta2 = options_.beta2;
      o.eps = options_.eps;
      o.step = static_cast<int>(steps_);
      o.grad_scale = grad_scale;
      adamw_update(stream, slots.data(), count, o);
      break;
    }
    case OptimizerKind::Lars: {
      LarsOptions o;
      o.lr = lr;
      o.momentum = options_.momentum;
      o.trust_coefficient = options_.trust_coefficient;
      o.grad_scale = grad_scale;
      lars_update(stream, slots.data(), count, o);
      break;
    }
  }
}

}  // namespace mb
