// Optimizers applied once per full batch: SGD (momentum, Nesterov, weight decay), AdamW
// and LARS, each one fused multi-tensor kernel over all parameters (CPU twin on the CPU).
//
// The optimizer reads the gradient buffers the engine hands it and multiplies them by
// grad_scale inside the update kernel: that is where the in-place accumulation mode
// applies its normalization factor 1/B (and where global-norm clipping applies its
// coefficient), so no separate pass over the gradients is needed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers/module.h"
#include "runtime/tensor.h"

namespace mb {

enum class OptimizerKind { Sgd, AdamW, Lars };
const char* optimizer_name(OptimizerKind kind);
// "sgd", "adamw", "lars"; throws mb::InvalidArgument naming the accepted values.
OptimizerKind parse_optimizer(const std::string& name);

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::Sgd;
  float momentum = 0.9f;
  bool nesterov = false;
  float weight_decay = 0.0f;  // not applied to biases and BatchNorm parameters
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;  // AdamW
  float trust_coefficient = 0.001f;                 // LARS
};

class Optimizer {
 public:
  // `parameters`: the model's named parameters (their values are updated in place).
  Optimizer(std::vector<std::pair<std::string, Parameter*>> parameters,
            const OptimizerOptions& options);

  // One update. grads[i] holds parameter i's gradient (same shape and device); it is
  // multiplied by grad_scale inside the kernel.
  void step(const std::vector<Tensor>& grads, float lr, float grad_scale);

  const OptimizerOptions& options() const { return options_; }
  std::int64_t steps() const { return steps_; }
  // Optimizer state for checkpoints: "<param>.momentum_buffer", "<param>.exp_avg",
  // "<param>.exp_avg_sq", in a stable order.
  std::vector<std::pair<std::string, Tensor*>> named_state();
  void set_steps(std::int64_t steps) { steps_ = steps; }

 private:
  std::vector<std::pair<std::string, Parameter*>> parameters_;
  OptimizerOptions options_;
  std::vector<Tensor> state0_;  // momentum buffer / exp_avg
  std::vector<Tensor> state1_;  // exp_avg_sq
  std::int64_t steps_ = 0;
};

}  // namespace mb
