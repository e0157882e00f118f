// The optimizers, the learning-rate schedule and the Trainer's global-norm clipping against
// PyTorch references (tests/fixtures/optim_*.safetensors, written by
// tools/reference/optimizer_cases.py: torch.optim.SGD / AdamW, LARS from You et al. 2017,
// torch.optim.lr_scheduler, torch.nn.utils.clip_grad_norm_).
//
// Bounds (tests/fixture.h): the references are float64 from our exact float32 inputs, and
// each parameter's ".abs" companion is the same recurrence run on absolute values, so the
// error of a chain of float32 operations is within gamma_K * .abs with K the number of
// roundings on the longest path to the element. K is counted per step below and grows
// linearly with the steps taken (errors in the parameter and the state carry over).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/lr_schedule.h"
#include "engine/optimizer.h"
#include "engine/trainer.h"
#include "layers/linear.h"
#include "tests/fixture.h"

namespace mb {
namespace {

using testing::expect_within_roundoff;
using testing::Fixture;
using testing::kUnitRoundoff;

constexpr int kSteps = 3;

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) items.push_back(item);
  return items;
}

bool contains(const std::vector<std::string>& list, const std::string& name) {
  for (const std::string& item : list) {
    if (item == name) return true;
  }
  return false;
}

// The fixture's parameters at their initial values, decay set from the torch parameter
// groups (metadata "decay": the decayed group; the others are biases and BatchNorm).
struct ParameterSet {
  std::vector<std::string> names;
  std::vector<std::unique_ptr<Parameter>> storage;

  explicit ParameterSet(const Fixture& fixture) : names(split_list(fixture.meta("params"))) {
    const std::vector<std::string> decayed = split_list(fixture.meta("decay"));
    for (const std::string& name : names) {
      auto p = std::make_unique<Parameter>();
      p->value = fixture.tensor("initial." + name).clone();
      p->decay = contains(decayed, name);
      storage.push_back(std::move(p));
    }
  }
  std::vector<std::pair<std::string, Parameter*>> named() {
    std::vector<std::pair<std::string, Parameter*>> result;
    for (std::size_t i = 0; i < names.size(); ++i) result.emplace_back(names[i], storage[i].get());
    return result;
  }
};

// Runs the fixture's three steps and compares parameters after every step and the state
// after the last; `roundings_per_step` is K per step (see each case).
void expect_matches_reference(const std::string& file, OptimizerKind kind,
                              double roundings_per_step) {
  const Fixture fixture(file);
  ParameterSet parameters(fixture);
  ASSERT_FALSE(parameters.names.empty()) << fixture.path();
  OptimizerOptions options;
  options.kind = kind;
  options.weight_decay = static_cast<float>(fixture.number("weight_decay"));
  if (kind == OptimizerKind::AdamW) {
    options.beta1 = static_cast<float>(fixture.number("beta1"));
    options.beta2 = static_cast<float>(fixture.number("beta2"));
    options.eps = static_cast<float>(fixture.number("eps"));
  } else {
    options.momentum = static_cast<float>(fixture.number("momentum"));
  }
  if (kind == OptimizerKind::Sgd) options.nesterov = fixture.meta("nesterov") == "1";
  if (kind == OptimizerKind::Lars) {
    options.trust_coefficient = static_cast<float>(fixture.number("trust_coefficient"));
  }
  const std::vector<std::string> lrs = split_list(fixture.meta("lrs"));
  ASSERT_EQ(lrs.size(), static_cast<std::size_t>(kSteps));
  const float grad_scale = static_cast<float>(fixture.number("grad_scale"));

  Optimizer optimizer(parameters.named(), options);
  for (int t = 1; t <= kSteps; ++t) {
    std::vector<Tensor> grads;
    for (const std::string& name : parameters.names) {
      grads.push_back(fixture.tensor("grad" + std::to_string(t) + "." + name));
    }
    optimizer.step(grads, static_cast<float>(std::stod(lrs[t - 1])), grad_scale);
    EXPECT_EQ(optimizer.steps(), t);
    for (std::size_t i = 0; i < parameters.names.size(); ++i) {
      SCOPED_TRACE("after step " + std::to_string(t));
      expect_within_roundoff(parameters.storage[i]->value, fixture,
                             "step" + std::to_string(t) + "." + parameters.names[i],
                             roundings_per_step * t);
    }
  }
  // Our state names must be exactly the fixture's (torch's state keys under our names).
  std::size_t reference_states = 0;
  for (const std::string& key : fixture.file().order) {
    const bool is_state = key.rfind("state.", 0) == 0;
    const bool is_abs = key.size() > 4 && key.compare(key.size() - 4, 4, ".abs") == 0;
    if (is_state && !is_abs) ++reference_states;
  }
  const auto state = optimizer.named_state();
  EXPECT_EQ(state.size(), reference_states) << fixture.path();
  for (const auto& [name, tensor] : state) {
    ASSERT_TRUE(fixture.has("state." + name)) << "no reference for state " << name;
    expect_within_roundoff(*tensor, fixture, "state." + name, roundings_per_step * kSteps);
  }
}

// SGD, per element per step: grad_scale * grad, decay * w, their sum, momentum * buf, the
// sum into buf, (Nesterov) momentum * buf and its sum, lr * g, w - lr * g: 9 roundings.
TEST(OptimizerReference, SgdPlain) {
  expect_matches_reference("optim_sgd.safetensors", OptimizerKind::Sgd, 9);
}
TEST(OptimizerReference, SgdMomentum) {
  expect_matches_reference("optim_sgd_momentum.safetensors", OptimizerKind::Sgd, 9);
}
TEST(OptimizerReference, SgdNesterov) {
  expect_matches_reference("optim_sgd_nesterov.safetensors", OptimizerKind::Sgd, 9);
}
// Weight decay on the conv/linear weights only (torch parameter groups), momentum, and a
// summed gradient with grad_scale 1/8 applied inside the kernel (the decay is not scaled).
TEST(OptimizerReference, SgdWeightDecayGroups) {
  expect_matches_reference("optim_sgd_weight_decay.safetensors", OptimizerKind::Sgd, 9);
}

// AdamW, per step: the decay factor 1 - lr * wd and its product (2), m's and v's updates
// (3 each, carried over the steps: the .abs of m is the recurrence on |g|, v has no
// cancellation), sqrt (half of v's relative error, +1), * 1/sqrt(bias correction 2) and
// + eps (2), step_size rounded to float, the division and the product (3), w - update (1):
// about 14 roundings relative to the update's magnitude per step.
TEST(OptimizerReference, AdamW) {
  expect_matches_reference("optim_adamw.safetensors", OptimizerKind::AdamW, 14);
}

// LARS: SGD's chain (7 roundings without Nesterov) plus local_lr (its double norms over
// float32 values rounded to float, 1; the norms carry the parameter's own relative error,
// already counted) and its product with the update (1), plus one for the fixture storing the
// momentum buffer as v / lr: 10 per step.
TEST(OptimizerReference, Lars) {
  expect_matches_reference("optim_lars.safetensors", OptimizerKind::Lars, 10);
}
// A zero weight (local_lr 1 on step 1, the trust ratio afterwards) and a weight whose
// gradient is always zero (local_lr 1, only weight decay moves it).
TEST(OptimizerReference, LarsZeroNorms) {
  expect_matches_reference("optim_lars_zero_norms.safetensors", OptimizerKind::Lars, 10);
}

// LrSchedule::at(i) against torch's lr for the optimizer step with 0-based index i. The
// reference is torch's float64 lr rounded to float32: at most half an ulp, <= u * |lr|.
TEST(LrScheduleReference, MatchesTorchSchedulers) {
  const Fixture fixture("optim_lr_schedule.safetensors");
  const std::vector<std::string> configs = split_list(fixture.meta("configs"));
  ASSERT_EQ(configs.size(), 3u);
  for (const std::string& config : configs) {
    SCOPED_TRACE(config + ": " + fixture.meta(config + ".torch"));
    LrSchedule schedule;
    schedule.peak_lr = fixture.number(config + ".peak_lr");
    schedule.warmup_steps = static_cast<std::int64_t>(fixture.number(config + ".warmup_steps"));
    schedule.warmup_start_factor = fixture.number(config + ".warmup_start_factor");
    schedule.total_steps = static_cast<std::int64_t>(fixture.number(config + ".total_steps"));
    schedule.final_lr = fixture.number(config + ".final_lr");
    const std::vector<float> reference = fixture.values(config + ".lr");
    ASSERT_GE(reference.size(), 30u);
    for (std::size_t i = 0; i < reference.size(); ++i) {
      const double lr = schedule.at(static_cast<std::int64_t>(i));
      EXPECT_NEAR(lr, reference[i], kUnitRoundoff * std::fabs(reference[i]) + 1e-15)
          << "step " << i;
    }
    // Our warmup is torch's plain LinearLR(start_factor) one step earlier: step i uses the
    // lr torch's LinearLR gives step i + 1, so no step runs at lr = start_factor * peak
    // (0 for our default start factor).
    if (fixture.has(config + ".torch_linear_lr")) {
      const std::vector<float> linear = fixture.values(config + ".torch_linear_lr");
      for (std::int64_t i = 0; i < schedule.warmup_steps; ++i) {
        const float next = linear[static_cast<std::size_t>(i + 1)];
        EXPECT_NEAR(schedule.at(i), next, kUnitRoundoff * std::fabs(next) + 1e-15) << "step " << i;
      }
    }
  }
}

// One Trainer step of Linear(6 -> 4) with SGD (momentum 0.9, weight decay on the weight)
// and global-norm clipping, against torch's clip_grad_norm_ + SGD step, in both
// accumulation modes, as one micro-batch and split [3, 3, 2].
struct ClipCase {
  const char* name;  // fixture prefix
  AccumulationMode mode;
  std::int64_t micro_batch;
};

class ClipReference : public ::testing::TestWithParam<ClipCase> {};

// The gradient: logits are 6-term dot products plus a bias (7 roundings, on values up to
// ~3), so the softmax sees an absolute error of ~20 u, i.e. ~20 u relative in p, plus exp,
// the 4-term sum and the division (6); the weight gradient sums 8 samples (8): ~34 relative
// to the gradient's magnitude ((p + onehot)/B)^T |x|. The update adds grad_scale and the clip
// coefficient (their own error comes from the norm, ~the gradient's), lr * g, decay and the
// subtraction (6): K = 40. The norm has the gradient's K plus the 20-term sum of squares and
// the sqrt: K = 60 relative to the norm of the magnitudes.
TEST_P(ClipReference, MatchesTorchClipGradNorm) {
  const ClipCase c = GetParam();
  const Fixture fixture("optim_clip.safetensors");
  const std::string prefix = c.name;
  auto model = std::make_shared<Linear>(6, 4);
  model->weight().value.copy_from(fixture.tensor("initial.weight"));
  model->bias()->value.copy_from(fixture.tensor("initial.bias"));

  TrainerOptions options;
  options.micro_batch = c.micro_batch;
  options.accumulation = c.mode;
  options.optimizer.kind = OptimizerKind::Sgd;
  options.optimizer.momentum = static_cast<float>(fixture.number("momentum"));
  options.optimizer.weight_decay = static_cast<float>(fixture.number("weight_decay"));
  options.clip_norm = fixture.number(prefix + ".clip_norm");
  Trainer trainer(model, options);
  const StepResult result = trainer.step(fixture.tensor("input"), fixture.tensor("labels"),
                                         static_cast<float>(fixture.number("lr")));
  EXPECT_EQ(result.samples, 8);

  expect_within_roundoff(model->weight().value, fixture, prefix + ".weight", 40);
  expect_within_roundoff(model->bias()->value, fixture, prefix + ".bias", 40);
  // StepResult.grad_norm is the total norm before clipping, as clip_grad_norm_ returns it.
  expect_within_roundoff(Tensor::from_vector({static_cast<float>(result.grad_norm)}, {1}), fixture,
                         prefix + ".grad_norm", 60);
  // The mean loss: per sample ~20 u from the logits plus log-sum-exp (6), then the mean of 8
  // positive terms (8): K = 34 relative to the loss itself.
  const double loss = fixture.values(prefix + ".loss")[0];
  EXPECT_NEAR(result.loss, loss, 35 * kUnitRoundoff * loss);
}

INSTANTIATE_TEST_SUITE_P(Optim, ClipReference,
                         ::testing::Values(ClipCase{"clipped", AccumulationMode::InPlace, 8},
                                           ClipCase{"clipped", AccumulationMode::InPlace, 3},
                                           ClipCase{"clipped", AccumulationMode::Buffers, 3},
                                           ClipCase{"unclipped", AccumulationMode::InPlace, 8},
                                           ClipCase{"unclipped", AccumulationMode::InPlace, 3},
                                           ClipCase{"unclipped", AccumulationMode::Buffers, 3}),
                         [](const ::testing::TestParamInfo<ClipCase>& info) {
                           return std::string(info.param.name) +
                                  (info.param.mode == AccumulationMode::InPlace ? "InPlace"
                                                                                : "Buffers") +
                                  "Micro" + std::to_string(info.param.micro_batch);
                         });

}  // namespace
}  // namespace mb
