// Whole training steps against PyTorch: the truth exactness_test.cpp lacks (it proves a split
// equals our own full batch, not that the full batch is right). The fixtures
// tests/fixtures/step_*.safetensors come from tools/reference/step_cases.py, which says
// exactly what each reference is; here each is replayed through Trainer::step with a forced
// uneven split, in both accumulation modes:
//  - LeNet-5, two SGD steps (momentum, weight decay), B = 24 as [10, 10, 4], against
//    PyTorch's plain full-batch steps;
//  - ResNet-20, one SGD step, B = 16 as [6, 6, 4], against PyTorch gradient accumulation
//    with the same split, and BatchNorm running statistics as docs/architecture.md defines
//    them (one update per batch from Σx, Σx², n over all micro-batches, unbiased variance);
//  - a per-pixel classifier with ignore_index 255 in uneven shares per micro-batch, one
//    step with reduction mean (+ label smoothing) and one with reduction sum.
//
// Tolerance. A step changes a parameter by its update lr * g (momentum and decay folded in);
// the parameter itself is only rounded. So per tensor t the bound is
//     |ours - torch| <= 2u max|p_t| + rtol * max|update_t|
// (expect_within_roundoff with K = 1 and extra = rtol * max|update_t|): one float32 rounding
// of our parameter plus one of the stored reference, and a relative error of the update
// measured against the tensor's largest update, because a gradient element is a sum of
// signed terms whose round-off scales with the terms, not with a small result. The fixtures
// use large learning rates (1.0, 2.0; 2.0 and 0.01 for mean and sum) so that updates are
// 1-50% of the parameters and the rounding floor does not hide the update's error (at a
// realistic lr of 0.1 every error was exactly one rounding of the parameter). Observed, as
// error / max|update| of the worst tensor (the part beyond one rounding in brackets):
// LeNet-5 1.6e-6 (1.3e-7), ResNet-20 1.8e-5 on BN weights, whose update is 0.5% of the
// weight (1.9e-6), segmentation 4.0e-7 (0). rtol = 2e-5 is 10x the largest part beyond
// rounding. A wrong micro-batch factor moves the update 4 orders of magnitude more:
// step_cases.py records in "one_over_k_relative_change" what 1/K instead of n_k/B does
// (0.82, 0.30 and 0.76 of max|update|), and each test checks that it exceeds 1e4 * rtol.
// BatchNorm's running statistics, same form with their own update (momentum times batch
// statistic minus old value): observed 1.1e-6, all within one rounding; rtol 1e-5. A biased
// variance is off by 1/(N-1) of the variance, N = 16 * 8 * 8 in stage 3: 5.5e-4 of the
// update, 50x the bound. Losses (stored as float32, half an ulp is 6e-8 relative): observed
// at most 6.0e-8, bound 1e-6.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "data/safetensors.h"
#include "engine/trainer.h"
#include "layers/activation.h"
#include "layers/conv2d.h"
#include "models/zoo.h"
#include "tests/fixture.h"

namespace mb {
namespace {

using testing::Fixture;

constexpr double kUpdateRtol = 2e-5;       // of max|update| per tensor, see the file header
constexpr double kRunningStatRtol = 1e-5;  // of max|running stat change| per tensor
constexpr double kLossRtol = 1e-6;

std::string mode_name(const ::testing::TestParamInfo<AccumulationMode>& info) {
  return accumulation_name(info.param);
}

// The fixture's tensors named prefix + name, as a file keyed by name (for load_into).
SafetensorsFile strip_prefix(const Fixture& fixture, const std::string& prefix) {
  SafetensorsFile file;
  for (const auto& [name, tensor] : fixture.file().tensors) {
    if (name.rfind(prefix, 0) == 0) file.tensors[name.substr(prefix.size())] = tensor;
  }
  return file;
}

std::vector<NamedTensor> model_state(Module& model) {
  std::vector<NamedTensor> state;
  for (auto& [name, p] : model.named_parameters()) state.push_back({name, p->value});
  for (auto& [name, b] : model.named_buffers()) state.push_back({name, *b});
  return state;
}

std::map<std::string, std::vector<float>> parameter_values(Module& model) {
  std::map<std::string, std::vector<float>> values;
  for (auto& [name, p] : model.named_parameters()) values[name] = p->value.to_vector();
  return values;
}

std::vector<std::int64_t> split_of(const Fixture& fixture) {
  // metadata "split" is a JSON list such as "[10, 10, 4]".
  std::string text = fixture.meta("split");
  for (char& c : text) {
    if (c == '[' || c == ']' || c == ',') c = ' ';
  }
  std::istringstream in(text);
  std::vector<std::int64_t> sizes;
  for (std::int64_t size = 0; in >> size;) sizes.push_back(size);
  return sizes;
}

TrainerOptions sgd_options(const Fixture& fixture, AccumulationMode mode) {
  TrainerOptions options;
  options.micro_batch = static_cast<std::int64_t>(fixture.number("micro_batch"));
  options.accumulation = mode;
  options.optimizer.kind = OptimizerKind::Sgd;
  options.optimizer.momentum = static_cast<float>(fixture.number("momentum"));
  options.optimizer.weight_decay = static_cast<float>(fixture.number("weight_decay"));
  return options;
}

// What a comparison saw, for the log: the worst error / max|update| of any tensor, and the
// worst part of an error beyond the rounding floor 2u max|p| (the error of the update
// itself, which the floor hides when it is smaller).
struct UpdateError {
  double total = 0.0;
  double beyond_rounding = 0.0;
};

// Compares every tensor of `actual` (name -> tensor) with the fixture's `prefix + name`,
// bounding the error by 2u max|ref| + rtol * max|ref - before| (see the file header).
UpdateError expect_update_close(const std::vector<std::pair<std::string, Tensor>>& actual,
                                const std::map<std::string, std::vector<float>>& before,
                                const Fixture& fixture, const std::string& prefix, double rtol) {
  UpdateError worst;
  for (const auto& [name, tensor] : actual) {
    const std::string key = prefix + name;
    const std::vector<float> reference = fixture.values(key);
    const std::vector<float>& start = before.at(name);
    const std::vector<float> ours = tensor.to_vector();
    if (reference.size() != ours.size() || start.size() != ours.size()) {
      ADD_FAILURE() << key << ": " << reference.size() << " reference values, " << ours.size()
                    << " ours, " << start.size() << " before the step";
      continue;
    }
    double max_update = 0.0, max_param = 0.0, max_error = 0.0;
    for (std::size_t i = 0; i < ours.size(); ++i) {
      max_update = std::max(max_update, std::fabs(static_cast<double>(reference[i]) - start[i]));
      max_param = std::max(max_param, std::fabs(static_cast<double>(reference[i])));
      max_error = std::max(max_error, std::fabs(static_cast<double>(ours[i]) - reference[i]));
    }
    if (max_update == 0.0) {
      ADD_FAILURE() << key << " did not move in the reference: the case is too weak";
      continue;
    }
    testing::expect_within_roundoff(tensor, fixture, key, 1, rtol * max_update);
    const double floor = 2.0 * testing::kUnitRoundoff * max_param;
    worst.total = std::max(worst.total, max_error / max_update);
    worst.beyond_rounding =
        std::max(worst.beyond_rounding, std::max(0.0, max_error - floor) / max_update);
  }
  return worst;
}

std::vector<std::pair<std::string, Tensor>> parameter_tensors(Module& model) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, p] : model.named_parameters()) tensors.emplace_back(name, p->value);
  return tensors;
}

void log_worst(const std::string& what, const UpdateError& worst, double rtol) {
  std::cout << "[   info   ] " << what << ": max |ours - torch| / max|update| = " << worst.total
            << ", beyond one rounding of the parameter " << worst.beyond_rounding << " (allowed "
            << rtol << ")\n";
}

void expect_loss(double ours, double reference, const std::string& what) {
  EXPECT_NEAR(ours, reference, kLossRtol * std::fabs(reference)) << what;
  std::cout << "[   info   ] " << what << ": loss " << ours << ", torch " << reference
            << ", relative error " << std::fabs(ours - reference) / std::fabs(reference) << "\n";
}

// The tolerance must be far below what a wrong micro-batch factor does to the update.
void expect_sensitive(const Fixture& fixture, double rtol) {
  EXPECT_GT(fixture.number("one_over_k_relative_change"), 1e4 * rtol)
      << fixture.path() << ": a 1/K factor would hardly move this case";
}

class TorchStep : public ::testing::TestWithParam<AccumulationMode> {};

// ---- LeNet-5: two SGD steps, full batch ----------------------------------------------------

TEST_P(TorchStep, LeNet5TwoSgdStepsWithAnUnevenSplitEqualFullBatchTorch) {
  const Fixture fixture("step_lenet5_sgd.safetensors");
  std::shared_ptr<Module> model = build_model("lenet5");
  load_into(strip_prefix(fixture, "init."), model_state(*model));
  Trainer trainer(model, sgd_options(fixture, GetParam()));
  const float lr = static_cast<float>(fixture.number("lr"));
  const std::vector<float> losses = fixture.values("loss");
  expect_sensitive(fixture, kUpdateRtol);

  for (int step = 1; step <= 2; ++step) {
    const std::string batch = "batch" + std::to_string(step);
    const auto before = parameter_values(*model);
    const StepResult result =
        trainer.step(fixture.tensor(batch + ".images"), fixture.tensor(batch + ".labels"), lr);
    EXPECT_EQ(result.micro_batches, split_of(fixture));
    expect_loss(
        result.loss, losses[step - 1],
        std::string("lenet5 ") + accumulation_name(GetParam()) + " step " + std::to_string(step));
    const std::string prefix = "step" + std::to_string(step) + ".";
    log_worst(
        std::string("lenet5 ") + accumulation_name(GetParam()) + " step " + std::to_string(step),
        expect_update_close(parameter_tensors(*model), before, fixture, prefix, kUpdateRtol),
        kUpdateRtol);
  }
}

// ---- ResNet-20: one step, gradient accumulation, BatchNorm ---------------------------------

// tools/reference/step_cases.py formula_values(): c_i in (-1, 1) from a splitmix64 hash of
// the tensor name (FNV-1a) and the element index; exact in double, one rounding to float.
std::uint64_t fnv1a64(const std::string& text) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char byte : text) h = (h ^ byte) * 0x100000001B3ull;
  return h;
}

std::vector<float> formula_values(const std::string& name, std::int64_t count, double scale,
                                  double offset, std::uint64_t seed) {
  const std::uint64_t key = fnv1a64(name) ^ seed;
  std::vector<float> values(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    std::uint64_t z = key + static_cast<std::uint64_t>(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    const double top = static_cast<double>(z >> 40);
    const double c = (2.0 * top + 1.0 - 16777216.0) / 16777216.0;
    values[static_cast<std::size_t>(i)] = static_cast<float>(offset + scale * c);
  }
  return values;
}

// formula_state(): conv / linear weights and linear biases in (-b, b), b = 1/sqrt(fan_in);
// BN weight 1 + 0.25c, bias 0.1c, running_mean 0.1c, running_var 1 + 0.5c, count 0.
SafetensorsFile formula_state(Module& model, std::uint64_t seed) {
  std::map<std::string, std::int64_t> fan_in;  // module prefix -> fan_in of its weight
  for (auto& [name, p] : model.named_parameters()) {
    if (p->value.ndim() > 1) {
      fan_in[name.substr(0, name.rfind('.'))] = p->value.numel() / p->value.dim(0);
    }
  }
  SafetensorsFile file;
  for (const NamedTensor& target : model_state(model)) {
    const std::string module = target.name.substr(0, target.name.rfind('.'));
    const std::string leaf = target.name.substr(target.name.rfind('.') + 1);
    const Shape& shape = target.tensor.shape();
    if (leaf == "num_batches_tracked") {
      file.tensors[target.name] = Tensor::from_vector_int({0}, shape);
      continue;
    }
    double scale = 0.0, offset = 0.0;
    if (fan_in.count(module)) {
      scale = 1.0 / std::sqrt(static_cast<double>(fan_in[module]));
    } else if (leaf == "weight") {
      scale = 0.25, offset = 1.0;
    } else if (leaf == "bias" || leaf == "running_mean") {
      scale = 0.1;
    } else if (leaf == "running_var") {
      scale = 0.5, offset = 1.0;
    } else {
      ADD_FAILURE() << "formula_state: no rule for " << target.name;
    }
    file.tensors[target.name] =
        Tensor::from_vector(formula_values(target.name, shape.numel(), scale, offset, seed), shape);
  }
  return file;
}

// step_cases.py checksum(): sum_i v_i ((i mod 13) - 6), so the test proves it rebuilt the
// very values the reference started from.
void expect_checksums(const SafetensorsFile& state, const Fixture& fixture) {
  for (const auto& [name, tensor] : state.tensors) {
    std::vector<double> values;
    if (tensor.dtype() == DType::Int32) {
      for (std::int32_t v : tensor.to_vector_int()) values.push_back(v);
    } else {
      for (float v : tensor.to_vector()) values.push_back(v);
    }
    double sum = 0.0, magnitude = 0.0;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const double term = values[i] * (static_cast<double>(i % 13) - 6.0);
      sum += term;
      magnitude += std::fabs(term);
    }
    EXPECT_NEAR(sum, fixture.values("checksum." + name)[0], 1e-6 * magnitude + 1e-30)
        << name << ": the initial state differs from step_cases.py formula_state()";
  }
}

TEST_P(TorchStep, ResNet20OneStepEqualsTorchGradientAccumulationAndPooledBnStatistics) {
  const Fixture fixture("step_resnet20_sgd.safetensors");
  std::shared_ptr<Module> model = build_model("resnet20");
  const SafetensorsFile initial =
      formula_state(*model, static_cast<std::uint64_t>(std::stoull(fixture.meta("seed"))));
  expect_checksums(initial, fixture);
  load_into(initial, model_state(*model));
  Trainer trainer(model, sgd_options(fixture, GetParam()));
  expect_sensitive(fixture, kUpdateRtol);

  std::map<std::string, std::vector<float>> before = parameter_values(*model);
  std::vector<std::pair<std::string, Tensor>> running;
  for (auto& [name, buffer] : model->named_buffers()) {
    if (buffer->dtype() == DType::Float32) {
      before[name] = buffer->to_vector();
      running.emplace_back(name, *buffer);
    }
  }
  const StepResult result = trainer.step(fixture.tensor("images"), fixture.tensor("labels"),
                                         static_cast<float>(fixture.number("lr")));
  EXPECT_EQ(result.micro_batches, split_of(fixture));
  expect_loss(result.loss, fixture.values("loss")[0],
              std::string("resnet20 ") + accumulation_name(GetParam()));

  const std::string mode = accumulation_name(GetParam());
  log_worst("resnet20 " + mode + " parameters",
            expect_update_close(parameter_tensors(*model), before, fixture, "after.", kUpdateRtol),
            kUpdateRtol);
  log_worst("resnet20 " + mode + " BN running mean/var",
            expect_update_close(running, before, fixture, "after.", kRunningStatRtol),
            kRunningStatRtol);
  for (auto& [name, buffer] : model->named_buffers()) {
    if (buffer->dtype() != DType::Int32) continue;
    EXPECT_EQ(buffer->to_vector_int(), fixture.tensor("after." + name).to_vector_int())
        << name << ": num_batches_tracked counts batches, not micro-batches";
  }
}

// ---- reduction mean / sum with ignore_index --------------------------------------------------

// conv1 3->8 (3x3, pad 1), relu, conv2 8->4 (1x1): logits [N, 4, H, W] (step_cases.py
// segmenter()).
std::shared_ptr<Module> segmenter() {
  auto net = std::make_shared<Sequential>();
  net->add("conv1", std::make_shared<Conv2d>(3, 8, 3, 1, 1));
  net->add("relu", std::make_shared<ReLU>());
  net->add("conv2", std::make_shared<Conv2d>(8, 4, 1));
  return net;
}

TEST_P(TorchStep, IgnoreIndexCountsOnlyValidLabelsForMeanAndSumStaysASum) {
  const Fixture fixture("step_segment_ignore.safetensors");
  const Tensor& labels = fixture.tensor("labels");
  expect_sensitive(fixture, kUpdateRtol);
  for (const std::string reduction : {"mean", "sum"}) {
    SCOPED_TRACE("reduction " + reduction);
    std::shared_ptr<Module> model = segmenter();
    load_into(strip_prefix(fixture, "init."), model_state(*model));
    TrainerOptions options = sgd_options(fixture, GetParam());
    options.loss.reduction = reduction == "mean" ? Reduction::Mean : Reduction::Sum;
    options.loss.label_smoothing =
        static_cast<float>(fixture.number(reduction + ".label_smoothing"));
    options.loss.ignore_index = static_cast<int>(fixture.number("ignore_index"));
    Trainer trainer(model, options);
    const auto before = parameter_values(*model);
    const StepResult result = trainer.step(fixture.tensor("images"), labels,
                                           static_cast<float>(fixture.number(reduction + ".lr")));
    EXPECT_EQ(result.micro_batches, split_of(fixture));
    expect_loss(result.loss, fixture.values(reduction + ".loss")[0],
                "segment " + reduction + " " + accumulation_name(GetParam()));
    log_worst("segment " + reduction + " " + accumulation_name(GetParam()),
              expect_update_close(parameter_tensors(*model), before, fixture, reduction + ".after.",
                                  kUpdateRtol),
              kUpdateRtol);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, TorchStep,
                         ::testing::Values(AccumulationMode::InPlace, AccumulationMode::Buffers),
                         mode_name);

}  // namespace
}  // namespace mb
