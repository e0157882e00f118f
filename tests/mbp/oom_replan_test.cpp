// BatchNorm and an OutOfMemory re-plan in the middle of a step. An allocator refuses one
// allocation inside a chosen micro-batch, after the model's last BatchNorm has gathered
// that micro-batch's sums, so the engine must drop them (Module::abort_micro_batch) before
// it redoes the work: InPlace redoes the batch from its first sample, Buffers redoes the
// failing micro-batch.
//
// Two places to fail: in forward after the last BatchNorm, and at the micro-batch's last
// allocation, in backward, after the loss has added the micro-batch's totals (which must not
// reach the step's loss then).
//
// The truth is an undisturbed step driven by hand over the split the engine ended with:
// each micro-batch's forward (training), mean loss and backward, its gradient added with
// factor n_k / B in fp64, the BatchNorm hooks begin / commit / end, and plain SGD
// p -= lr * g. The engine must reach the same parameters (fp32 round-off of a different
// summation order: rtol 2e-5, atol 2e-6, as in exactness_test.cpp) and the same running
// statistics (they come from fp64 sums, so 1e-6). A micro-batch's statistics counted twice
// move the running mean by about 1e-2 here.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"
#include "runtime/allocator_registry.h"
#include "tests/mbp/oom_replan_util.h"

namespace mb {
namespace {

using testing::bn_model;
using testing::BnModel;
using testing::Case;
using testing::expect_close;
using testing::FailAt;
using testing::first_layer_running_statistics;
using testing::InjectingAllocator;
using testing::Outcome;
using testing::outcome;
using testing::reference_step;

constexpr std::int64_t kBatch = testing::kBnBatch;
constexpr std::int64_t kMicroBatch = testing::kBnMicroBatch;
constexpr float kLr = testing::kBnLr;

TrainerOptions step_options(AccumulationMode mode) {
  TrainerOptions options;
  options.micro_batch = kMicroBatch;
  options.accumulation = mode;
  options.optimizer.momentum = 0.0f;
  return options;
}

// The allocations micro-batch `target` makes in an undisturbed step.
int allocations_in_micro_batch(const testing::Batch& batch, const Case& c) {
  auto counting = std::make_shared<InjectingAllocator>(
      std::make_shared<PoolAllocator>(make_host_memory_resource(), PoolOptions{}),
      c.failing_micro_batch, c.at);
  counting->armed = false;
  ScopedAllocator scope(Device::cpu(), counting);
  BnModel m = bn_model();
  counting->watched = m.bn2.get();
  Trainer trainer(m.net, step_options(c.mode));
  trainer.step(batch.images, batch.labels, kLr);
  return counting->allocations_in_target;
}

class OomReplan : public ::testing::TestWithParam<Case> {};

TEST_P(OomReplan, AbortedMicroBatchLeavesNoTraceInParametersOrRunningStatistics) {
  const Case c = GetParam();
  const testing::Batch batch = testing::make_batch(kBatch, 21);
  const Outcome expected = reference_step(batch, c.final_split);

  const int last_allocation = allocations_in_micro_batch(batch, c);
  auto injecting = std::make_shared<InjectingAllocator>(
      std::make_shared<PoolAllocator>(make_host_memory_resource(), PoolOptions{}),
      c.failing_micro_batch, c.at);
  injecting->fail_at_allocation = last_allocation;
  ScopedAllocator scope(Device::cpu(), injecting);
  BnModel m = bn_model();
  injecting->watched = m.bn2.get();
  TrainerOptions options = step_options(c.mode);
  std::vector<std::string> log;
  options.log = [&log](const std::string& line) { log.push_back(line); };
  Trainer trainer(m.net, options);
  const StepResult result = trainer.step(batch.images, batch.labels, kLr);

  ASSERT_TRUE(injecting->fired) << "the injected OutOfMemory never happened";
  // 8 samples x 8 x 8 pixels of bn2's sums were pending when the allocation failed.
  EXPECT_EQ(injecting->pending_at_failure, kMicroBatch * 8 * 8);
  EXPECT_EQ(result.replans, 1);
  EXPECT_EQ(result.micro_batches, c.final_split);
  bool redo_logged = false;
  for (const auto& line : log) redo_logged |= line.find("redoes the batch") != std::string::npos;
  EXPECT_EQ(redo_logged, c.mode == AccumulationMode::InPlace && c.failing_micro_batch > 0);

  // The loss counts every sample once: an aborted micro-batch's totals (added before its
  // backward ran out of memory) are not in it.
  EXPECT_NEAR(result.loss, expected.loss, 1e-6 * expected.loss) << c.name;

  const Outcome actual = outcome(m);
  testing::expect_parameters_close(actual.parameters, expected.parameters, 2e-5, 2e-6, c.name);
  expect_close(actual.running, expected.running, 1e-6, std::string(c.name) + " running stats");
  expect_close({actual.running[0], actual.running[1]}, first_layer_running_statistics(batch), 1e-6,
               std::string(c.name) + " bn1 running stats by formula");
  EXPECT_EQ(actual.batches_tracked, (std::vector<std::int32_t>{1, 1})) << c.name;
  EXPECT_EQ(m.bn1->accumulated_count(), 0);
  EXPECT_EQ(m.bn2->accumulated_count(), 0);
}

// Note: InPlace after micro-batch 0 begins the batch again, which clears BatchNorm's sums
// as well; so only the cases that keep earlier micro-batches (Buffers) or fail in the first
// one rely on abort_micro_batch alone.
INSTANTIATE_TEST_SUITE_P(
    BatchNorm, OomReplan,
    ::testing::Values(Case{AccumulationMode::InPlace, 1, {4, 4, 4, 4}, "InPlaceSecond"},
                      Case{AccumulationMode::Buffers, 1, {8, 4, 4}, "BuffersSecond"},
                      Case{AccumulationMode::InPlace, 0, {4, 4, 4, 4}, "InPlaceFirst"},
                      Case{AccumulationMode::Buffers, 0, {4, 4, 4, 4}, "BuffersFirst"},
                      Case{AccumulationMode::Buffers,
                           1,
                           {8, 4, 4},
                           "BuffersSecondInBackward",
                           FailAt::LastAllocation},
                      Case{AccumulationMode::InPlace,
                           0,
                           {4, 4, 4, 4},
                           "InPlaceFirstInBackward",
                           FailAt::LastAllocation}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mb
