// ConvTranspose2d on the CPU backend: forward against the scatter definition and as the
// adjoint of Conv2d, gradients against finite differences, Accumulate, validation.
#include "layers/conv_transpose2d.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "layers/conv2d.h"
#include "runtime/error.h"
#include "tests/layers/gradcheck.h"

namespace mb {
namespace {

using testing::check_gradients;
using testing::expect_close;
using testing::random_tensor;

// The layer is linear in its input and in its parameters, so central differences are exact
// up to float rounding of the outputs: a tolerance much tighter than the checker's default.
testing::GradCheckOptions tight_tolerance() {
  testing::GradCheckOptions options;
  options.rtol = 1e-3;
  options.atol = 1e-4;
  return options;
}
const testing::GradCheckOptions kTightTolerance = tight_tolerance();

struct TransposeCase {
  std::int64_t batch, in_channels, out_channels, height, width;
  int kernel, stride, padding, output_padding;
  bool bias;
};

std::string name_of(const TransposeCase& c) {
  return detail::concat("N", c.batch, " C", c.in_channels, " O", c.out_channels, " ", c.height, "x",
                        c.width, " k", c.kernel, " s", c.stride, " p", c.padding, " op",
                        c.output_padding, c.bias ? " bias" : " no-bias");
}

const std::vector<TransposeCase> kCases = {
    {2, 3, 4, 4, 5, 4, 2, 1, 0, true},   // DCGAN upsampling: 4 -> 8
    {1, 2, 3, 3, 3, 3, 2, 1, 1, true},   // output_padding: 3 -> 6
    {2, 3, 2, 5, 4, 3, 1, 1, 0, false},  // stride 1 (same size)
    {1, 4, 2, 3, 4, 2, 2, 0, 0, true},   // U-Net up-conv 2x2 stride 2
    {2, 3, 5, 4, 3, 1, 1, 0, 0, true},   // pointwise (no col2im)
    {1, 2, 2, 3, 3, 5, 3, 2, 2, false},  // large kernel, stride 3
};

// The definition (scatter): every input pixel adds its weighted kernel to the output:
// y[n][o][i*s - p + ki][j*s - p + kj] += x[n][c][i][j] * w[c][o][ki][kj].
std::vector<float> scatter_transpose(const std::vector<float>& x, const std::vector<float>& w,
                                     const std::vector<float>* b, const TransposeCase& c,
                                     std::int64_t out_h, std::int64_t out_w) {
  std::vector<double> y(static_cast<std::size_t>(c.batch * c.out_channels * out_h * out_w), 0.0);
  for (std::int64_t n = 0; n < c.batch; ++n)
    for (std::int64_t ci = 0; ci < c.in_channels; ++ci)
      for (std::int64_t i = 0; i < c.height; ++i)
        for (std::int64_t j = 0; j < c.width; ++j) {
          const double value = x[((n * c.in_channels + ci) * c.height + i) * c.width + j];
          for (std::int64_t o = 0; o < c.out_channels; ++o)
            for (int ki = 0; ki < c.kernel; ++ki)
              for (int kj = 0; kj < c.kernel; ++kj) {
                const std::int64_t oh = i * c.stride - c.padding + ki;
                const std::int64_t ow = j * c.stride - c.padding + kj;
                if (oh < 0 || oh >= out_h || ow < 0 || ow >= out_w) continue;
                y[((n * c.out_channels + o) * out_h + oh) * out_w + ow] +=
                    value * w[((ci * c.out_channels + o) * c.kernel + ki) * c.kernel + kj];
              }
        }
  std::vector<float> result(y.size());
  for (std::size_t idx = 0; idx < y.size(); ++idx) {
    const std::int64_t o = (static_cast<std::int64_t>(idx) / (out_h * out_w)) % c.out_channels;
    result[idx] = static_cast<float>(y[idx] + (b != nullptr ? (*b)[o] : 0.0));
  }
  return result;
}

TEST(ConvTranspose2d, OutputShapesFollowPyTorch) {
  // Values from torch.nn.ConvTranspose2d's documented formula.
  EXPECT_EQ(ConvTranspose2d(8, 4, 4, 2, 1).output_shape({1, 8, 4, 4}), (Shape{1, 4, 8, 8}));
  EXPECT_EQ(ConvTranspose2d(8, 4, 3, 2, 1, 1).output_shape({2, 8, 3, 5}), (Shape{2, 4, 6, 10}));
  EXPECT_EQ(ConvTranspose2d(8, 4, 2, 2).output_shape({1, 8, 7, 7}), (Shape{1, 4, 14, 14}));
  EXPECT_EQ(ConvTranspose2d(8, 4, 3).output_shape({1, 8, 5, 5}), (Shape{1, 4, 7, 7}));
}

TEST(ConvTranspose2d, ForwardMatchesScatterDefinition) {
  for (const TransposeCase& c : kCases) {
    SCOPED_TRACE(name_of(c));
    ConvTranspose2d convt(c.in_channels, c.out_channels, c.kernel, c.stride, c.padding,
                          c.output_padding, c.bias);
    convt.reset_parameters(5);
    Tensor x = random_tensor({c.batch, c.in_channels, c.height, c.width}, 8);
    Tensor y = convt.forward(x, RunState{});
    const std::int64_t out_h =
        (c.height - 1) * c.stride - 2 * c.padding + c.kernel + c.output_padding;
    const std::int64_t out_w =
        (c.width - 1) * c.stride - 2 * c.padding + c.kernel + c.output_padding;
    ASSERT_EQ(y.shape(), (Shape{c.batch, c.out_channels, out_h, out_w}));
    EXPECT_EQ(convt.output_shape(x.shape()), y.shape());
    std::vector<float> bias_values;
    if (c.bias) bias_values = convt.bias()->value.to_vector();
    const std::vector<float> expected =
        scatter_transpose(x.to_vector(), convt.weight().value.to_vector(),
                          c.bias ? &bias_values : nullptr, c, out_h, out_w);
    expect_close(y.to_vector(), expected, 1e-5, 1e-5, "ConvTranspose2d forward");
  }
}

// <conv(u), x> == <u, convT(x)> when Conv2d(out -> in) and ConvTranspose2d(in -> out) share
// the weight [in, out, k, k] and have no bias.
TEST(ConvTranspose2d, IsTheAdjointOfConv2d) {
  for (const TransposeCase& c : kCases) {
    SCOPED_TRACE(name_of(c));
    ConvTranspose2d convt(c.in_channels, c.out_channels, c.kernel, c.stride, c.padding,
                          c.output_padding, false);
    Conv2d conv(c.out_channels, c.in_channels, c.kernel, c.stride, c.padding, 1, 1, false);
    conv.weight().value.copy_from(convt.weight().value);
    Tensor x = random_tensor({c.batch, c.in_channels, c.height, c.width}, 31);
    Tensor y = convt.forward(x, RunState{});
    Tensor u = random_tensor(y.shape(), 32);
    Tensor conv_u = conv.forward(u, RunState{});
    ASSERT_EQ(conv_u.shape(), x.shape());
    const std::vector<float> xv = x.to_vector(), yv = y.to_vector(), uv = u.to_vector(),
                             cv = conv_u.to_vector();
    double lhs = 0.0, rhs = 0.0;
    for (std::size_t i = 0; i < xv.size(); ++i) lhs += static_cast<double>(cv[i]) * xv[i];
    for (std::size_t i = 0; i < uv.size(); ++i) rhs += static_cast<double>(uv[i]) * yv[i];
    EXPECT_NEAR(lhs, rhs, 1e-4 * (std::fabs(rhs) + 1.0));
  }
}

TEST(ConvTranspose2d, GradientsMatchFiniteDifferences) {
  for (const TransposeCase& c : kCases) {
    SCOPED_TRACE(name_of(c));
    ConvTranspose2d convt(c.in_channels, c.out_channels, c.kernel, c.stride, c.padding,
                          c.output_padding, c.bias);
    Tensor x = random_tensor({c.batch, c.in_channels, c.height, c.width}, 41);
    check_gradients(convt, x, 43, kTightTolerance);
  }
}

TEST(ConvTranspose2d, AccumulateAddsToOverwrite) {
  ConvTranspose2d convt(3, 4, 3, 2, 1, 1, true);
  Tensor x1 = random_tensor({2, 3, 4, 4}, 1), x2 = random_tensor({1, 3, 4, 4}, 2);
  Tensor g1 = random_tensor(convt.output_shape(x1.shape()), 3);
  Tensor g2 = random_tensor(convt.output_shape(x2.shape()), 4);
  BackwardState accumulate;
  accumulate.mode = GradientMode::Accumulate;
  convt.forward(x1, RunState{});
  convt.backward(g1, BackwardState{});
  const std::vector<float> w1 = convt.weight().grad.to_vector(),
                           b1 = convt.bias()->grad.to_vector();
  convt.forward(x2, RunState{});
  convt.backward(g2, BackwardState{});
  const std::vector<float> w2 = convt.weight().grad.to_vector(),
                           b2 = convt.bias()->grad.to_vector();
  convt.forward(x1, RunState{});
  convt.backward(g1, BackwardState{});
  convt.forward(x2, RunState{});
  Tensor grad_input = convt.backward(g2, accumulate);
  std::vector<float> w_sum(w1.size()), b_sum(b1.size());
  for (std::size_t i = 0; i < w1.size(); ++i) w_sum[i] = w1[i] + w2[i];
  for (std::size_t i = 0; i < b1.size(); ++i) b_sum[i] = b1[i] + b2[i];
  expect_close(convt.weight().grad.to_vector(), w_sum, 1e-5, 1e-6, "accumulated weight grad");
  expect_close(convt.bias()->grad.to_vector(), b_sum, 1e-5, 1e-6, "accumulated bias grad");
  EXPECT_EQ(grad_input.shape(), x2.shape());
}

TEST(ConvTranspose2d, ParametersInitializationAndFlops) {
  ConvTranspose2d convt(6, 4, 3, 2, 1, 1);
  auto params = convt.named_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].first, "weight");
  EXPECT_EQ(params[0].second->value.shape(), (Shape{6, 4, 3, 3}));  // [in, out, k, k]
  EXPECT_EQ(params[1].first, "bias");
  EXPECT_FALSE(params[1].second->decay);
  // PyTorch: fan_in = weight.size(1) * k * k = 36, bound 1/6.
  double max_abs = 0.0;
  for (float v : convt.weight().value.to_vector())
    max_abs = std::max(max_abs, std::fabs(double(v)));
  EXPECT_LE(max_abs, 1.0 / 6.0);
  EXPECT_GT(max_abs, 0.8 / 6.0);
  ConvTranspose2d same(6, 4, 3, 2, 1, 1);
  EXPECT_EQ(same.weight().value.to_vector(), convt.weight().value.to_vector());
  same.reset_parameters(1);
  EXPECT_NE(same.weight().value.to_vector(), convt.weight().value.to_vector());
  // Each input pixel scatters out_channels * k * k multiply-adds.
  EXPECT_EQ(convt.forward_flops({2, 6, 5, 5}), 2LL * 2 * 6 * 5 * 5 * 4 * 9);
  EXPECT_EQ(convt.saved_bytes({2, 6, 5, 5}), 2u * 6 * 5 * 5 * sizeof(float));
}

TEST(ConvTranspose2d, BadArgumentsThrowInvalidArgument) {
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
  expect_invalid([] { ConvTranspose2d(4, 4, 3, 2, 1, 2); },
                 {"ConvTranspose2d", "output_padding=2"});
  expect_invalid([] { ConvTranspose2d(4, 4, 3, 0); }, {"ConvTranspose2d", "stride=0"});
  ConvTranspose2d convt(4, 2, 3, 1, 2);
  expect_invalid(
      [&] {
        convt.output_shape({1, 3, 5, 5});
      },
      {"ConvTranspose2d(4, 2", "[1, 3, 5, 5]", "expected 4"});
  expect_invalid([&] { convt.output_shape({4, 5, 5}); }, {"ConvTranspose2d", "4-D", "[4, 5, 5]"});
  expect_invalid([&] { convt.output_shape({1, 4, 1, 1}); }, {"ConvTranspose2d", "[1, 4, 1, 1]"});
  convt.forward(random_tensor({1, 4, 5, 5}, 1), RunState{});
  expect_invalid(
      [&] {
        convt.backward(random_tensor({1, 2, 5, 5}, 1), BackwardState{});
      },
      {"ConvTranspose2d", "[1, 2, 5, 5]", "[1, 2, 3, 3]"});
}

}  // namespace
}  // namespace mb
