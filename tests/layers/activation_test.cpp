// ReLU and ReLU6 modules: forward against the definitions, input gradients against central
// differences (inputs kept away from the kinks, where the derivative jumps), and the
// backward contract (no input gradient when not needed, no backward without forward).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "layers/activation.h"
#include "runtime/error.h"
#include "tests/layers/gradcheck.h"

namespace mb {
namespace {

// Random values in [low, high] pushed at least `gap` away from each kink.
Tensor away_from_kinks(const Shape& shape, std::uint64_t seed, float low, float high,
                       std::vector<float> kinks, float gap = 0.05f) {
  std::vector<float> values = testing::random_tensor(shape, seed, low, high).to_vector();
  for (float& v : values) {
    for (float k : kinks) {
      if (std::fabs(v - k) < gap) v = v < k ? k - 2 * gap : k + 2 * gap;
    }
  }
  return Tensor::from_vector(values, shape);
}

TEST(ReLU, ForwardIsMaxWithZero) {
  ReLU relu;
  const Tensor x = testing::random_tensor(Shape{4, 3, 5, 5}, 1, -2.0f, 2.0f);
  const Tensor y = relu.forward(x, RunState{});
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_EQ(y.tag(), MemoryTag::Activation);
  const std::vector<float> xv = x.to_vector(), yv = y.to_vector();
  for (std::size_t i = 0; i < xv.size(); ++i) EXPECT_EQ(yv[i], std::max(xv[i], 0.0f));
  // One bit per element kept (300 elements: 10 words), not the output.
  EXPECT_EQ(relu.saved_bytes(x.shape()), 10u * 4);
}

TEST(ReLU, GradientMatchesFiniteDifferences) {
  ReLU relu;
  const Tensor x = away_from_kinks(Shape{2, 3, 4, 4}, 2, -1.0f, 1.0f, {0.0f});
  testing::GradCheckOptions options;
  options.eps = 1e-2;
  testing::check_gradients(relu, x, 3, options);
}

TEST(ReLU6, ForwardClampsToZeroSix) {
  ReLU6 relu6;
  const Tensor x = testing::random_tensor(Shape{3, 50}, 4, -3.0f, 9.0f);
  const std::vector<float> xv = x.to_vector(), yv = relu6.forward(x, RunState{}).to_vector();
  int clamped_high = 0;
  for (std::size_t i = 0; i < xv.size(); ++i) {
    EXPECT_EQ(yv[i], std::min(std::max(xv[i], 0.0f), 6.0f));
    clamped_high += xv[i] > 6.0f;
  }
  EXPECT_GT(clamped_high, 0);
}

TEST(ReLU6, GradientMatchesFiniteDifferences) {
  ReLU6 relu6;
  const Tensor x = away_from_kinks(Shape{2, 60}, 5, -2.0f, 8.0f, {0.0f, 6.0f});
  testing::check_gradients(relu6, x, 6);
}

TEST(ReLU, NoInputGradientWhenNotNeeded) {
  ReLU relu;
  const Tensor x = testing::random_tensor(Shape{2, 3}, 7);
  relu.forward(x, RunState{});
  BackwardState state;
  state.need_input_grad = false;
  EXPECT_FALSE(relu.backward(Tensor::zeros(Shape{2, 3}), state).defined());
}

TEST(ReLU, BackwardWithoutForwardOrWithWrongShapeThrows) {
  ReLU6 relu6;
  EXPECT_THROW(relu6.backward(Tensor::zeros(Shape{2, 3}), BackwardState{}), InvalidArgument);
  relu6.forward(testing::random_tensor(Shape{2, 3}, 8), RunState{});
  EXPECT_THROW(relu6.backward(Tensor::zeros(Shape{3, 2}), BackwardState{}), InvalidArgument);
}

// Backward reads the forward's bit mask: over more elements than one thread's block (40,003:
// several blocks and a partial last word) and with inputs exactly at the kinks, the
// gradient passes exactly where the definition says (x > 0; 0 < x < 6), and nowhere else.
TEST(ReLU, BackwardPassesTheGradientExactlyWhereTheInputWasInRange) {
  const Shape shape{7, 5715, 1, 1};
  std::vector<float> x = testing::random_tensor(shape, 8, -3.0f, 9.0f).to_vector();
  for (std::size_t i = 0; i < x.size(); i += 97) x[i] = (i / 97) % 2 == 0 ? 0.0f : 6.0f;
  const Tensor input = Tensor::from_vector(x, shape);
  const Tensor grad = testing::random_tensor(shape, 9, 0.5f, 1.5f);
  const std::vector<float> g = grad.to_vector();
  for (const bool relu6 : {false, true}) {
    std::unique_ptr<PointwiseActivation> module;
    if (relu6) {
      module = std::make_unique<ReLU6>();
    } else {
      module = std::make_unique<ReLU>();
    }
    module->forward(input, RunState{});
    const std::vector<float> dx = module->backward(grad, BackwardState{}).to_vector();
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const bool passes = relu6 ? x[i] > 0.0f && x[i] < 6.0f : x[i] > 0.0f;
      wrong += dx[i] != (passes ? g[i] : 0.0f);
    }
    EXPECT_EQ(wrong, 0u) << (relu6 ? "ReLU6" : "ReLU");
  }
}

}  // namespace
}  // namespace mb
