// Optimizer (engine/optimizer.h): state names, the decay mask, step counting and what the
// step count means to AdamW, against values worked out by hand from the update rules
// (torch.optim.SGD's and AdamW's documented formulas; LARS as in You et al. 2017).
#include "engine/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace mb {
namespace {

// Named parameters built by hand: each a 1-D tensor with its decay flag.
struct Parameters {
  std::vector<std::unique_ptr<Parameter>> storage;
  std::vector<std::pair<std::string, Parameter*>> named;

  Parameter& add(const std::string& name, const std::vector<float>& values, bool decay) {
    auto p = std::make_unique<Parameter>();
    p->value = Tensor::from_vector(values, {static_cast<std::int64_t>(values.size())});
    p->decay = decay;
    named.emplace_back(name, p.get());
    storage.push_back(std::move(p));
    return *storage.back();
  }
};

Tensor vec(const std::vector<float>& values) {
  return Tensor::from_vector(values, {static_cast<std::int64_t>(values.size())});
}

std::vector<std::string> state_names(Optimizer& optimizer) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : optimizer.named_state()) names.push_back(name);
  return names;
}

OptimizerOptions sgd(float momentum, bool nesterov = false, float weight_decay = 0.0f) {
  OptimizerOptions o;
  o.kind = OptimizerKind::Sgd;
  o.momentum = momentum;
  o.nesterov = nesterov;
  o.weight_decay = weight_decay;
  return o;
}

TEST(Optimizer, NamesRoundTrip) {
  for (OptimizerKind kind : {OptimizerKind::Sgd, OptimizerKind::AdamW, OptimizerKind::Lars}) {
    EXPECT_EQ(parse_optimizer(optimizer_name(kind)), kind);
  }
  EXPECT_STREQ(optimizer_name(OptimizerKind::AdamW), "adamw");
  EXPECT_THROW(parse_optimizer("adam"), InvalidArgument);
}

TEST(Optimizer, StateNamesFollowParametersInOrder) {
  Parameters params;
  params.add("fc.weight", {1, 2, 3}, true);
  params.add("fc.bias", {0.5f}, false);

  Optimizer momentum(params.named, sgd(0.9f));
  EXPECT_EQ(state_names(momentum),
            (std::vector<std::string>{"fc.weight.momentum_buffer", "fc.bias.momentum_buffer"}));
  for (const auto& [name, tensor] : momentum.named_state()) {
    EXPECT_EQ(tensor->tag(), MemoryTag::Optimizer) << name;
    for (float v : tensor->to_vector()) EXPECT_EQ(v, 0.0f) << name;
  }
  EXPECT_EQ(momentum.named_state()[0].second->shape(), Shape({3}));

  Optimizer plain(params.named, sgd(0.0f));
  EXPECT_TRUE(plain.named_state().empty()) << "plain SGD keeps no state";

  OptimizerOptions adamw;
  adamw.kind = OptimizerKind::AdamW;
  Optimizer adam(params.named, adamw);
  EXPECT_EQ(state_names(adam),
            (std::vector<std::string>{"fc.weight.exp_avg", "fc.weight.exp_avg_sq",
                                      "fc.bias.exp_avg", "fc.bias.exp_avg_sq"}));

  OptimizerOptions lars;
  lars.kind = OptimizerKind::Lars;
  Optimizer lars_optimizer(params.named, lars);
  EXPECT_EQ(state_names(lars_optimizer),
            (std::vector<std::string>{"fc.weight.momentum_buffer", "fc.bias.momentum_buffer"}));
}

TEST(Optimizer, StateTensorsAreTheOnesTheUpdateUses) {
  Parameters params;
  params.add("w", {1.0f}, true);
  Optimizer optimizer(params.named, sgd(0.9f));
  optimizer.step({vec({2.0f})}, 0.1f, 1.0f);
  // First step: buf = g (torch's buf = clone(d_p)).
  EXPECT_FLOAT_EQ(optimizer.named_state()[0].second->to_vector()[0], 2.0f);
}

// SGD with momentum 0.9, lr 0.1 and a constant gradient 1:
//   step 1: buf = 1 (not 0.9 * 0 + 0.1 or any damped value), w = 1 - 0.1 = 0.9
//   step 2: buf = 0.9 + 1 = 1.9, w = 0.9 - 0.19 = 0.71
//   step 3: buf = 1.71 + 1 = 2.71, w = 0.71 - 0.271 = 0.439
// Nesterov, d = g + 0.9 * buf: step 1: d = 1.9, w = 0.81; step 2: d = 1 + 1.71 = 2.71,
// w = 0.539; step 3: buf = 2.71, d = 1 + 2.439 = 3.439, w = 0.1951.
TEST(Optimizer, SgdMomentumAndNesterovByHand) {
  for (bool nesterov : {false, true}) {
    Parameters params;
    Parameter& w = params.add("w", {1.0f}, true);
    Optimizer optimizer(params.named, sgd(0.9f, nesterov));
    const std::vector<double> expected =
        nesterov ? std::vector<double>{0.81, 0.539, 0.1951} : std::vector<double>{0.9, 0.71, 0.439};
    for (int t = 0; t < 3; ++t) {
      optimizer.step({vec({1.0f})}, 0.1f, 1.0f);
      EXPECT_NEAR(w.value.to_vector()[0], expected[t], 1e-6)
          << (nesterov ? "nesterov" : "momentum") << " step " << t + 1;
    }
  }
}

// grad_scale multiplies the gradient, never the weight-decay term: w = 2, raw grad 8,
// grad_scale 1/8, wd 0.1, lr 0.5: w = 2 - 0.5 * (1 + 0.1 * 2) = 1.4.
TEST(Optimizer, GradScaleAppliesToTheGradientOnly) {
  Parameters params;
  Parameter& w = params.add("w", {2.0f}, true);
  Optimizer optimizer(params.named, sgd(0.0f, false, 0.1f));
  optimizer.step({vec({8.0f})}, 0.5f, 0.125f);
  EXPECT_NEAR(w.value.to_vector()[0], 1.4, 1e-6);
}

// Weight decay skips parameters with decay == false (biases, BatchNorm), for every optimizer.
// With a zero gradient only the decay moves a parameter:
//   SGD (coupled):     w = 2 - lr * wd * 2        = 2 - 0.5 * 0.1 * 2 = 1.9
//   AdamW (decoupled): w = 2 * (1 - lr * wd)     = 2 * (1 - 0.5 * 0.1) = 1.9
//                      (m = v = 0, so the Adam term is 0 / eps = 0)
//   LARS:              ||g|| = 0 gives local_lr = 1: buf = wd * w, w = 2 - lr * 0.1 * 2 = 1.9
TEST(Optimizer, WeightDecaySkipsParametersWithoutDecay) {
  for (OptimizerKind kind : {OptimizerKind::Sgd, OptimizerKind::AdamW, OptimizerKind::Lars}) {
    Parameters params;
    Parameter& weight = params.add("conv.weight", {2.0f}, true);
    Parameter& bias = params.add("conv.bias", {2.0f}, false);
    Parameter& bn = params.add("bn.weight", {2.0f}, false);
    OptimizerOptions options;
    options.kind = kind;
    options.momentum = 0.9f;
    options.weight_decay = 0.1f;
    Optimizer optimizer(params.named, options);
    optimizer.step({vec({0.0f}), vec({0.0f}), vec({0.0f})}, 0.5f, 1.0f);
    EXPECT_NEAR(weight.value.to_vector()[0], 1.9, 1e-6) << optimizer_name(kind);
    EXPECT_EQ(bias.value.to_vector()[0], 2.0f) << optimizer_name(kind) << ": bias decayed";
    EXPECT_EQ(bn.value.to_vector()[0], 2.0f) << optimizer_name(kind) << ": BatchNorm decayed";
  }
}

// LARS on w = (3, 4) (norm 5) with g = (0.6, 0.8) (norm 1), no decay, eta = 0.001, lr 1:
//   decayed (trust ratio): local_lr = 0.001 * 5 / 1 = 0.005, w = (3 - 0.003, 4 - 0.004)
//   excluded (bias / BN):  plain momentum SGD,          w = (3 - 0.6, 4 - 0.8)
// Step 2 with the same g: the excluded one has buf = 0.9 * g + g = 1.9 g.
TEST(Optimizer, LarsTrustRatioOnlyForDecayedParameters) {
  Parameters params;
  Parameter& weight = params.add("fc.weight", {3.0f, 4.0f}, true);
  Parameter& bias = params.add("fc.bias", {3.0f, 4.0f}, false);
  OptimizerOptions options;
  options.kind = OptimizerKind::Lars;
  options.momentum = 0.9f;
  options.trust_coefficient = 0.001f;
  Optimizer optimizer(params.named, options);
  optimizer.step({vec({0.6f, 0.8f}), vec({0.6f, 0.8f})}, 1.0f, 1.0f);
  const std::vector<float> w = weight.value.to_vector();
  const std::vector<float> b = bias.value.to_vector();
  EXPECT_NEAR(w[0], 2.997, 1e-6);
  EXPECT_NEAR(w[1], 3.996, 1e-6);
  EXPECT_NEAR(b[0], 2.4, 1e-6);
  EXPECT_NEAR(b[1], 3.2, 1e-6);
  optimizer.step({vec({0.6f, 0.8f}), vec({0.6f, 0.8f})}, 1.0f, 1.0f);
  const std::vector<float> b2 = bias.value.to_vector();
  EXPECT_NEAR(b2[0], 2.4 - 1.9 * 0.6, 1e-6);
  EXPECT_NEAR(b2[1], 3.2 - 1.9 * 0.8, 1e-6);
  // The trust ratio is taken from the scaled gradient: grad 4.8 * 1/8 is the same g.
  Parameters scaled_params;
  Parameter& scaled = scaled_params.add("fc.weight", {3.0f, 4.0f}, true);
  Optimizer scaled_optimizer(scaled_params.named, options);
  scaled_optimizer.step({vec({4.8f, 6.4f})}, 1.0f, 0.125f);
  EXPECT_NEAR(scaled.value.to_vector()[0], 2.997, 1e-6);
}

TEST(Optimizer, CountsStepsAndRestoresTheCount) {
  Parameters params;
  params.add("w", {1.0f}, true);
  Optimizer optimizer(params.named, sgd(0.9f));
  EXPECT_EQ(optimizer.steps(), 0);
  optimizer.step({vec({1.0f})}, 0.1f, 1.0f);
  optimizer.step({vec({1.0f})}, 0.1f, 1.0f);
  EXPECT_EQ(optimizer.steps(), 2);
  optimizer.set_steps(40);
  EXPECT_EQ(optimizer.steps(), 40);
  optimizer.step({vec({1.0f})}, 0.1f, 1.0f);
  EXPECT_EQ(optimizer.steps(), 41);
}

// AdamW's bias correction uses the optimizer's step count t (1-based for the update):
//   m = (1 - b1) g, v = (1 - b2) g^2 after one update from zero state, and
//   w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
// On a fresh optimizer (t = 1) the corrections cancel: w -= lr * g / (|g| + eps) ~ lr.
// After set_steps(999) the same update is t = 1000: 1 - b1^t ~ 1, 1 - b2^t = 0.6323, so
// w -= 0.1 * 0.05 / (sqrt(0.00025 / 0.6323) + 1e-8) = 0.25146.
TEST(Optimizer, AdamWBiasCorrectionUsesTheStepCount) {
  // The float32 values the optimizer holds (0.999f^1000 differs from 0.999^1000 by 1e-5).
  const double lr = 0.1f, g = 0.5, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  auto expected_update = [&](int t) {
    const double m = (1 - b1) * g, v = (1 - b2) * g * g;
    return lr * (m / (1 - std::pow(b1, t))) / (std::sqrt(v / (1 - std::pow(b2, t))) + eps);
  };
  for (std::int64_t restored : {0, 999}) {
    Parameters params;
    Parameter& w = params.add("w", {1.0f}, true);
    OptimizerOptions options;
    options.kind = OptimizerKind::AdamW;
    Optimizer optimizer(params.named, options);
    optimizer.set_steps(restored);
    optimizer.step({vec({static_cast<float>(g)})}, static_cast<float>(lr), 1.0f);
    const double update = expected_update(static_cast<int>(restored + 1));
    EXPECT_NEAR(w.value.to_vector()[0], 1.0 - update, 2e-7) << "restored step " << restored;
  }
  EXPECT_NEAR(expected_update(1), 0.1, 1e-7);
  EXPECT_NEAR(expected_update(1000), 0.25146, 1e-5);
}

// Two AdamW steps with g = 0.5 then -0.5 (t = 1, 2), worked out by hand:
//   t = 1: m = 0.05, v = 0.00025; m^ = 0.5, v^ = 0.25:      w = 1 - 0.1 * 1 = 0.9
//   t = 2: m = 0.045 - 0.05 = -0.005, v = 0.00024975 + 0.00025 = 0.00049975
//          m^ = -0.005 / 0.19 = -0.0263158, v^ = 0.00049975 / 0.001999 = 0.25
//          w = 0.9 + 0.1 * 0.0263158 / 0.5 = 0.9052632
TEST(Optimizer, AdamWTwoStepsByHand) {
  Parameters params;
  Parameter& w = params.add("w", {1.0f}, false);
  OptimizerOptions options;
  options.kind = OptimizerKind::AdamW;
  options.weight_decay = 0.5f;  // not applied: decay is false
  Optimizer optimizer(params.named, options);
  optimizer.step({vec({0.5f})}, 0.1f, 1.0f);
  EXPECT_NEAR(w.value.to_vector()[0], 0.9, 1e-6);
  optimizer.step({vec({-0.5f})}, 0.1f, 1.0f);
  EXPECT_NEAR(w.value.to_vector()[0], 0.9052632, 1e-6);
}

TEST(Optimizer, RejectsMismatchedGradientsAndNonFiniteArguments) {
  Parameters params;
  params.add("w", {1.0f, 2.0f}, true);
  Optimizer optimizer(params.named, sgd(0.9f));
  EXPECT_THROW(optimizer.step({}, 0.1f, 1.0f), InvalidArgument);
  EXPECT_THROW(optimizer.step({vec({1.0f})}, 0.1f, 1.0f), InvalidArgument);
  EXPECT_THROW(optimizer.step({vec({1.0f, 1.0f})}, NAN, 1.0f), InvalidArgument);
  EXPECT_THROW(optimizer.step({vec({1.0f, 1.0f})}, 0.1f, INFINITY), InvalidArgument);
  EXPECT_EQ(optimizer.steps(), 0) << "a rejected step must not count";
  OptimizerOptions negative = sgd(-0.5f);
  EXPECT_THROW(Optimizer(params.named, negative), InvalidArgument);
}

}  // namespace
}  // namespace mb
