// Conv2d on the CPU backend: forward against a naive direct convolution, gradients against
// finite differences, Accumulate against Overwrite, argument validation, initialization.
#include "layers/conv2d.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/cpu/im2col.h"
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

struct ConvCase {
  std::int64_t batch, in_channels, out_channels, height, width;
  int kernel, stride, padding, dilation, groups;
  bool bias;
};

std::string name_of(const ConvCase& c) {
  return detail::concat("N", c.batch, " C", c.in_channels, " O", c.out_channels, " ", c.height, "x",
                        c.width, " k", c.kernel, " s", c.stride, " p", c.padding, " d", c.dilation,
                        " g", c.groups, c.bias ? " bias" : " no-bias");
}

// The definition: y[n][o][i][j] = b[o] + sum_{c in group(o), ki, kj}
//   w[o][c - group_start][ki][kj] * x[n][c][i*s - p + ki*d][j*s - p + kj*d], summed in double.
std::vector<float> naive_conv2d(const std::vector<float>& x, const std::vector<float>& w,
                                const std::vector<float>* b, const ConvCase& c, std::int64_t out_h,
                                std::int64_t out_w) {
  const std::int64_t group_in = c.in_channels / c.groups;
  const std::int64_t group_out = c.out_channels / c.groups;
  std::vector<float> y(static_cast<std::size_t>(c.batch * c.out_channels * out_h * out_w));
  for (std::int64_t n = 0; n < c.batch; ++n) {
    for (std::int64_t o = 0; o < c.out_channels; ++o) {
      const std::int64_t group = o / group_out;
      for (std::int64_t i = 0; i < out_h; ++i) {
        for (std::int64_t j = 0; j < out_w; ++j) {
          double sum = b != nullptr ? (*b)[o] : 0.0;
          for (std::int64_t ci = 0; ci < group_in; ++ci) {
            const std::int64_t channel = group * group_in + ci;
            for (int ki = 0; ki < c.kernel; ++ki) {
              for (int kj = 0; kj < c.kernel; ++kj) {
                const std::int64_t ih = i * c.stride - c.padding + ki * c.dilation;
                const std::int64_t iw = j * c.stride - c.padding + kj * c.dilation;
                if (ih < 0 || ih >= c.height || iw < 0 || iw >= c.width) continue;
                sum +=
                    static_cast<double>(w[((o * group_in + ci) * c.kernel + ki) * c.kernel + kj]) *
                    x[((n * c.in_channels + channel) * c.height + ih) * c.width + iw];
              }
            }
          }
          y[((n * c.out_channels + o) * out_h + i) * out_w + j] = static_cast<float>(sum);
        }
      }
    }
  }
  return y;
}

const std::vector<ConvCase> kCases = {
    {2, 3, 4, 7, 6, 3, 1, 1, 1, 1, true},   // same padding, odd sizes
    {2, 3, 5, 9, 8, 3, 2, 1, 1, 1, true},   // stride 2
    {1, 4, 6, 8, 9, 3, 1, 2, 2, 2, false},  // dilation 2, groups 2
    {2, 4, 4, 7, 7, 3, 2, 1, 1, 4, true},   // depthwise, stride 2
    {2, 4, 8, 5, 5, 1, 1, 0, 1, 1, true},   // pointwise (no lowering)
    {1, 2, 3, 6, 7, 1, 2, 0, 1, 1, false},  // 1x1 stride 2 (downsample shortcut)
    {1, 2, 2, 9, 9, 5, 3, 2, 1, 1, true},   // large kernel, stride 3
    {2, 6, 4, 5, 4, 2, 1, 0, 2, 2, true},   // even kernel, dilation, groups
};

TEST(Conv2d, ForwardMatchesNaiveConvolution) {
  for (const ConvCase& c : kCases) {
    SCOPED_TRACE(name_of(c));
    Conv2d conv(c.in_channels, c.out_channels, c.kernel, c.stride, c.padding, c.dilation, c.groups,
                c.bias);
    conv.reset_parameters(7);
    Tensor x = random_tensor({c.batch, c.in_channels, c.height, c.width}, 11);
    Tensor y = conv.forward(x, RunState{});
    const std::int64_t out_h =
        (c.height + 2 * c.padding - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
    const std::int64_t out_w =
        (c.width + 2 * c.padding - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
    ASSERT_EQ(y.shape(), (Shape{c.batch, c.out_channels, out_h, out_w}));
    EXPECT_EQ(conv.output_shape(x.shape()), y.shape());
    std::vector<float> bias_values;
    if (c.bias) bias_values = conv.bias()->value.to_vector();
    const std::vector<float> expected =
        naive_conv2d(x.to_vector(), conv.weight().value.to_vector(),
                     c.bias ? &bias_values : nullptr, c, out_h, out_w);
    expect_close(y.to_vector(), expected, 1e-5, 1e-5, "Conv2d forward");
  }
}

TEST(Conv2d, GradientsMatchFiniteDifferences) {
  for (const ConvCase& c : kCases) {
    SCOPED_TRACE(name_of(c));
    Conv2d conv(c.in_channels, c.out_channels, c.kernel, c.stride, c.padding, c.dilation, c.groups,
                c.bias);
    conv.reset_parameters(3);
    Tensor x = random_tensor({c.batch, c.in_channels, c.height, c.width}, 5);
    check_gradients(conv, x, 17, kTightTolerance);
  }
}

TEST(Conv2d, NoInputGradientWhenNotNeeded) {
  Conv2d conv(3, 4, 3, 1, 1);
  Tensor x = random_tensor({2, 3, 5, 5}, 1);
  Tensor y = conv.forward(x, RunState{});
  BackwardState state;
  state.need_input_grad = false;
  Tensor grad = conv.backward(random_tensor(y.shape(), 2), state);
  EXPECT_FALSE(grad.defined());
  EXPECT_TRUE(conv.weight().grad.defined());
  // The parameter gradients are the same as with the input gradient.
  const std::vector<float> without = conv.weight().grad.to_vector();
  conv.forward(x, RunState{});
  conv.backward(random_tensor(y.shape(), 2), BackwardState{});
  EXPECT_EQ(conv.weight().grad.to_vector(), without);
}

TEST(Conv2d, AccumulateAddsToOverwrite) {
  Conv2d conv(4, 6, 3, 2, 1, 1, 2, true);
  Tensor x1 = random_tensor({2, 4, 7, 7}, 21), x2 = random_tensor({3, 4, 7, 7}, 22);
  const Shape s1 = conv.output_shape(x1.shape()), s2 = conv.output_shape(x2.shape());
  Tensor g1 = random_tensor(s1, 23), g2 = random_tensor(s2, 24);
  BackwardState overwrite;
  BackwardState accumulate;
  accumulate.mode = GradientMode::Accumulate;

  conv.forward(x1, RunState{});
  conv.backward(g1, overwrite);
  const std::vector<float> w1 = conv.weight().grad.to_vector();
  const std::vector<float> b1 = conv.bias()->grad.to_vector();
  conv.forward(x2, RunState{});
  conv.backward(g2, overwrite);
  const std::vector<float> w2 = conv.weight().grad.to_vector();
  const std::vector<float> b2 = conv.bias()->grad.to_vector();

  // Overwrite discards what was there; Accumulate then adds the second micro-batch.
  conv.forward(x1, RunState{});
  conv.backward(g1, overwrite);
  conv.forward(x2, RunState{});
  conv.backward(g2, accumulate);
  std::vector<float> w_sum(w1.size()), b_sum(b1.size());
  for (std::size_t i = 0; i < w1.size(); ++i) w_sum[i] = w1[i] + w2[i];
  for (std::size_t i = 0; i < b1.size(); ++i) b_sum[i] = b1[i] + b2[i];
  expect_close(conv.weight().grad.to_vector(), w_sum, 1e-5, 1e-6, "accumulated weight grad");
  expect_close(conv.bias()->grad.to_vector(), b_sum, 1e-5, 1e-6, "accumulated bias grad");
  // And two Accumulate calls on top of a zero gradient give the same sum.
  conv.weight().grad.zero();
  conv.bias()->grad.zero();
  conv.forward(x1, RunState{});
  conv.backward(g1, accumulate);
  conv.forward(x2, RunState{});
  conv.backward(g2, accumulate);
  expect_close(conv.weight().grad.to_vector(), w_sum, 1e-5, 1e-6, "two accumulates");
}

// The micro-batch contract: Overwrite on the first slice, Accumulate on the rest, gives the
// gradient of the whole batch (2 + 3 = 5 samples), and each slice's input gradient is the
// matching rows of the whole batch's.
TEST(Conv2d, SplitBatchAccumulatesToFullBatchGradient) {
  Conv2d conv(4, 6, 3, 2, 1, 1, 2, true);
  Tensor x = random_tensor({5, 4, 7, 7}, 31);
  Tensor g = random_tensor(conv.output_shape(x.shape()), 32);
  conv.forward(x, RunState{});
  const std::vector<float> dx_full = conv.backward(g, BackwardState{}).to_vector();
  const std::vector<float> dw_full = conv.weight().grad.to_vector();
  const std::vector<float> db_full = conv.bias()->grad.to_vector();

  BackwardState accumulate;
  accumulate.mode = GradientMode::Accumulate;
  conv.forward(x.slice(0, 2).clone(), RunState{});
  std::vector<float> dx_split = conv.backward(g.slice(0, 2).clone(), BackwardState{}).to_vector();
  conv.forward(x.slice(2, 5).clone(), RunState{});
  const std::vector<float> dx_rest = conv.backward(g.slice(2, 5).clone(), accumulate).to_vector();
  dx_split.insert(dx_split.end(), dx_rest.begin(), dx_rest.end());
  expect_close(conv.weight().grad.to_vector(), dw_full, 1e-5, 1e-5, "split weight grad");
  expect_close(conv.bias()->grad.to_vector(), db_full, 1e-5, 1e-5, "split bias grad");
  expect_close(dx_split, dx_full, 1e-6, 1e-6, "split input grad");
}

TEST(Conv2d, ParametersAndInitialization) {
  Conv2d conv(8, 16, 3, 1, 1, 1, 2, true);
  auto params = conv.named_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].first, "weight");
  EXPECT_EQ(params[0].second->value.shape(), (Shape{16, 4, 3, 3}));
  EXPECT_TRUE(params[0].second->decay);
  EXPECT_EQ(params[0].second->value.tag(), MemoryTag::Param);
  EXPECT_EQ(params[1].first, "bias");
  EXPECT_EQ(params[1].second->value.shape(), (Shape{16}));
  EXPECT_FALSE(params[1].second->decay);
  EXPECT_EQ(Conv2d(3, 8, 3, 1, 1, 1, 1, false).named_parameters().size(), 1u);

  // PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 4 * 3 * 3 = 36, whose
  // variance is bound^2 / 3.
  const double bound = 1.0 / 6.0;
  const std::vector<float> w = conv.weight().value.to_vector();
  double sum = 0.0, sum_sq = 0.0, max_abs = 0.0;
  for (float v : w) {
    sum += v;
    sum_sq += static_cast<double>(v) * v;
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(v)));
  }
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.9 * bound);
  EXPECT_NEAR(sum / w.size(), 0.0, 0.02);
  EXPECT_NEAR(sum_sq / w.size(), bound * bound / 3.0, 0.2 * bound * bound / 3.0);

  // Same seed, same values; another seed, other values; the default seed is fixed.
  Conv2d other(8, 16, 3, 1, 1, 1, 2, true);
  EXPECT_EQ(other.weight().value.to_vector(), w);
  other.reset_parameters(99);
  EXPECT_NE(other.weight().value.to_vector(), w);
  conv.reset_parameters(99);
  EXPECT_EQ(other.weight().value.to_vector(), conv.weight().value.to_vector());
  EXPECT_EQ(other.bias()->value.to_vector(), conv.bias()->value.to_vector());
}

TEST(Conv2d, FlopsAndSavedBytes) {
  Conv2d conv(64, 128, 3, 2, 1);
  const Shape input{4, 64, 56, 56};
  // 28 x 28 outputs, each 64 * 9 multiply-adds per output channel.
  EXPECT_EQ(conv.forward_flops(input), 2LL * 4 * 128 * 28 * 28 * 64 * 9);
  EXPECT_EQ(conv.saved_bytes(input), 4u * 64 * 56 * 56 * sizeof(float));
  Conv2d depthwise(32, 32, 3, 1, 1, 1, 32);
  EXPECT_EQ(depthwise.forward_flops({1, 32, 10, 10}), 2LL * 32 * 10 * 10 * 9);
}

// Expects `f` to throw mb::InvalidArgument whose message holds every one of `parts`.
template <typename F>
void expect_invalid(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    for (const std::string& part : parts) {
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
    }
  }
}

TEST(Conv2d, BadArgumentsThrowInvalidArgument) {
  expect_invalid([] { Conv2d(6, 4, 3, 1, 1, 1, 4); }, {"Conv2d", "groups=4", "in_channels=6"});
  expect_invalid([] { Conv2d(6, 4, 3, 0); }, {"Conv2d", "stride=0"});
  expect_invalid([] { Conv2d(6, 4, 0); }, {"Conv2d", "kernel_size=0"});
  expect_invalid([] { Conv2d(3, 4, 3, 1, -1); }, {"Conv2d", "padding=-1"});
  Conv2d conv(3, 4, 5, 1, 1);
  expect_invalid(
      [&] {
        conv.forward(random_tensor({2, 4, 8, 8}, 1), RunState{});
      },
      {"Conv2d(3, 4", "[2, 4, 8, 8]", "expected 3"});
  expect_invalid([&] { conv.output_shape({2, 3, 2, 8}); }, {"Conv2d", "[2, 3, 2, 8]", "larger"});
  expect_invalid([&] { conv.output_shape({3, 8, 8}); }, {"Conv2d", "4-D", "[3, 8, 8]"});
  expect_invalid(
      [&] {
        conv.backward(random_tensor({2, 4, 6, 6}, 1), BackwardState{});
      },
      {"Conv2d", "forward()"});
  conv.forward(random_tensor({2, 3, 8, 8}, 1), RunState{});
  expect_invalid(
      [&] {
        conv.backward(random_tensor({2, 4, 5, 5}, 1), BackwardState{});
      },
      {"Conv2d", "[2, 4, 5, 5]", "[2, 4, 6, 6]"});
}

TEST(Conv2d, BackwardReleasesTheCachedInput) {
  Conv2d conv(2, 2, 3, 1, 1);
  Tensor x = random_tensor({1, 2, 4, 4}, 3);
  Tensor y = conv.forward(x, RunState{});
  EXPECT_EQ(x.storage().use_count(), 2);  // the test's handle and the cache
  conv.backward(random_tensor(y.shape(), 4), BackwardState{});
  EXPECT_EQ(x.storage().use_count(), 1);
  conv.forward(x, RunState{});
  conv.clear_cache();
  EXPECT_EQ(x.storage().use_count(), 1);
}

TEST(Conv2d, TensorsCarryTheirMemoryTags) {
  Conv2d conv(2, 3, 3, 1, 1);
  Tensor y = conv.forward(random_tensor({1, 2, 4, 4}, 3), RunState{});
  EXPECT_EQ(y.tag(), MemoryTag::Activation);
  Tensor dx = conv.backward(random_tensor(y.shape(), 4), BackwardState{});
  EXPECT_EQ(dx.tag(), MemoryTag::Activation);
  EXPECT_EQ(conv.weight().value.tag(), MemoryTag::Param);
  EXPECT_EQ(conv.weight().grad.tag(), MemoryTag::Grad);
  EXPECT_EQ(conv.bias()->grad.tag(), MemoryTag::Grad);
}

// im2col and col2im are adjoint: <im2col(x), c> == <x, col2im(c)>.
TEST(Conv2d, Im2colAndCol2imAreAdjoint) {
  const cpu::ConvWindow window{3, 2, 2, 1, 1, 0, 2, 1};
  const std::int64_t channels = 2, height = 7, width = 6;
  const std::int64_t out_h = conv_output_size(height, 3, 2, 1, 2);
  const std::int64_t out_w = conv_output_size(width, 2, 1, 0, 1);
  ASSERT_EQ(out_h, 3);
  ASSERT_EQ(out_w, 5);
  const std::vector<float> x = random_tensor({channels, height, width}, 1).to_vector();
  const std::vector<float> c = random_tensor({channels * 3 * 2, out_h * out_w}, 2).to_vector();
  std::vector<float> columns(c.size(), 123.0f);  // im2col must overwrite every entry
  cpu::im2col(x.data(), channels, height, width, window, columns.data());
  std::vector<float> image(x.size(), 0.0f);
  cpu::col2im(c.data(), channels, height, width, window, image.data());
  double lhs = 0.0, rhs = 0.0;
  for (std::size_t i = 0; i < c.size(); ++i) lhs += static_cast<double>(columns[i]) * c[i];
  for (std::size_t i = 0; i < x.size(); ++i) rhs += static_cast<double>(x[i]) * image[i];
  EXPECT_NEAR(lhs, rhs, 1e-4 * std::fabs(rhs) + 1e-5);
  // A tap that reads padding is zero: row (c=0, ki=0, kj=0), output row 0 reads ih = -1.
  for (std::int64_t ow = 0; ow < out_w; ++ow) EXPECT_EQ(columns[ow], 0.0f);
}

}  // namespace
}  // namespace mb
