// The Planner (engine/planner.h): splits, the arithmetic of an automatic plan against a
// hand-computed report, verification and re-planning through a measuring callback whose
// costs the test defines (so the expected sizes follow from those costs, not from the
// planner), and the OutOfMemory floor.
#include "engine/planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"
#include "engine/trainer.h"
#include "models/zoo.h"

namespace mb {
namespace {

TEST(Planner, SplitsAreExactAndKeepEveryMicroBatchAtTheMinimum) {
  EXPECT_EQ(split_batch(16, 7), (std::vector<std::int64_t>{7, 7, 2}));
  EXPECT_EQ(split_batch(15, 7), (std::vector<std::int64_t>{7, 7, 1}));
  EXPECT_EQ(split_batch(15, 7, 2), (std::vector<std::int64_t>{7, 6, 2}));
  EXPECT_EQ(split_batch(5, 2, 2), (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(split_batch(4, 16), (std::vector<std::int64_t>{4}));
  // ResNet-18 at 32x32 needs 8 (its layer4 is 1x1): [5, 5, 4, 2] is refused as a split
  // (micro-batches below the minimum); 18 by 9 is even; 26 by 10 lends 2 of the last full
  // micro-batch to the remainder of 6; 20 by 9 cannot lend (9 - 6 < 8) and merges.
  EXPECT_THROW(split_batch(16, 5, 8), InvalidArgument);
  EXPECT_EQ(split_batch(18, 9, 8), (std::vector<std::int64_t>{9, 9}));
  EXPECT_EQ(split_batch(26, 10, 8), (std::vector<std::int64_t>{10, 8, 8}));
  EXPECT_EQ(split_batch(20, 9, 8), (std::vector<std::int64_t>{9, 11}));
  EXPECT_EQ(split_batch(4, 16, 8), (std::vector<std::int64_t>{4})) << "the whole batch is smaller";
  for (std::int64_t batch : {1, 7, 16, 17, 100, 1001}) {
    for (std::int64_t m : {1, 2, 3, 8, 9, 31}) {
      for (std::int64_t min : {1, 2, 8}) {
        if (m < min) continue;
        const std::vector<std::int64_t> sizes = split_batch(batch, m, min);
        std::int64_t sum = 0;
        for (std::int64_t s : sizes) {
          sum += s;
          if (batch >= min) {
            EXPECT_GE(s, min) << batch << " by " << m << ", min " << min;
          }
        }
        EXPECT_EQ(sum, batch);
        EXPECT_EQ(split_count(batch, m, min), static_cast<std::int64_t>(sizes.size()));
      }
    }
  }
  EXPECT_THROW(split_batch(4, 0), InvalidArgument);
  // A plan of 2^62 samples is counted, not built.
  const std::int64_t huge = std::int64_t{1} << 62;
  EXPECT_EQ(split_count(huge, 3), huge / 3 + 1);
  EXPECT_EQ(describe_split(huge, 3, 1).substr(0, 20), "[3, 3, 3, 3, 3, 3, .");
}

// The minimum micro-batch for batch statistics: ceil(8 / (H x W at the deepest BN)), at
// least 2 (hand-computed), and what the trace reports for zoo models (their published
// geometry: ResNet downsamples by 32, so its layer4 is 1x1 at 32x32 and 7x7 at 224x224).
TEST(Planner, MinimumMicroBatchGivesTheDeepestBatchNormEightValuesPerChannel) {
  EXPECT_EQ(min_micro_batch_for_statistics(0), 1) << "no batch statistics";
  EXPECT_EQ(min_micro_batch_for_statistics(1), 8);
  EXPECT_EQ(min_micro_batch_for_statistics(3), 3);
  EXPECT_EQ(min_micro_batch_for_statistics(4), 2);
  EXPECT_EQ(min_micro_batch_for_statistics(49), 2);
  EXPECT_EQ(batch_statistics_values_per_sample(*build_model("resnet18"), Shape{3, 32, 32}), 1);
  EXPECT_EQ(batch_statistics_values_per_sample(*build_model("resnet18"), Shape{3, 224, 224}), 49);
  EXPECT_EQ(batch_statistics_values_per_sample(*build_model("resnet20"), Shape{3, 32, 32}), 64);
  EXPECT_EQ(batch_statistics_values_per_sample(*build_model("lenet5"), Shape{1, 28, 28}), 0);

  // The Trainer applies it: ResNet-18 at 32x32 cannot be split below 8 samples.
  TrainerOptions options;
  options.micro_batch = 4;
  std::vector<std::string> log;
  options.log = [&](const std::string& line) { log.push_back(line); };
  Trainer trainer(build_model("resnet18", ModelConfig{3, 32, 10, 1}), options);
  try {
    trainer.plan(16, Shape{3, 32, 32}, Shape{});
    FAIL() << "--micro-batch 4 was accepted for ResNet-18 at 32x32";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--micro-batch 8 or more"), std::string::npos) << e.what();
  }
  bool logged = false;
  for (const std::string& line : log) {
    logged = logged || line.find("at least 8 samples") != std::string::npos;
  }
  EXPECT_TRUE(logged) << "the planner decision is logged";
}

// cuDNN's legacy descriptors refuse tensors over 2^31 - 1 elements, so on CUDA the planner
// keeps the largest activation under that. Truth: torchvision's shapes (ResNet-18's conv1
// output is 64 x 112 x 112 per sample at 224 px, LeNet-5's conv1 output 6 x 28 x 28; VGG-16's
// 64 x 224 x 224 would allow 668 samples per micro-batch).
TEST(Planner, MicroBatchKeepsEveryTensorUnderTheElementLimit) {
  EXPECT_EQ(largest_tensor_values_per_sample(*build_model("resnet18"), Shape{3, 224, 224}),
            64 * 112 * 112);
  EXPECT_EQ(largest_tensor_values_per_sample(*build_model("lenet5"), Shape{1, 28, 28}),
            6 * 28 * 28);

  // The same path on the CPU with a small limit: LeNet-5 at most 37 samples per micro-batch.
  const std::int64_t limit = 6 * 28 * 28 * 37 + 100;
  TrainerOptions options;
  options.tensor_element_limit = limit;
  std::vector<std::string> log;
  options.log = [&](const std::string& line) { log.push_back(line); };
  Trainer trainer(build_model("lenet5"), options);
  const Plan& plan = trainer.plan(256, Shape{1, 28, 28}, Shape{});
  EXPECT_EQ(plan.micro_batch, 37);
  EXPECT_NE(plan.explanation.find("capped at 37"), std::string::npos) << plan.explanation;
  bool logged = false;
  for (const std::string& line : log) {
    logged = logged || line.find("micro-batches of at most 37 samples") != std::string::npos;
  }
  EXPECT_TRUE(logged) << "the planner decision is logged";
  const StepResult step =
      trainer.step(Tensor::zeros(Shape{100, 1, 28, 28}),
                   Tensor::from_vector_int(std::vector<std::int32_t>(100, 3), Shape{100}), 0.01f);
  for (const std::int64_t size : step.micro_batches) EXPECT_LE(size, 37);

  TrainerOptions fixed = options;
  fixed.micro_batch = 64;
  Trainer fixed_trainer(build_model("lenet5"), fixed);
  try {
    fixed_trainer.plan(256, Shape{1, 28, 28}, Shape{});
    FAIL() << "--micro-batch 64 was accepted beyond the element limit";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(e.message().find("--micro-batch 37 or less"), std::string::npos) << e.message();
  }
}

TEST(Planner, AutomaticPlanUsesTheReportAndExplainsIt) {
  FreeArenaReport report;
  report.capacity = 100 << 20;
  report.free_in_arena = 10 << 20;
  report.headroom = 50 << 20;
  MemoryProfile profile;
  profile.bytes_per_sample = 1 << 20;
  profile.fixed_bytes = 4 << 20;
  PlannerOptions options;
  options.margin_fraction = 0.1;
  // available 60 MiB, margin 6 MiB, fixed 4 MiB: 50 samples fit.
  Plan plan = plan_from_report(128, report, profile, options);
  EXPECT_EQ(plan.micro_batch, 50);
  EXPECT_EQ(plan.sizes(), (std::vector<std::int64_t>{50, 50, 28}));
  EXPECT_NE(plan.explanation.find("bytes/sample 1.00 MiB"), std::string::npos) << plan.explanation;
  profile.bytes_per_sample = 100 << 20;
  EXPECT_THROW(plan_from_report(128, report, profile, options), OutOfMemory);
}

// A fake arena: `measure` reports (fixed + n * per_sample) and throws OutOfMemory above
// `limit`, as a real micro-batch of n samples would.
struct FakeCosts {
  std::size_t fixed = 0;
  std::size_t per_sample = 0;
  std::size_t limit = 0;
  std::vector<std::int64_t> asked;
  RunPeak operator()(std::int64_t n, const Allocator& allocator) {
    asked.push_back(n);
    const std::size_t cost = fixed + static_cast<std::size_t>(n) * per_sample;
    if (cost > limit) throw OutOfMemory(cost, allocator.report(), "fake micro-batch");
    return RunPeak{cost, cost};
  }
};

std::shared_ptr<PoolAllocator> capped_pool(std::size_t capacity) {
  PoolOptions options;
  options.capacity = capacity;
  return std::make_shared<PoolAllocator>(make_host_memory_resource(), options);
}

TEST(Planner, ProbeSeparatesFixedFromPerSampleBytes) {
  auto pool = capped_pool(64 << 20);
  FakeCosts costs{3000, 1000, 1u << 30, {}};
  std::vector<std::string> log;
  Planner planner(pool, PlannerOptions{}, [&](const std::string& line) { log.push_back(line); });
  const MemoryProfile profile = planner.probe([&](std::int64_t n) { return costs(n, *pool); }, 777);
  EXPECT_EQ(profile.bytes_per_sample, 1000u);
  EXPECT_EQ(profile.fixed_bytes, 3000u);
  EXPECT_EQ(profile.analytic_bytes_per_sample, 777u);
  // A warm-up run, then the two probe sizes (1 and 3 without batch statistics).
  EXPECT_EQ(costs.asked, (std::vector<std::int64_t>{1, 1, 3}));
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("bytes/sample 1000 B"), std::string::npos) << log[0];
}

TEST(Planner, VerifiedPlanIsTheLargestSizeThatRuns) {
  // 16 MiB arena; every sample costs 100 KiB, but real runs above 60 samples fail (the
  // probe at 1-3 samples cannot see that): the plan must end at a size that ran.
  auto pool = capped_pool(16 << 20);
  FakeCosts costs{0, 100 << 10, 60 * (100 << 10), {}};
  Planner planner(pool, PlannerOptions{}, nullptr);
  const Plan plan = planner.plan(
      1000, 0, [&](std::int64_t n) { return costs(n, *pool); }, 0);
  EXPECT_TRUE(plan.automatic);
  EXPECT_LE(plan.micro_batch, 60);
  EXPECT_GE(plan.micro_batch, 30) << "verification gave up too much";
  bool ran = false;
  for (std::int64_t n : costs.asked) ran |= n == plan.micro_batch;
  EXPECT_TRUE(ran) << "the planned size was never run";
  std::int64_t total = 0;
  for (std::int64_t n : plan.sizes()) total += n;
  EXPECT_EQ(total, 1000);
  EXPECT_NE(plan.explanation.find("verified by a run"), std::string::npos) << plan.explanation;
}

TEST(Planner, FixedPlanIsNotProbed) {
  auto pool = capped_pool(16 << 20);
  Planner planner(pool, PlannerOptions{}, nullptr);
  const Plan plan = planner.plan(
      10, 4,
      [](std::int64_t) -> RunPeak {
        ADD_FAILURE() << "probed";
        return RunPeak{};
      },
      0);
  EXPECT_FALSE(plan.automatic);
  EXPECT_EQ(plan.sizes(), (std::vector<std::int64_t>{4, 4, 2}));
}

TEST(Planner, ReplanHalvesAndStopsAtTheMinimum) {
  auto pool = capped_pool(16 << 20);
  PlannerOptions options;
  options.min_micro_batch = 2;  // a model with BatchNorm
  std::vector<std::string> log;
  Planner planner(pool, options, [&](const std::string& line) { log.push_back(line); });
  Plan plan = planner.plan(9, 8, nullptr, 0);
  const OutOfMemory error(1 << 20, pool->report(), "test");
  plan = planner.after_out_of_memory(plan, error, 8, 0);
  EXPECT_EQ(plan.micro_batch, 4);
  EXPECT_EQ(plan.sizes(), (std::vector<std::int64_t>{4, 3, 2})) << "no 1-sample micro-batch";
  plan = planner.after_out_of_memory(plan, error, 3, 1);
  EXPECT_EQ(plan.micro_batch, 2);
  EXPECT_THROW(planner.after_out_of_memory(plan, error, 2, 0), OutOfMemory);
  EXPECT_NE(log.back().find("re-plan: OutOfMemory in micro-batch 1 of 3 samples"),
            std::string::npos)
      << log.back();
}

// The refine loop against a fake memory model whose costs the test defines. The arena's
// report is fixed: 100 MiB available (4 MiB free in the arena + 96 MiB headroom), so with
// the default options the margin is 5% of it, 5 MiB, and (100 - 5) MiB = 97280 KiB is left
// for the fixed bytes and the samples.
constexpr std::size_t kKiB = 1024;

class FixedReportAllocator final : public Allocator {
 public:
  FixedReportAllocator() {
    report_.capacity = 100 << 20;
    report_.reserved = 4 << 20;
    report_.free_in_arena = 4 << 20;
    report_.largest_free_block = 3 << 20;
    report_.headroom = 96 << 20;
  }
  void* allocate(std::size_t bytes, MemoryTag, StreamHandle) override {
    throw OutOfMemory(bytes, report_, "FixedReportAllocator(test): allocates nothing");
  }
  void deallocate(void*) noexcept override {}
  FreeArenaReport report() const override { return report_; }
  MemoryKind kind() const override { return MemoryKind::Host; }
  int device_index() const override { return -1; }
  std::size_t peak_allocated() const override { return 0; }
  void reset_peak() override {}
  void mark(const std::string& name) override { marks.push_back(name); }
  std::vector<std::string> marks;

 private:
  FreeArenaReport report_;
};

// A micro-batch of n samples peaks at peak(n) above the baseline; sizes above `largest_run`
// run out of memory (a request of peak(n), with the arena's report), as fragmentation or
// a workspace that grows with the batch would make them, unseen by the 1- and 3-sample
// probes.
// `reserved` (when set) is what the arena needs for n samples, rounding and fragmentation
// included; else it needs exactly peak(n).
struct FakeModel {
  std::function<std::size_t(std::int64_t)> peak;
  std::function<std::size_t(std::int64_t)> reserved;
  std::int64_t largest_run = std::numeric_limits<std::int64_t>::max();
  const Allocator* allocator = nullptr;
  std::vector<std::int64_t> asked;
  std::vector<std::int64_t> ran;
  RunPeak operator()(std::int64_t n) {
    asked.push_back(n);
    if (n > largest_run) throw OutOfMemory(peak(n), allocator->report(), "fake micro-batch");
    ran.push_back(n);
    return RunPeak{peak(n), reserved ? reserved(n) : peak(n)};
  }
};

bool logged(const std::vector<std::string>& log, const std::string& text) {
  for (const auto& line : log) {
    if (line.find(text) != std::string::npos) return true;
  }
  return false;
}

std::string joined(const std::vector<std::string>& log) {
  std::string text;
  for (const auto& line : log) text += line + "\n";
  return text;
}

TEST(PlannerRefine, VerificationRunsThePlannedSizeAndRefinesBytesPerSample) {
  // The probes see 200 KiB per sample over a 2048 KiB fixed part (peak(1) = 2248 KiB,
  // peak(3) = 2648 KiB), but from then on each sample costs 100 KiB: peak(n) = 2248 KiB +
  // 100 KiB * (n - 1).
  auto arena = std::make_shared<FixedReportAllocator>();
  FakeModel model;
  model.allocator = arena.get();
  model.peak = [](std::int64_t n) {
    const std::size_t per_sample = n <= 3 ? 200 * kKiB : 100 * kKiB;
    return 2248 * kKiB + per_sample * static_cast<std::size_t>(n - 1);
  };
  std::vector<std::string> log;
  Planner planner(arena, PlannerOptions{}, [&](const std::string& line) { log.push_back(line); });
  const Plan plan = planner.plan(2000, 0, std::ref(model), 0);
  // Planned from the probe with the prior margin: floor((97280 - 2048) / 200) = 476
  // samples, which the planner runs: peak 2248 + 475 * 100 = 49748 KiB (48.58 MiB), so
  // bytes/sample (49748 - 2248) / (476 - 1) = 100 KiB. Now that a size ran, the margin is
  // the safety share, 0.5% of 100 MiB = 512 KiB, and floor((102400 - 512 - 2048) / 100) =
  // 998 fit; 998 runs and confirms 100 KiB.
  EXPECT_EQ(model.asked, (std::vector<std::int64_t>{1, 1, 3, 476, 998}));
  EXPECT_TRUE(plan.automatic);
  EXPECT_EQ(plan.micro_batch, 998);
  EXPECT_EQ(plan.profile.bytes_per_sample, 100 * kKiB);
  EXPECT_EQ(plan.profile.fixed_bytes, 2048 * kKiB);
  EXPECT_EQ(plan.sizes(), (std::vector<std::int64_t>{998, 998, 4}));
  EXPECT_TRUE(logged(log,
                     "probe: peak above baseline 2.20 MiB at 1 sample(s), 2.59 MiB at 3 -> "
                     "bytes/sample 200.00 KiB"))
      << joined(log);
  EXPECT_TRUE(logged(log,
                     "plan check: micro-batch 476 ran, peak 48.58 MiB allocated, 48.58 MiB "
                     "reserved -> bytes/sample 100.00 KiB, margin 512.00 KiB, fits 998"))
      << joined(log);
  EXPECT_NE(plan.explanation.find("micro-batch 998 x 3"), std::string::npos) << plan.explanation;
  EXPECT_NE(plan.explanation.find("margin 512.00 KiB (safety: after a plan check at 998 "
                                  "samples); fixed 2.00 MiB; bytes/sample 100.00 KiB"),
            std::string::npos)
      << plan.explanation;
  EXPECT_NE(plan.explanation.find("micro-batch 998 verified by a run"), std::string::npos)
      << plan.explanation;
}

TEST(PlannerRefine, AnAnalyticEstimateAboveTheProbesSizesTheFirstPlanCheck) {
  // The probes see 50 KiB per sample (the small pool absorbing growth at 1-3 samples, as
  // LeNet-5's do), but each sample costs 100 KiB from then on, which the analytic estimate
  // (100 KiB) knows: peak(n) = 2098 KiB + 50 KiB * (n - 1) up to 3, 2198 KiB + 100 KiB *
  // (n - 3) after; sizes above 980 run out of memory.
  auto arena = std::make_shared<FixedReportAllocator>();
  FakeModel model;
  model.allocator = arena.get();
  model.largest_run = 980;
  model.peak = [](std::int64_t n) {
    if (n <= 3) return 2098 * kKiB + 50 * kKiB * static_cast<std::size_t>(n - 1);
    return 2198 * kKiB + 100 * kKiB * static_cast<std::size_t>(n - 3);
  };
  Planner planner(arena, PlannerOptions{}, nullptr);
  const Plan plan = planner.plan(2000, 0, std::ref(model), 100 * kKiB);
  // The first check divides by the larger estimate: floor((102400 - 5120 - 2048) / 100) =
  // 952 (by the probes' 50 KiB it would be 1904, and fail). 952 runs: (2198 + 94900 -
  // 2098) KiB / 951 = 99.9 KiB per sample, so with the safety margin 999 fit, which fails;
  // bisection: 975 runs, and 987 would gain less than 2% of 975 (19 samples).
  EXPECT_EQ(model.asked, (std::vector<std::int64_t>{1, 1, 3, 952, 999, 975}));
  EXPECT_EQ(plan.micro_batch, 975);
  EXPECT_EQ(plan.profile.analytic_bytes_per_sample, 100 * kKiB);
}

TEST(PlannerRefine, OutOfMemoryShrinksThenBisectsToTheLargestSizeThatRuns) {
  // Exactly linear, 2048 KiB + 200 KiB * n, so the probes are right; but sizes above 331
  // run out of memory.
  auto arena = std::make_shared<FixedReportAllocator>();
  FakeModel model;
  model.allocator = arena.get();
  model.largest_run = 331;
  model.peak = [](std::int64_t n) {
    return 2048 * kKiB + 200 * kKiB * static_cast<std::size_t>(n);
  };
  std::vector<std::string> log;
  Planner planner(arena, PlannerOptions{}, [&](const std::string& line) { log.push_back(line); });
  const Plan plan = planner.plan(2000, 0, std::ref(model), 0);
  // 476 planned (as above) fails, requesting 2048 + 476 * 200 = 97248 KiB with 100 MiB
  // available: it shrinks by the share that was available, 102400 / (102400 + 97248), to
  // 244. 244 runs, so from now on it bisects between the largest size that ran and the
  // smallest that failed: 360 fails, 302 runs, 331 runs, 345 fails, 338 fails, and 334
  // would grow by less than the planner's 2% step (6 samples), so it keeps 331.
  EXPECT_EQ(model.asked, (std::vector<std::int64_t>{1, 1, 3, 476, 244, 360, 302, 331, 345, 338}));
  EXPECT_EQ(plan.micro_batch, model.largest_run);
  EXPECT_TRUE(logged(log,
                     "plan check: micro-batch 476 ran out of memory (requested 94.97 MiB, "
                     "available 100.00 MiB, largest free block 3.00 MiB) -> micro-batch 244"))
      << joined(log);
  EXPECT_TRUE(logged(log,
                     "plan check: micro-batch 244 ran, peak 49.66 MiB allocated, 49.66 MiB "
                     "reserved -> bytes/sample 200.00 KiB, margin 512.00 KiB, fits 499"))
      << joined(log);
  EXPECT_TRUE(logged(log,
                     "plan check: micro-batch 360 ran out of memory (requested 72.31 MiB, "
                     "available 100.00 MiB, largest free block 3.00 MiB) -> micro-batch 302"))
      << joined(log);
  EXPECT_TRUE(logged(log, "plan check: micro-batch 331 ran")) << joined(log);
  EXPECT_NE(plan.explanation.find("micro-batch 331 verified by a run"), std::string::npos)
      << plan.explanation;
}

TEST(PlannerRefine, FragmentationTheProbesCannotSeeIsBisectedToWithinTwoPercent) {
  // The arena needs a quarter more than the live blocks (fragmentation): a size runs when
  // 1.25 * (2048 KiB + 200 KiB * n) <= 100 MiB available, so at most 399 samples, though
  // the measured peaks are exactly linear and say 499 fit.
  auto arena = std::make_shared<FixedReportAllocator>();
  FakeModel model;
  model.allocator = arena.get();
  model.peak = [](std::int64_t n) {
    return 2048 * kKiB + 200 * kKiB * static_cast<std::size_t>(n);
  };
  model.reserved = [&](std::int64_t n) { return model.peak(n) / 4 * 5; };
  std::int64_t largest = 0;
  while (model.reserved(largest + 1) <= 100 << 20) ++largest;
  ASSERT_EQ(largest, 399);
  model.largest_run = largest;
  std::vector<std::string> log;
  Planner planner(arena, PlannerOptions{}, [&](const std::string& line) { log.push_back(line); });
  const Plan plan = planner.plan(2000, 0, std::ref(model), 0);
  // 476 (the prior margin) fails and shrinks to 244, which runs: with the safety margin
  // (512 KiB) floor((102400 - 512 - 2048) / 200) = 499 fit, beyond the 476 that failed, so
  // it bisects: 360 runs, 418 fails, 389 runs, 403 fails, 396 runs, and 399 would gain
  // less than 2% of 396 (7 samples).
  EXPECT_EQ(model.asked, (std::vector<std::int64_t>{1, 1, 3, 476, 244, 360, 418, 389, 403, 396}));
  EXPECT_EQ(plan.micro_batch, 396);
  EXPECT_GE(plan.micro_batch, largest * 98 / 100);
  EXPECT_NE(plan.explanation.find("margin 512.00 KiB (safety: after a plan check at 396 samples)"),
            std::string::npos)
      << plan.explanation;
  EXPECT_TRUE(logged(log,
                     "plan check: micro-batch 244 ran, peak 49.66 MiB allocated, 62.07 MiB "
                     "reserved -> bytes/sample 200.00 KiB, margin 512.00 KiB, fits 499"))
      << joined(log);
}

TEST(PlannerRefine, RunsOfOutOfMemoryEndAtASizeThatRan) {
  // Linear as above, but nothing above 40 samples runs: the plan shrinks by the available
  // share again and again. Whatever the number of rounds, the plan it returns must be a size
  // that ran (a probe's size counts), and "verified by a run" must be true.
  auto arena = std::make_shared<FixedReportAllocator>();
  FakeModel model;
  model.allocator = arena.get();
  model.largest_run = 40;
  model.peak = [](std::int64_t n) {
    return 2048 * kKiB + 200 * kKiB * static_cast<std::size_t>(n);
  };
  std::vector<std::string> log;
  Planner planner(arena, PlannerOptions{}, [&](const std::string& line) { log.push_back(line); });
  const Plan plan = planner.plan(2000, 0, std::ref(model), 0);
  EXPECT_LE(plan.micro_batch, model.largest_run);
  const bool ran =
      std::find(model.ran.begin(), model.ran.end(), plan.micro_batch) != model.ran.end();
  EXPECT_TRUE(ran) << "micro-batch " << plan.micro_batch << " never ran\n" << joined(log);
  if (plan.explanation.find("verified by a run") != std::string::npos) {
    EXPECT_TRUE(ran) << plan.explanation;
  }
  EXPECT_EQ(model.asked.front(), 1);
  EXPECT_EQ(model.asked[3], 476) << "the first run is the planned size";
}

TEST(PlannerRefine, ReplanAfterOutOfMemoryLogsTheReportAndMarksTheTrace) {
  auto arena = std::make_shared<FixedReportAllocator>();
  std::vector<std::string> log;
  Planner planner(arena, PlannerOptions{}, [&](const std::string& line) { log.push_back(line); });
  const Plan plan = planner.plan(100, 32, nullptr, 0);
  const OutOfMemory error(3 << 20, arena->report(), "test");
  const Plan smaller = planner.after_out_of_memory(plan, error, 32, 2);
  EXPECT_EQ(smaller.micro_batch, 16);
  EXPECT_EQ(smaller.sizes(), (std::vector<std::int64_t>{16, 16, 16, 16, 16, 16, 4}));
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back(),
            "re-plan: OutOfMemory in micro-batch 2 of 32 samples (requested 3.00 MiB, free in "
            "arena 4.00 MiB, largest free block 3.00 MiB, headroom 96.00 MiB) -> micro-batch 16");
  EXPECT_EQ(smaller.explanation, log.back());
  EXPECT_EQ(arena->marks, std::vector<std::string>{"re-plan"});
}

}  // namespace
}  // namespace mb
