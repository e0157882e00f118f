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
#include <memory>
#include <string>

#include "layers/batch_norm2d.h"
#include "layers/init.h"
#include "models/zoo.h"
#include "runtime/memory_report.h"
#include "tests/models/step_compare.h"

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

class FusionExact : public ::testing::TestWithParam<Case> {};

TEST_P(FusionExact, TrainingStepsEqualThePlainLayersBitForBit) {
  const Case c = GetParam();
  const ModelInfo& info = find_model(c.name);
  std::shared_ptr<Module> fused = build(c, true);
  std::shared_ptr<Module> plain = build(c, false);

  const testing::Batch batch = testing::small_batch(info, c.size, c.classes);
  testing::expect_identical_training(*fused, *plain, batch.input, batch.labels, c.name);
}

INSTANTIATE_TEST_SUITE_P(Zoo, FusionExact,
                         ::testing::Values(Case{"resnet20", 16, 10}, Case{"resnet18", 32, 10},
                                           Case{"resnet50", 32, 10}, Case{"vgg11_bn", 32, 10},
                                           Case{"mobilenet_v2", 32, 10}, Case{"unet", 16, 3}),
                         [](const ::testing::TestParamInfo<Case>& param) {
                           return std::string(param.param.name);
                         });

// Bytes per sample measured by the production probe (tests/models/step_compare.h).
std::size_t measured_bytes_per_sample(const Case& c, bool fuse, std::size_t* analytic) {
  const ModelInfo& info = find_model(c.name);
  const Shape sample{info.in_channels, c.size, c.size};
  const Shape label = info.segmentation ? Shape{c.size, c.size} : Shape{};
  const MemoryProfile profile = testing::measure_training_memory(build(c, fuse), sample, label);
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
  testing::expect_bitwise_equal(bn.recompute_output(), y, "recomputed output");
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
