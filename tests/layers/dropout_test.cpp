// Dropout: split invariance of the masks (the micro-batch contract), the kept fraction and
// scale, backward using the forward's mask, gradients by finite differences with the mask
// fixed, and the identity in evaluation.
#include <gtest/gtest.h>

#include <cmath>

#include "layers/dropout.h"
#include "runtime/error.h"
#include "tests/layers/gradcheck.h"

namespace mb {
namespace {

RunState training_state(std::int64_t sample_offset = 0) {
  RunState state;
  state.training = true;
  state.seed = 0xDEADBEEF12345ULL;
  state.step = 3;
  state.sample_offset = sample_offset;
  return state;
}

TEST(Dropout, MasksDoNotDependOnTheMicroBatchSplit) {
  Dropout dropout(0.4f, 2);
  const Tensor x = testing::random_tensor(Shape{16, 3, 5, 5}, 1, 0.5f, 1.5f);
  const std::vector<float> full = dropout.forward(x, training_state()).to_vector();
  const std::int64_t per_sample = 3 * 5 * 5;
  const std::int64_t bounds[][2] = {{0, 7}, {7, 14}, {14, 16}};
  for (const auto& bound : bounds) {
    const Tensor part = x.slice(bound[0], bound[1]).clone();
    const std::vector<float> y = dropout.forward(part, training_state(bound[0])).to_vector();
    for (std::size_t i = 0; i < y.size(); ++i) {
      ASSERT_EQ(y[i], full[bound[0] * per_sample + i])
          << "slice [" << bound[0] << ", " << bound[1] << ") element " << i;
    }
  }
  // A different step or stream id gives a different mask.
  RunState other_step = training_state();
  other_step.step = 4;
  EXPECT_NE(dropout.forward(x, other_step).to_vector(), full);
  Dropout other_stream(0.4f, 3);
  EXPECT_NE(other_stream.forward(x, training_state()).to_vector(), full);
}

TEST(Dropout, KeptFractionAndScale) {
  const float p = 0.3f;
  Dropout dropout(p);
  const Tensor x = Tensor::full(Shape{64, 4096}, 1.0f);
  const std::vector<float> y = dropout.forward(x, training_state()).to_vector();
  std::int64_t kept = 0;
  for (float v : y) {
    if (v != 0.0f) {
      ++kept;
      ASSERT_FLOAT_EQ(v, 1.0f / (1.0f - p));
    }
  }
  const double fraction = static_cast<double>(kept) / static_cast<double>(y.size());
  // 262144 Bernoulli(0.7) draws: the standard deviation of the fraction is ~0.0009.
  EXPECT_NEAR(fraction, 1.0 - p, 0.005);
}

TEST(Dropout, BackwardAppliesTheForwardMask) {
  Dropout dropout(0.5f, 9);
  const Tensor x = testing::random_tensor(Shape{8, 33}, 2, 0.5f, 1.5f);  // never zero
  const std::vector<float> y = dropout.forward(x, training_state(5)).to_vector();
  const Tensor g = testing::random_tensor(Shape{8, 33}, 3, 0.5f, 1.5f);
  const std::vector<float> dx = dropout.backward(g, BackwardState{}).to_vector();
  const std::vector<float> gv = g.to_vector();
  int dropped = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (y[i] == 0.0f) {
      EXPECT_EQ(dx[i], 0.0f) << i;
      ++dropped;
    } else {
      EXPECT_FLOAT_EQ(dx[i], gv[i] * 2.0f) << i;
    }
  }
  EXPECT_GT(dropped, 0);
}

TEST(Dropout, GradientMatchesFiniteDifferencesWithFixedMask) {
  Dropout dropout(0.25f, 1);
  const Tensor x = testing::random_tensor(Shape{3, 20}, 4);
  testing::GradCheckOptions options;
  options.state = training_state(2);  // same keys in every forward: the mask is fixed
  testing::check_gradients(dropout, x, 5, options);
}

TEST(Dropout, IdentityInEvaluationAndWithZeroP) {
  const Tensor x = testing::random_tensor(Shape{4, 10}, 6);
  RunState eval = training_state();
  eval.training = false;
  Dropout dropout(0.5f);
  EXPECT_EQ(dropout.forward(x, eval).to_vector(), x.to_vector());
  const Tensor g = testing::random_tensor(Shape{4, 10}, 7);
  EXPECT_EQ(dropout.backward(g, BackwardState{}).to_vector(), g.to_vector());
  Dropout none(0.0f);
  EXPECT_EQ(none.forward(x, training_state()).to_vector(), x.to_vector());
  Dropout all(1.0f);
  for (float v : all.forward(x, training_state()).to_vector()) EXPECT_EQ(v, 0.0f);
}

TEST(Dropout, RejectsBadProbabilityAndMisuse) {
  EXPECT_THROW(Dropout(-0.1f), InvalidArgument);
  EXPECT_THROW(Dropout(1.5f), InvalidArgument);
  Dropout dropout(0.5f);
  EXPECT_THROW(dropout.backward(Tensor::zeros(Shape{2, 2}), BackwardState{}), InvalidArgument);
  dropout.forward(Tensor::zeros(Shape{2, 2}), training_state());
  BackwardState no_grad;
  no_grad.need_input_grad = false;
  EXPECT_FALSE(dropout.backward(Tensor::zeros(Shape{2, 2}), no_grad).defined());
}

}  // namespace
}  // namespace mb
