// Linear on the CPU backend: forward against naive loops, gradients against finite
// differences, Accumulate against Overwrite, validation, initialization.
#include "layers/linear.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "tests/layers/gradcheck.h"

namespace mb {
namespace {

using testing::check_gradients;
using testing::expect_close;
using testing::random_tensor;

TEST(Linear, ForwardMatchesNaiveLoops) {
  for (bool bias : {true, false}) {
    Linear linear(7, 5, bias);
    Tensor x = random_tensor({3, 7}, 1);
    Tensor y = linear.forward(x, RunState{});
    ASSERT_EQ(y.shape(), (Shape{3, 5}));
    EXPECT_EQ(linear.output_shape(x.shape()), y.shape());
    const std::vector<float> xv = x.to_vector(), w = linear.weight().value.to_vector();
    std::vector<float> expected(15);
    for (int n = 0; n < 3; ++n)
      for (int o = 0; o < 5; ++o) {
        double sum = bias ? linear.bias()->value.to_vector()[o] : 0.0;
        for (int i = 0; i < 7; ++i) sum += static_cast<double>(xv[n * 7 + i]) * w[o * 7 + i];
        expected[n * 5 + o] = static_cast<float>(sum);
      }
    expect_close(y.to_vector(), expected, 1e-5, 1e-6, "Linear forward");
  }
}

TEST(Linear, GradientsMatchFiniteDifferences) {
  for (bool bias : {true, false}) {
    Linear linear(6, 4, bias);
    linear.reset_parameters(9);
    testing::GradCheckOptions tight;  // linear in x and W: differences are exact up to rounding
    tight.rtol = 1e-3;
    tight.atol = 1e-4;
    check_gradients(linear, random_tensor({5, 6}, 2), 3, tight);
  }
  Linear single(1, 1);
  check_gradients(single, random_tensor({1, 1}, 4), 5);
}

TEST(Linear, AccumulateAddsToOverwriteAndInputGradIsOptional) {
  Linear linear(4, 3);
  Tensor x1 = random_tensor({2, 4}, 1), x2 = random_tensor({5, 4}, 2);
  Tensor g1 = random_tensor({2, 3}, 3), g2 = random_tensor({5, 3}, 4);
  BackwardState accumulate;
  accumulate.mode = GradientMode::Accumulate;
  accumulate.need_input_grad = false;
  linear.forward(x1, RunState{});
  linear.backward(g1, BackwardState{});
  const std::vector<float> w1 = linear.weight().grad.to_vector(),
                           b1 = linear.bias()->grad.to_vector();
  linear.forward(x2, RunState{});
  linear.backward(g2, BackwardState{});
  const std::vector<float> w2 = linear.weight().grad.to_vector(),
                           b2 = linear.bias()->grad.to_vector();
  linear.forward(x1, RunState{});
  linear.backward(g1, BackwardState{});
  linear.forward(x2, RunState{});
  EXPECT_FALSE(linear.backward(g2, accumulate).defined());
  std::vector<float> w_sum(w1.size()), b_sum(b1.size());
  for (std::size_t i = 0; i < w1.size(); ++i) w_sum[i] = w1[i] + w2[i];
  for (std::size_t i = 0; i < b1.size(); ++i) b_sum[i] = b1[i] + b2[i];
  expect_close(linear.weight().grad.to_vector(), w_sum, 1e-5, 1e-6, "accumulated weight grad");
  expect_close(linear.bias()->grad.to_vector(), b_sum, 1e-5, 1e-6, "accumulated bias grad");
  // The bias gradient is the column sum of the output gradient.
  const std::vector<float> g = g2.to_vector();
  for (int o = 0; o < 3; ++o) {
    double sum = 0.0;
    for (int n = 0; n < 5; ++n) sum += g[n * 3 + o];
    EXPECT_NEAR(b2[o], sum, 1e-5);
  }
}

TEST(Linear, ParametersInitializationAndCounts) {
  Linear linear(512, 10);
  auto params = linear.named_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].first, "weight");
  EXPECT_EQ(params[0].second->value.shape(), (Shape{10, 512}));
  EXPECT_TRUE(params[0].second->decay);
  EXPECT_EQ(params[1].first, "bias");
  EXPECT_FALSE(params[1].second->decay);
  EXPECT_EQ(linear.parameter_count(), 512 * 10 + 10);  // torchvision resnet fc to 10 classes
  const double bound = 1.0 / std::sqrt(512.0);
  double max_abs = 0.0, sum_sq = 0.0;
  const std::vector<float> w = linear.weight().value.to_vector();
  for (float v : w) {
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(v)));
    sum_sq += static_cast<double>(v) * v;
  }
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.95 * bound);
  EXPECT_NEAR(sum_sq / w.size(), bound * bound / 3.0, 0.1 * bound * bound / 3.0);
  EXPECT_EQ(Linear(512, 10).weight().value.to_vector(), w);
  EXPECT_EQ(linear.forward_flops({8, 512}), 2LL * 8 * 512 * 10);
  EXPECT_EQ(linear.saved_bytes({8, 512}), 8u * 512 * sizeof(float));
  EXPECT_EQ(Linear(3, 2, false).named_parameters().size(), 1u);
}

TEST(Linear, BadArgumentsThrowInvalidArgument) {
  const auto expect_invalid = [](auto&& f, const std::vector<std::string>& parts) {
    try {
      f();
      ADD_FAILURE() << "no exception";
    } catch (const InvalidArgument& e) {
      const std::string message = e.what();
      for (const std::string& part : parts) {
        EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
      }
    }
  };
  expect_invalid([] { Linear(0, 3); }, {"Linear(in_features=0"});
  Linear linear(8, 3);
  expect_invalid(
      [&] {
        linear.forward(random_tensor({2, 8, 1, 1}, 1), RunState{});
      },
      {"Linear(in_features=8", "2-D", "[2, 8, 1, 1]"});
  expect_invalid([&] { linear.output_shape({2, 7}); }, {"Linear", "[2, 7]", "expected 8"});
  expect_invalid(
      [&] {
        linear.backward(random_tensor({2, 3}, 1), BackwardState{});
      },
      {"Linear", "forward()"});
  linear.forward(random_tensor({2, 8}, 1), RunState{});
  expect_invalid(
      [&] {
        linear.backward(random_tensor({3, 3}, 1), BackwardState{});
      },
      {"Linear", "[3, 3]", "[2, 3]"});
}

}  // namespace
}  // namespace mb
