// Segment recomputation (Sequential::set_recompute, --recompute-segments): the zoo's ResNets
// built with each residual stage recomputed in backward, against the same model keeping its
// stages (ModelConfig::recompute_segments false), from the same seed.
//
// Truth: the model that keeps its activations (itself checked against PyTorch in
// tests/mbp/torch_step_reference_test.cpp). Recomputation runs the same forward again, so
// outputs, gradients and running statistics must be equal bit for bit; BatchNorm must count
// its statistics once although its forward runs twice. Memory: the allocator's bytes per
// sample must drop, agree with the analytic trace within the tolerance the whole zoo meets
// (tests/models/memory_estimate_test.cpp), and the planner's "instead of about N" must
// agree with a plan actually made without recomputation under the same cap.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"
#include "models/zoo.h"
#include "runtime/allocator_registry.h"
#include "runtime/memory_report.h"
#include "runtime/memory_resource.h"
#include "tests/models/step_compare.h"

namespace mb {
namespace {

struct Case {
  const char* name;
  std::int64_t size;
};

std::shared_ptr<Module> build(const Case& c, bool recompute, bool fuse = true) {
  ModelConfig config;
  config.image_size = c.size;
  config.num_classes = 10;
  config.seed = 7;
  config.fuse = fuse;
  config.recompute_segments = recompute;
  return build_model(c.name, config);
}

std::string case_name(const ::testing::TestParamInfo<Case>& param) {
  return std::string(param.param.name) + "_" + std::to_string(param.param.size);
}

class RecomputeExact : public ::testing::TestWithParam<Case> {};

TEST_P(RecomputeExact, TrainingStepsEqualKeepingTheStagesBitForBit) {
  const Case c = GetParam();
  const testing::Batch batch = testing::small_batch(find_model(c.name), c.size, 10);
  for (const bool fuse : {true, false}) {
    std::shared_ptr<Module> recomputed = build(c, true, fuse);
    std::shared_ptr<Module> kept = build(c, false, fuse);
    testing::expect_identical_training(*recomputed, *kept, batch.input, batch.labels,
                                       std::string(c.name) + (fuse ? " fused" : " plain"));
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, RecomputeExact,
                         ::testing::Values(Case{"resnet20", 16}, Case{"resnet18", 32},
                                           Case{"resnet50", 32}),
                         case_name);

class RecomputeMemory : public ::testing::TestWithParam<Case> {};

TEST_P(RecomputeMemory, AStepKeepsLessPerSampleAndTheTraceSaysHowMuch) {
  const Case c = GetParam();
  const Shape sample{3, c.size, c.size};
  const MemoryProfile recomputed = testing::measure_training_memory(build(c, true), sample, {});
  const MemoryProfile kept = testing::measure_training_memory(build(c, false), sample, {});
  const double measured = static_cast<double>(recomputed.bytes_per_sample);
  const double analytic = static_cast<double>(recomputed.analytic_bytes_per_sample);
  EXPECT_LE(std::fabs(analytic - measured), 0.10 * measured)
      << c.name << ": analytic " << format_bytes(recomputed.analytic_bytes_per_sample)
      << " vs measured " << format_bytes(recomputed.bytes_per_sample) << " per sample";
  // Only the stages' inputs stay between forward and backward, and one stage's activations
  // at a time in backward: less per sample, by what the two traces say.
  const double measured_saving = static_cast<double>(kept.bytes_per_sample) - measured;
  const double predicted_saving = static_cast<double>(kept.analytic_bytes_per_sample) - analytic;
  EXPECT_GT(measured_saving, 0.05 * static_cast<double>(kept.bytes_per_sample))
      << c.name << ": recomputing " << format_bytes(recomputed.bytes_per_sample) << " vs keeping "
      << format_bytes(kept.bytes_per_sample) << " per sample";
  EXPECT_NEAR(measured_saving, predicted_saving, 0.35 * predicted_saving)
      << c.name << ": the traces predict "
      << format_bytes(static_cast<std::size_t>(predicted_saving))
      << " saved per sample, the probe measured "
      << format_bytes(static_cast<std::size_t>(measured_saving));
  // The cost function the planner logs: the trace of this model, recomputing and not.
  const std::shared_ptr<Module> model = build(c, true);
  const RecomputeCost cost = recompute_cost(*model, sample);
  EXPECT_EQ(cost.bytes_per_sample, recomputed.analytic_bytes_per_sample);
  EXPECT_EQ(cost.bytes_per_sample_without, training_bytes_per_sample(*model, sample, false));
}

INSTANTIATE_TEST_SUITE_P(Zoo, RecomputeMemory,
                         ::testing::Values(Case{"resnet20", 32}, Case{"resnet18", 64},
                                           Case{"resnet50", 64}),
                         case_name);

TEST(Recompute, RecomputedFlopsAreTheStagesForwardFlops) {
  // Independently of the trace: walk the model's top level, shapes propagated, and add the
  // forward FLOPs of its residual stages (layer1 ... layer4).
  const Shape sample{3, 64, 64};
  std::shared_ptr<Module> model = build(Case{"resnet50", 64}, true);
  std::int64_t stages = 0;
  Shape shape{1, 3, 64, 64};
  for (const auto& [name, child] : model->children()) {
    if (name.rfind("layer", 0) == 0) stages += child->forward_flops(shape);
    shape = child->output_shape(shape);
  }
  ASSERT_GT(stages, 0);
  const RecomputeCost cost = recompute_cost(*model, sample);
  EXPECT_EQ(cost.recomputed_flops, stages);
  EXPECT_EQ(cost.forward_flops, model->forward_flops(Shape{1, 3, 64, 64}));
  EXPECT_EQ(recompute_cost(*build(Case{"resnet50", 64}, false), sample).recomputed_flops, 0);
}

// The planner's line for a plan under `cap`, with the log of the planning.
struct CappedPlan {
  std::int64_t micro_batch = 0;
  std::vector<std::string> log;
};

CappedPlan plan_under_cap(bool recompute, std::size_t cap) {
  PoolOptions pool_options;
  pool_options.capacity = cap;
  ScopedAllocator scope(Device::cpu(),
                        std::make_shared<PoolAllocator>(make_host_memory_resource(), pool_options));
  CappedPlan result;
  TrainerOptions options;
  options.log = [&result](const std::string& line) { result.log.push_back(line); };
  Trainer trainer(build(Case{"resnet20", 32}, recompute), options);
  result.micro_batch = trainer.plan(512, Shape{3, 32, 32}, Shape{}).micro_batch;
  return result;
}

TEST(Recompute, ThePlannerLogsTheComputeItCostsAndTheMicroBatchItBuys) {
  // Under 32 MiB (a 2 MiB and a 20 MiB segment and 10 MiB of headroom) recomputation buys
  // ResNet-20 nothing: its 716 KiB per sample would fit 39, but the blocks of 2 MiB and more
  // find no room past 32 samples, the size that fits without it. Under 64 MiB: 72 vs 64.
  const std::size_t cap = std::size_t{64} << 20;
  const CappedPlan recomputed = plan_under_cap(true, cap);
  const CappedPlan kept = plan_under_cap(false, cap);
  std::string line;
  for (const std::string& entry : recomputed.log) {
    if (entry.find("segment recomputation") != std::string::npos) line = entry;
  }
  ASSERT_FALSE(line.empty()) << "no planner line on segment recomputation";
  for (const std::string& entry : kept.log) {
    EXPECT_EQ(entry.find("segment recomputation"), std::string::npos) << entry;
  }
  std::smatch match;
  ASSERT_TRUE(
      std::regex_search(line, match, std::regex(R"(-> micro-batch (\d+) instead of about (\d+))")))
      << line;
  EXPECT_EQ(std::stoll(match[1]), recomputed.micro_batch) << line;
  // The estimate without recomputation against the plan really made without it.
  const double estimated = std::stod(match[2]);
  EXPECT_NEAR(estimated, static_cast<double>(kept.micro_batch),
              0.15 * static_cast<double>(kept.micro_batch))
      << line << "; planned without recomputation: " << kept.micro_batch;
  EXPECT_GT(recomputed.micro_batch, kept.micro_batch) << line;
  // ResNet-20's three stages are all of its convolutions but the first: about a third more.
  ASSERT_TRUE(std::regex_search(line, match, std::regex(R"(\(\+([0-9.]+)% of a step)"))) << line;
  EXPECT_NEAR(std::stod(match[1]), 100.0 / 3.0, 2.0) << line;
}

TEST(Recompute, ModelsWithoutResidualStagesRefuseItNamingTheFix) {
  ModelConfig config;
  config.recompute_segments = true;
  try {
    build_model("vgg11_bn", config);
    FAIL() << "vgg11_bn accepted recompute_segments";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--recompute-segments"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mb
