// OutOfMemory re-planning on CUDA (label gpu; skips without a device): the GPU half of
// memory_limit_test.cpp (a capped arena) and oom_replan_test.cpp (BatchNorm and an OOM in
// the middle of a step).
//
// 1. A CUDA arena capped below what LeNet-5's full batch needs: a step with the micro-batch
//    fixed at the whole batch runs out of device memory, re-plans smaller, and reaches the
//    parameters of the same training uncapped on the GPU and on the CPU. The cap comes from
//    a measured uncapped step: the fixed state plus 40% of the step's other tensors, cuDNN's
//    workspaces left out (their size follows the algorithm cuDNN is given room for, so they
//    cannot make the full batch fit or fail). So the full batch cannot fit whatever cuDNN
//    picks.
// 2. An allocator on a CUDA pool refuses one allocation inside a chosen micro-batch, after
//    the model's last BatchNorm has gathered that micro-batch's sums: parameters and running
//    statistics equal a step driven by hand on the CPU over the split the engine ended with
//    (oom_replan_test.cpp's truth, unchanged), and bn1's running statistics equal
//    full-batch BatchNorm's by formula.
//
// Tolerances: TF32 off (full fp32 on both backends). The backends sum in different orders
// (cuDNN's algorithms, chosen by the memory available, against im2col + GEMM), so where the
// CPU contract asks rtol 2e-5 / atol 2e-6 of one backend, here parameters are compared with
// rtol 1e-4, atol 1e-5: fp32 round-off of the gradients moves a parameter by lr * |g| *
// 1e-6, about 1e-8 here, and a ReLU input within rounding of 0 that takes the other side
// of its mask on one backend by less than 1e-6; a micro-batch skipped or counted twice moves
// parameters by 1e-4 to 1e-3. Running statistics come from fp64 sums of inputs that differ
// by fp32 round-off: 1e-5 relative (a micro-batch counted twice moves them by about 1e-2).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"
#include "runtime/allocator_registry.h"
#include "runtime/context.h"
#include "runtime/memory_resource.h"
#include "tests/mbp/oom_replan_util.h"
#include "tests/test_util.h"

namespace mb {
namespace {

const Device kGpu = Device::cuda(0);

// A pool over device 0's memory; capacity 0: the default (the device's free memory minus a
// margin).
std::shared_ptr<PoolAllocator> cuda_pool(std::size_t capacity) {
  PoolOptions options;
  options.capacity = capacity;
  return std::make_shared<PoolAllocator>(make_cuda_memory_resource(0), options);
}

// --- 1. A capped CUDA arena --------------------------------------------------------------

constexpr std::int64_t kBatch = 128;
constexpr float kLr = 0.05f;
constexpr int kSteps = 2;

TrainerOptions lenet_options(const Device& device, AccumulationMode mode) {
  TrainerOptions options;
  options.device = device;
  options.micro_batch = kBatch;  // fixed at the whole batch: only a re-plan can split it
  options.accumulation = mode;
  options.optimizer.momentum = 0.9f;
  return options;
}

struct TrainingRun {
  std::vector<std::vector<float>> parameters;
  std::vector<StepResult> steps;
  std::vector<std::string> log;
};

// kSteps steps of LeNet-5 on `device` through the allocator installed for it.
TrainingRun train_lenet(const Device& device, AccumulationMode mode) {
  auto model = build_model("lenet5");
  TrainerOptions options = lenet_options(device, mode);
  TrainingRun run;
  options.log = [&run](const std::string& line) { run.log.push_back(line); };
  Trainer trainer(model, options);
  for (int s = 0; s < kSteps; ++s) {
    const testing::Batch batch = testing::mnist_like_batch(kBatch, 40 + s);
    run.steps.push_back(trainer.step(batch.images, batch.labels, kLr));
  }
  run.parameters = testing::parameter_values(*model);
  return run;
}

struct StepBytes {
  std::size_t fixed = 0;  // parameters, gradients, optimizer state
  std::size_t other = 0;  // a full-batch step's peak above them, cuDNN's workspaces left out
};

// One uncapped full-batch step of LeNet-5 in a fresh CUDA pool, read from the pool's events:
// each Alloc / Free event carries the bytes allocated in all and under its own tag after it.
StepBytes measure_full_batch_step(AccumulationMode mode) {
  auto pool = cuda_pool(0);
  ScopedAllocator scope(kGpu, pool);
  Trainer trainer(build_model("lenet5"), lenet_options(kGpu, mode));
  StepBytes bytes;
  bytes.fixed = pool->report().allocated;
  const testing::Batch batch = testing::mnist_like_batch(kBatch, 40);
  trainer.step(batch.images, batch.labels, kLr);
  std::size_t workspace = 0, peak = 0;
  for (const PoolEvent& event : pool->events()) {
    if (event.kind != PoolEventKind::Alloc && event.kind != PoolEventKind::Free) continue;
    if (event.tag == MemoryTag::Workspace) workspace = event.tag_allocated;
    peak = std::max(peak, event.allocated - std::min(workspace, event.allocated));
  }
  bytes.other = peak > bytes.fixed ? peak - bytes.fixed : 0;
  return bytes;
}

TEST(OomReplanGpu, CappedArenaRunsOutOfMemoryReplansAndMatchesUncappedAndCpu) {
  MB_SKIP_WITHOUT_CUDA();
  testing::ScopedCudaMath fp32(/*deterministic=*/false);
  for (const AccumulationMode mode : {AccumulationMode::InPlace, AccumulationMode::Buffers}) {
    const std::string name = accumulation_name(mode);
    SCOPED_TRACE(name);
    const StepBytes measured = measure_full_batch_step(mode);
    ASSERT_GT(measured.other, std::size_t{1} << 20)
        << "a full-batch step of LeNet-5 used under 1 MiB beside its fixed state";
    const std::size_t cap = measured.fixed + measured.other * 2 / 5;

    auto pool = cuda_pool(cap);
    TrainingRun capped;
    {
      ScopedAllocator scope(kGpu, pool);
      capped = train_lenet(kGpu, mode);
    }
    ASSERT_EQ(capped.steps.size(), static_cast<std::size_t>(kSteps));
    EXPECT_GE(capped.steps[0].replans, 1)
        << "the full batch ran under a cap of " << format_bytes(cap) << " (fixed "
        << format_bytes(measured.fixed) << ", step " << format_bytes(measured.other) << ")";
    EXPECT_EQ(capped.steps[1].replans, 0) << "the smaller plan should stick";
    for (const StepResult& step : capped.steps) {
      std::int64_t total = 0;
      for (const std::int64_t n : step.micro_batches) {
        EXPECT_LT(n, kBatch);
        total += n;
      }
      EXPECT_EQ(total, kBatch) << "a sample was skipped or counted twice";
      EXPECT_TRUE(std::isfinite(step.loss));
    }
    EXPECT_GE(pool->stats().ooms, 1u);
    EXPECT_LE(pool->peak_reserved(), cap) << "the arena grew past its cap";
    bool logged = false;
    for (const auto& line : capped.log) logged |= line.find("re-plan") != std::string::npos;
    EXPECT_TRUE(logged) << "no re-plan was logged";

    TrainingRun uncapped;
    {
      ScopedAllocator scope(kGpu, cuda_pool(0));
      uncapped = train_lenet(kGpu, mode);
    }
    EXPECT_EQ(uncapped.steps[0].micro_batches, std::vector<std::int64_t>{kBatch});
    const TrainingRun cpu = train_lenet(Device::cpu(), mode);
    testing::expect_parameters_close(capped.parameters, uncapped.parameters, 1e-4, 1e-5,
                                     "capped GPU against uncapped GPU, " + name);
    testing::expect_parameters_close(capped.parameters, cpu.parameters, 1e-4, 1e-5,
                                     "capped GPU against CPU, " + name);
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(capped.steps[s].loss, cpu.steps[s].loss, 1e-5 * std::fabs(cpu.steps[s].loss))
          << "step " << s;
    }
  }
}

// --- 2. BatchNorm and an OutOfMemory in the middle of a step -----------------------------

using testing::Case;
using testing::kBnBatch;
using testing::kBnLr;
using testing::kBnMicroBatch;

class OomReplanBatchNormGpu : public ::testing::TestWithParam<Case> {};

TEST_P(OomReplanBatchNormGpu, AbortedMicroBatchLeavesNoTraceInParametersOrRunningStatistics) {
  MB_SKIP_WITHOUT_CUDA();
  testing::ScopedCudaMath fp32(/*deterministic=*/false);
  const Case c = GetParam();
  const testing::Batch batch = testing::make_batch(kBnBatch, 21);
  const testing::Outcome expected = testing::reference_step(batch, c.final_split);
  const std::vector<std::vector<float>> first_layer =
      testing::first_layer_running_statistics(batch);

  // PoolDelegate passes record_stream on to the CUDA pool: the Feeder records a staged input
  // on the compute stream, so the pool does not hand it to the next copy while a kernel reads.
  auto injecting =
      std::make_shared<testing::InjectingAllocator>(cuda_pool(0), c.failing_micro_batch, c.at);
  ScopedAllocator scope(kGpu, injecting);
  testing::BnModel m = testing::bn_model();
  injecting->watched = m.bn2.get();
  TrainerOptions options;
  options.device = kGpu;
  options.micro_batch = kBnMicroBatch;
  options.accumulation = c.mode;
  options.optimizer.momentum = 0.0f;
  std::vector<std::string> log;
  options.log = [&log](const std::string& line) { log.push_back(line); };
  Trainer trainer(m.net, options);
  const StepResult result = trainer.step(batch.images, batch.labels, kBnLr);

  ASSERT_TRUE(injecting->fired) << "the injected OutOfMemory never happened";
  // 8 samples x 8 x 8 pixels of bn2's sums were pending when the allocation failed.
  EXPECT_EQ(injecting->pending_at_failure, kBnMicroBatch * 8 * 8);
  EXPECT_EQ(result.replans, 1);
  EXPECT_EQ(result.micro_batches, c.final_split);
  bool redo_logged = false;
  for (const auto& line : log) redo_logged |= line.find("redoes the batch") != std::string::npos;
  EXPECT_EQ(redo_logged, c.mode == AccumulationMode::InPlace && c.failing_micro_batch > 0);

  const testing::Outcome actual = testing::outcome(m);
  testing::expect_parameters_close(actual.parameters, expected.parameters, 1e-4, 1e-5, c.name);
  testing::expect_close(actual.running, expected.running, 1e-5,
                        std::string(c.name) + " running stats");
  testing::expect_close({actual.running[0], actual.running[1]}, first_layer, 1e-5,
                        std::string(c.name) + " bn1 running stats by formula");
  EXPECT_EQ(actual.batches_tracked, (std::vector<std::int32_t>{1, 1})) << c.name;
  EXPECT_EQ(m.bn1->accumulated_count(), 0);
  EXPECT_EQ(m.bn2->accumulated_count(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    BatchNorm, OomReplanBatchNormGpu,
    ::testing::Values(Case{AccumulationMode::InPlace, 1, {4, 4, 4, 4}, "InPlaceSecond"},
                      Case{AccumulationMode::Buffers, 1, {8, 4, 4}, "BuffersSecond"},
                      Case{AccumulationMode::InPlace, 0, {4, 4, 4, 4}, "InPlaceFirst"},
                      Case{AccumulationMode::Buffers, 0, {4, 4, 4, 4}, "BuffersFirst"}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mb
