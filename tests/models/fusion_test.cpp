// Fusion of the memory-bound layers (layers/fusion.h): the zoo's models built fused (the
// default) and plain (ModelConfig::fuse = false, --no-fuse) from the same seed.
//
// Truth: the plain model, whose layers each run on their own (and are checked against
// PyTorch in tests/layers/torch_reference_test.cpp; resnet20 fused against a PyTorch step in
// tests/mbp/torch_step_reference_test.cpp). Fusion claims exactness (the same float
// expressions evaluated again), so outputs, every gradient and the running statistics must
// be equal bit for bit, not within a tolerance; and it claims memory: the allocator's peak
// of a training step must drop, by what the analytic trace says it saves.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "allocator/passthrough_allocator.h"
#include "engine/trainer.h"
#include "layers/batch_norm2d.h"
#include "layers/init.h"
#include "layers/softmax_cross_entropy.h"
#include "models/zoo.h"
#include "runtime/allocator_registry.h"
#include "runtime/memory_report.h"
#include "runtime/memory_resource.h"

namespace mb {
namespace {

struct Case {
  const char* name;
  std::int64_t size;
  std::int64_t classes;
};

std::shared_ptr<Module> build(const Case& c, bool fuse) {
  ModelConfig config;
  config.image_size = c.size;
  config.num_classes = c.classes;
  config.seed = 7;
  config.fuse = fuse;
  return build_model(c.name, config);
}

// Bitwise equality of two float tensors; reports the first mismatch.
void expect_bitwise_equal(const Tensor& fused, const Tensor& plain, const std::string& what) {
  ASSERT_TRUE(fused.defined() && plain.defined()) << what;
  ASSERT_EQ(fused.shape(), plain.shape()) << what;
  const std::vector<float> a = fused.to_vector();
  const std::vector<float> b = plain.to_vector();
  std::size_t mismatches = 0;
  std::size_t first = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0 && mismatches++ == 0) first = i;
  }
  EXPECT_EQ(mismatches, 0u) << what << ": " << mismatches << " of " << a.size()
                            << " values differ, first at " << first << ": fused "
                            << (a.empty() ? 0.0f : a[first]) << " vs plain "
                            << (b.empty() ? 0.0f : b[first]);
}

struct StepResult {
  Tensor logits;
  Tensor grad_input;
  float loss = 0.0f;
};

// Two training micro-batches (gradients accumulated) and one full-batch end: the engine's
// calls, so BatchNorm's pooled statistics are covered as well.
StepResult train_step(Module& model, const Case& c, const Tensor& input, const Tensor& labels) {
  model.begin_batch();
  StepResult result;
  for (int micro = 0; micro < 2; ++micro) {
    RunState state;
    state.sample_offset = micro * input.dim(0);
    result.logits = model.forward(input, state);
    LossResult loss = SoftmaxCrossEntropy().forward_backward(result.logits, labels);
    result.loss += loss.loss;
    BackwardState backward;
    backward.mode = micro == 0 ? GradientMode::Overwrite : GradientMode::Accumulate;
    result.grad_input = model.backward(loss.grad_logits, backward);
    model.commit_micro_batch();
  }
  model.end_batch();
  (void)c;
  return result;
}

class FusionExact : public ::testing::TestWithParam<Case> {};

TEST_P(FusionExact, TrainingStepsEqualThePlainLayersBitForBit) {
  const Case c = GetParam();
  const ModelInfo& info = find_model(c.name);
  std::shared_ptr<Module> fused = build(c, true);
  std::shared_ptr<Module> plain = build(c, false);

  Tensor input = Tensor::empty(Shape{3, info.in_channels, c.size, c.size});
  fill_uniform(input, 2.0f, 11, 0);
  TensorOptions label_options;
  label_options.dtype = DType::Int32;
  std::vector<std::int32_t> label_values;
  const std::int64_t label_count = info.segmentation ? 3 * c.size * c.size : 3;
  for (std::int64_t i = 0; i < label_count; ++i) {
    label_values.push_back(static_cast<std::int32_t>((i * 7 + 3) % c.classes));
  }
  const Tensor labels = Tensor::from_vector_int(
      label_values, info.segmentation ? Shape{3, c.size, c.size} : Shape{3});

  const StepResult a = train_step(*fused, c, input, labels);
  const StepResult b = train_step(*plain, c, input, labels);
  EXPECT_EQ(a.loss, b.loss) << c.name;
  expect_bitwise_equal(a.logits, b.logits, std::string(c.name) + " logits");
  expect_bitwise_equal(a.grad_input, b.grad_input, std::string(c.name) + " input gradient");
  const auto fused_params = fused->named_parameters();
  const auto plain_params = plain->named_parameters();
  ASSERT_EQ(fused_params.size(), plain_params.size());
  for (std::size_t i = 0; i < fused_params.size(); ++i) {
    ASSERT_EQ(fused_params[i].first, plain_params[i].first);
    expect_bitwise_equal(fused_params[i].second->grad, plain_params[i].second->grad,
                         std::string(c.name) + " grad " + fused_params[i].first);
  }
  const auto fused_buffers = fused->named_buffers();
  const auto plain_buffers = plain->named_buffers();
  ASSERT_EQ(fused_buffers.size(), plain_buffers.size());
  for (std::size_t i = 0; i < fused_buffers.size(); ++i) {
    if (fused_buffers[i].second->dtype() != DType::Float32) continue;
    expect_bitwise_equal(*fused_buffers[i].second, *plain_buffers[i].second,
                         std::string(c.name) + " buffer " + fused_buffers[i].first);
  }
  // Evaluation (running statistics, the fused activation in the inference kernel).
  RunState eval;
  eval.training = false;
  expect_bitwise_equal(fused->forward(input, eval), plain->forward(input, eval),
                       std::string(c.name) + " evaluation logits");
}

INSTANTIATE_TEST_SUITE_P(Zoo, FusionExact,
                         ::testing::Values(Case{"resnet20", 16, 10}, Case{"resnet18", 32, 10},
                                           Case{"resnet50", 32, 10}, Case{"vgg11_bn", 32, 10},
                                           Case{"mobilenet_v2", 32, 10}, Case{"unet", 16, 3}),
                         [](const ::testing::TestParamInfo<Case>& param) {
                           return std::string(param.param.name);
                         });

// The bytes per sample of a training step, measured by the production probe (as in
// tests/models/memory_estimate_test.cpp: a pass-through allocator, probes at 16 and 18).
std::size_t measured_bytes_per_sample(const Case& c, bool fuse, std::size_t* analytic) {
  const ModelInfo& info = find_model(c.name);
  ScopedAllocator exact(Device::cpu(),
                        std::make_shared<PassThroughAllocator>(make_host_memory_resource()));
  TrainerOptions options;
  options.planner.min_micro_batch = 16;
  Trainer trainer(build(c, fuse), options);
  const Shape sample{info.in_channels, c.size, c.size};
  const Shape label = info.segmentation ? Shape{c.size, c.size} : Shape{};
  const MemoryProfile profile = trainer.measure(sample, label);
  *analytic = profile.analytic_bytes_per_sample;
  return profile.bytes_per_sample;
}

class FusionMemory : public ::testing::TestWithParam<Case> {};

TEST_P(FusionMemory, AStepKeepsLessPerSampleByWhatTheTracePredicts) {
  const Case c = GetParam();
  std::size_t fused_analytic = 0;
  std::size_t plain_analytic = 0;
  const double fused = static_cast<double>(measured_bytes_per_sample(c, true, &fused_analytic));
  const double plain = static_cast<double>(measured_bytes_per_sample(c, false, &plain_analytic));
  const double measured_saving = plain - fused;
  const double predicted_saving =
      static_cast<double>(plain_analytic) - static_cast<double>(fused_analytic);
  // Every zoo model with BatchNorm keeps an activation's output per fused pair: at least a
  // tenth of what the plain model keeps per sample.
  EXPECT_GT(measured_saving, 0.10 * plain)
      << c.name << ": fused " << format_bytes(static_cast<std::size_t>(fused)) << " vs plain "
      << format_bytes(static_cast<std::size_t>(plain)) << " per sample";
  EXPECT_NEAR(measured_saving, predicted_saving, 0.25 * predicted_saving)
      << c.name << ": the trace predicts "
      << format_bytes(static_cast<std::size_t>(predicted_saving))
      << " saved per sample, the probe measured "
      << format_bytes(static_cast<std::size_t>(measured_saving));
}

INSTANTIATE_TEST_SUITE_P(Zoo, FusionMemory,
                         ::testing::Values(Case{"resnet18", 32, 10}, Case{"resnet50", 32, 10},
                                           Case{"vgg11_bn", 32, 10}, Case{"mobilenet_v2", 32, 10}),
                         [](const ::testing::TestParamInfo<Case>& param) {
                           return std::string(param.param.name);
                         });

TEST(Fusion, RecomputingAfterBackwardNamesTheOrderToFollow) {
  BatchNorm2d bn(2);
  bn.set_activation(BnActivation::ReLU);
  Tensor x = Tensor::empty(Shape{2, 2, 3, 3});
  fill_uniform(x, 1.0f, 3, 0);
  RunState state;
  Tensor y = bn.forward(x, state);
  EXPECT_TRUE(bn.can_recompute(y));
  expect_bitwise_equal(bn.recompute_output(), y, "recomputed output");
  BackwardState backward;
  bn.backward(Tensor::full(y.shape(), 1.0f), backward);
  EXPECT_FALSE(bn.can_recompute(y));
  try {
    bn.recompute_output();
    FAIL() << "recompute_output after backward did not throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("before this layer's backward"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace mb
