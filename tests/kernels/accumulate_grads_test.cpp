// cpu::accumulate_grads and sum_of_squares against naive
// double-precision loops written here, over slot tables with odd sizes (0, 1, 3, not
// multiples of 4), plus the micro-batch identity sum_k (n_k / B) g_k and argument checks.
#include "kernels/cpu/accumulate_grads.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace mb::cpu {
namespace {

const std::vector<std::int64_t> kSizes = {0, 1, 3, 5, 17, 1000, 1027};

std::vector<float> random_vector(std::int64_t size, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> values(static_cast<std::size_t>(size));
  for (float& v : values) v = dist(rng);
  return values;
}

TEST(AccumulateGrads, MicroBatchesGiveTheWeightedSum) {
  // Three micro-batches of an uneven split of B = 13 samples: 5, 5, 3. The engine passes
  // factor n_k / B; the accumulator must hold sum_k (n_k / B) g_k.
  std::mt19937 rng(11);
  const std::vector<int> micro_batch_sizes = {5, 5, 3};
  const double batch = 13.0;
  std::vector<std::vector<float>> accum;
  for (std::int64_t size : kSizes) {
    // Garbage (NaN) before Overwrite: the first micro-batch must not read it.
    accum.emplace_back(size, std::numeric_limits<float>::quiet_NaN());
  }
  std::vector<std::vector<double>> expected;
  for (std::int64_t size : kSizes) expected.emplace_back(size, 0.0);

  for (std::size_t k = 0; k < micro_batch_sizes.size(); ++k) {
    const float factor = static_cast<float>(micro_batch_sizes[k] / batch);
    std::vector<std::vector<float>> grads;
    std::vector<GradSlot> slots;
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      grads.push_back(random_vector(kSizes[s], rng));
      for (std::int64_t i = 0; i < kSizes[s]; ++i)
        expected[s][i] += micro_batch_sizes[k] / batch * grads[s][i];
    }
    for (std::size_t s = 0; s < kSizes.size(); ++s)
      slots.push_back({grads[s].data(), accum[s].data(), kSizes[s]});
    accumulate_grads(Stream(), slots.data(), static_cast<int>(slots.size()), factor,
                     k == 0 ? GradientMode::Overwrite : GradientMode::Accumulate);
  }
  for (std::size_t s = 0; s < kSizes.size(); ++s)
    for (std::int64_t i = 0; i < kSizes[s]; ++i)
      ASSERT_NEAR(accum[s][i], expected[s][i], 1e-6) << "slot " << s << " element " << i;
}

TEST(AccumulateGrads, AccumulateAddsToExistingContents) {
  std::vector<float> grad = {1.0f, -2.0f, 3.0f, 0.5f, 4.0f};
  std::vector<float> accum = {10.0f, 20.0f, 30.0f, 40.0f, 50.0f};
  GradSlot slot{grad.data(), accum.data(), 5};
  accumulate_grads(Stream(), &slot, 1, 0.25f, GradientMode::Accumulate);
  EXPECT_EQ(accum, (std::vector<float>{10.25f, 19.5f, 30.75f, 40.125f, 51.0f}));
  accumulate_grads(Stream(), &slot, 1, 2.0f, GradientMode::Overwrite);
  EXPECT_EQ(accum, (std::vector<float>{2.0f, -4.0f, 6.0f, 1.0f, 8.0f}));
}

TEST(AccumulateGrads, NanAndInfPropagate) {
  std::vector<float> grad = {1.0f, std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::infinity()};
  std::vector<float> accum(3, 0.0f);
  GradSlot slot{grad.data(), accum.data(), 3};
  accumulate_grads(Stream(), &slot, 1, 0.5f, GradientMode::Accumulate);
  EXPECT_EQ(accum[0], 0.5f);
  EXPECT_TRUE(std::isnan(accum[1]));
  EXPECT_TRUE(std::isinf(accum[2]));
}

TEST(SumOfSquares, MatchesDoubleLoop) {
  std::mt19937 rng(5);
  std::vector<std::vector<float>> data;
  std::vector<ConstBufferSlot> slots;
  for (std::int64_t size : kSizes) data.push_back(random_vector(size, rng, 3.0f));
  for (std::size_t s = 0; s < kSizes.size(); ++s) slots.push_back({data[s].data(), kSizes[s]});
  double total = 0.0;
  for (const auto& buffer : data) {
    for (float v : buffer) total += static_cast<double>(v) * v;
  }
  const int count = static_cast<int>(slots.size());
  EXPECT_NEAR(sum_of_squares(Stream(), slots.data(), count), total, 1e-12 * total);
  ConstBufferSlot empty{nullptr, 0};
  EXPECT_EQ(sum_of_squares(Stream(), &empty, 1), 0.0);
  // A known value: ||(3, 4)|| = 5.
  std::vector<float> three_four = {3.0f, 4.0f};
  ConstBufferSlot pair{three_four.data(), 2};
  EXPECT_EQ(sum_of_squares(Stream(), &pair, 1), 25.0);
  EXPECT_EQ(sum_of_squares(Stream(), nullptr, 0), 0.0);
}

TEST(SumOfSquares, ReportsNanAndInf) {
  std::vector<float> values = {1.0f, 2.0f, std::numeric_limits<float>::infinity()};
  ConstBufferSlot slot{values.data(), 3};
  EXPECT_TRUE(std::isinf(sum_of_squares(Stream(), &slot, 1)));
  values[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(sum_of_squares(Stream(), &slot, 1)));
}

TEST(AccumulateGrads, RejectsBadArguments) {
  std::vector<float> grad(4, 1.0f), accum(4, 0.0f);
  GradSlot good{grad.data(), accum.data(), 4};
  EXPECT_THROW(accumulate_grads(Stream(), &good, -1, 1.0f, GradientMode::Overwrite),
               InvalidArgument);
  EXPECT_THROW(accumulate_grads(Stream(), nullptr, 1, 1.0f, GradientMode::Overwrite),
               InvalidArgument);
  EXPECT_THROW(accumulate_grads(Stream(), &good, 1, std::numeric_limits<float>::quiet_NaN(),
                                GradientMode::Overwrite),
               InvalidArgument);
  GradSlot null_grad{nullptr, accum.data(), 4};
  EXPECT_THROW(accumulate_grads(Stream(), &null_grad, 1, 1.0f, GradientMode::Overwrite),
               InvalidArgument);
  GradSlot null_accum{grad.data(), nullptr, 4};
  EXPECT_THROW(accumulate_grads(Stream(), &null_accum, 1, 1.0f, GradientMode::Accumulate),
               InvalidArgument);
  GradSlot negative{grad.data(), accum.data(), -1};
  EXPECT_THROW(accumulate_grads(Stream(), &negative, 1, 1.0f, GradientMode::Overwrite),
               InvalidArgument);
  GradSlot empty{nullptr, nullptr, 0};  // null pointers are fine for empty slots
  EXPECT_NO_THROW(accumulate_grads(Stream(), &empty, 1, 1.0f, GradientMode::Overwrite));
  EXPECT_NO_THROW(accumulate_grads(Stream(), nullptr, 0, 1.0f, GradientMode::Overwrite));

  ConstBufferSlot null_const{nullptr, 3};
  EXPECT_THROW(sum_of_squares(Stream(), &null_const, 1), InvalidArgument);
}

}  // namespace
}  // namespace mb::cpu
