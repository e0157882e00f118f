// The Planner (engine/planner.h): splits, the arithmetic of an automatic plan against a
// hand-computed report, verification and re-planning through a measuring callback whose
// costs the test defines (so the expected sizes follow from those costs, not from the
// planner), and the OutOfMemory floor.
#include "engine/planner.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"

namespace mb {
namespace {

TEST(Planner, SplitsAreExactAndRefuseSingleSamplesForBatchNorm) {
  EXPECT_EQ(split_batch(16, 7, false), (std::vector<std::int64_t>{7, 7, 2}));
  EXPECT_EQ(split_batch(15, 7, false), (std::vector<std::int64_t>{7, 7, 1}));
  EXPECT_EQ(split_batch(15, 7, true), (std::vector<std::int64_t>{7, 6, 2}));
  EXPECT_EQ(split_batch(5, 2, true), (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(split_batch(4, 16, false), (std::vector<std::int64_t>{4}));
  EXPECT_THROW(split_batch(4, 0, false), InvalidArgument);
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
  std::size_t operator()(std::int64_t n, const Allocator& allocator) {
    asked.push_back(n);
    const std::size_t cost = fixed + static_cast<std::size_t>(n) * per_sample;
    if (cost > limit) throw OutOfMemory(cost, allocator.report(), "fake micro-batch");
    return cost;
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
      [](std::int64_t) -> std::size_t {
        ADD_FAILURE() << "probed";
        return 0;
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

}  // namespace
}  // namespace mb
