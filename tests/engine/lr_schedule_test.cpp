// LrSchedule (engine/lr_schedule.h): linear warmup then cosine decay, at hand-computed
// points and its edge cases. tests/engine/optimizer_reference_test.cpp checks whole
// schedules against torch.optim.lr_scheduler.
#include "engine/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "runtime/error.h"

namespace mb {
namespace {

constexpr double kTolerance = 1e-12;

LrSchedule schedule(double peak, std::int64_t warmup, double start_factor, std::int64_t total,
                    double final_lr) {
  LrSchedule s;
  s.peak_lr = peak;
  s.warmup_steps = warmup;
  s.warmup_start_factor = start_factor;
  s.total_steps = total;
  s.final_lr = final_lr;
  return s;
}

TEST(LrSchedule, ConstantWithoutWarmupOrDecay) {
  const LrSchedule s = schedule(0.3, 0, 0.0, 0, 0.0);
  for (std::int64_t step : {0, 1, 7, 1000000}) EXPECT_DOUBLE_EQ(s.at(step), 0.3) << step;
}

// Warmup of W = 4 steps from factor 0: peak * (step + 1) / 4, so the first step already
// trains (0.25 * peak, never 0) and the last warmup step is at peak.
TEST(LrSchedule, WarmupRampsLinearlyToPeakOnItsLastStep) {
  const LrSchedule s = schedule(0.8, 4, 0.0, 0, 0.0);
  EXPECT_NEAR(s.at(0), 0.2, kTolerance);
  EXPECT_NEAR(s.at(1), 0.4, kTolerance);
  EXPECT_NEAR(s.at(2), 0.6, kTolerance);
  EXPECT_NEAR(s.at(3), 0.8, kTolerance);
  EXPECT_NEAR(s.at(4), 0.8, kTolerance) << "constant after warmup without total_steps";
  EXPECT_NEAR(s.at(100), 0.8, kTolerance);
}

// Start factor 0.5 over W = 5: peak * (0.5 + 0.5 * (step + 1) / 5).
TEST(LrSchedule, WarmupStartsFromTheStartFactor) {
  const LrSchedule s = schedule(1.0, 5, 0.5, 0, 0.0);
  EXPECT_NEAR(s.at(0), 0.6, kTolerance);
  EXPECT_NEAR(s.at(2), 0.8, kTolerance);
  EXPECT_NEAR(s.at(4), 1.0, kTolerance);
  const LrSchedule flat = schedule(1.0, 5, 1.0, 0, 0.0);
  for (std::int64_t step = 0; step < 8; ++step) EXPECT_NEAR(flat.at(step), 1.0, kTolerance);
}

// Cosine over T = 10 from peak 1 to final 0.1: final + 0.9 * (1 + cos(pi * step / 10)) / 2.
// Step 5 is the midpoint 0.55; step 10 and later stay at final (no second period).
TEST(LrSchedule, CosineDecaysToFinalAndStays) {
  const LrSchedule s = schedule(1.0, 0, 0.0, 10, 0.1);
  EXPECT_NEAR(s.at(0), 1.0, kTolerance);
  EXPECT_NEAR(s.at(5), 0.55, kTolerance);
  EXPECT_NEAR(s.at(1), 0.1 + 0.45 * (1 + std::cos(M_PI / 10)), kTolerance);
  EXPECT_NEAR(s.at(9), 0.1 + 0.45 * (1 + std::cos(9 * M_PI / 10)), kTolerance);
  EXPECT_NEAR(s.at(10), 0.1, kTolerance);
  EXPECT_NEAR(s.at(11), 0.1, kTolerance);
  EXPECT_NEAR(s.at(25), 0.1, kTolerance);
}

// Warmup W = 2 then cosine to T = 6: the cosine starts at peak on step W (progress 0) and
// its progress is (step - W) / (T - W), so step 4 is the midpoint.
TEST(LrSchedule, CosineStartsAfterWarmup) {
  const LrSchedule s = schedule(2.0, 2, 0.0, 6, 0.0);
  EXPECT_NEAR(s.at(0), 1.0, kTolerance);
  EXPECT_NEAR(s.at(1), 2.0, kTolerance);
  EXPECT_NEAR(s.at(2), 2.0, kTolerance);
  EXPECT_NEAR(s.at(3), 1.0 + std::cos(M_PI / 4), kTolerance);
  EXPECT_NEAR(s.at(4), 1.0, kTolerance);
  EXPECT_NEAR(s.at(6), 0.0, kTolerance);
}

// total_steps <= warmup_steps leaves no room for a decay: peak after the warmup.
TEST(LrSchedule, TotalStepsWithinWarmupMeansNoDecay) {
  for (std::int64_t total : {3, 5}) {
    const LrSchedule s = schedule(1.0, 5, 0.0, total, 0.0);
    EXPECT_NEAR(s.at(3), 0.8, kTolerance) << "total " << total << ": still warming up";
    EXPECT_NEAR(s.at(4), 1.0, kTolerance);
    EXPECT_NEAR(s.at(5), 1.0, kTolerance);
    EXPECT_NEAR(s.at(50), 1.0, kTolerance);
  }
}

TEST(LrSchedule, NegativeStepThrows) {
  const LrSchedule s = schedule(1.0, 5, 0.0, 10, 0.0);
  EXPECT_THROW(s.at(-1), InvalidArgument);
}

}  // namespace
}  // namespace mb
