// The CPU twins in kernels/cpu/{activation,dropout,elementwise,upsample,
// softmax_cross_entropy} against naive loops written independently here (index formulas
// spelled out, double precision where it matters). These twins are the reference the CUDA
// kernels are tested against, so they must be right on their own.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/softmax_cross_entropy.h"
#include "kernels/cpu/upsample.h"
#include "runtime/error.h"
#include "runtime/philox.h"

namespace mb {
namespace {

std::vector<float> random_values(std::size_t count, std::uint64_t seed, float low = -3.0f,
                                 float high = 9.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(low, high);
  std::vector<float> values(count);
  for (float& v : values) v = dist(rng);
  return values;
}

TEST(ElementwiseKernels, ReluAndRelu6MatchDefinitions) {
  std::vector<float> x = random_values(1003, 1);
  x[0] = 0.0f;
  x[1] = 6.0f;
  std::vector<float> dy = random_values(x.size(), 2);
  std::vector<float> y(x.size()), dx(x.size()), y6(x.size()), dx6(x.size());
  cpu::relu_forward(Stream(), x.data(), y.data(), static_cast<std::int64_t>(x.size()));
  cpu::relu_backward(Stream(), y.data(), dy.data(), dx.data(), static_cast<std::int64_t>(x.size()));
  cpu::relu6_forward(Stream(), x.data(), y6.data(), static_cast<std::int64_t>(x.size()));
  cpu::relu6_backward(Stream(), y6.data(), dy.data(), dx6.data(),
                      static_cast<std::int64_t>(x.size()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(y[i], std::max(x[i], 0.0f)) << i;
    EXPECT_EQ(dx[i], x[i] > 0.0f ? dy[i] : 0.0f) << i;
    EXPECT_EQ(y6[i], std::min(std::max(x[i], 0.0f), 6.0f)) << i;
    EXPECT_EQ(dx6[i], (x[i] > 0.0f && x[i] < 6.0f) ? dy[i] : 0.0f) << i;
  }
}

TEST(ElementwiseKernels, AddAndAddInto) {
  const std::vector<float> a = random_values(517, 3), b = random_values(517, 4);
  const auto n = static_cast<std::int64_t>(a.size());
  std::vector<float> out(a.size());
  cpu::add(Stream(), a.data(), b.data(), out.data(), n);
  std::vector<float> dst = a;
  cpu::add_into(Stream(), dst.data(), b.data(), n);
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(out[i], a[i] + b[i]);
    EXPECT_EQ(dst[i], a[i] + b[i]);
  }
}

TEST(ElementwiseKernels, ConcatAndSplitChannelsFollowNchwIndexing) {
  const std::int64_t n = 3, ca = 2, cb = 5, h = 4, w = 3;
  const std::vector<float> a = random_values(n * ca * h * w, 5);
  const std::vector<float> b = random_values(n * cb * h * w, 6);
  std::vector<float> out(n * (ca + cb) * h * w);
  cpu::concat_channels(Stream(), a.data(), b.data(), out.data(), n, ca, cb, h * w);
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t c = 0; c < ca + cb; ++c) {
      for (std::int64_t p = 0; p < h * w; ++p) {
        const float expected =
            c < ca ? a[(i * ca + c) * h * w + p] : b[(i * cb + (c - ca)) * h * w + p];
        ASSERT_EQ(out[(i * (ca + cb) + c) * h * w + p], expected);
      }
    }
  }
  std::vector<float> a2(a.size()), b2(b.size());
  cpu::split_channels(Stream(), out.data(), a2.data(), b2.data(), n, ca, cb, h * w);
  EXPECT_EQ(a2, a);
  EXPECT_EQ(b2, b);
}

TEST(ElementwiseKernels, UpsampleNearestForwardAndBackward) {
  const std::int64_t planes = 3, h = 3, w = 5;
  const int s = 3;
  const std::vector<float> x = random_values(planes * h * w, 7);
  std::vector<float> y(planes * h * s * w * s);
  cpu::upsample_nearest2d_forward(Stream(), x.data(), y.data(), planes, h, w, s);
  for (std::int64_t p = 0; p < planes; ++p) {
    for (std::int64_t oy = 0; oy < h * s; ++oy) {
      for (std::int64_t ox = 0; ox < w * s; ++ox) {
        ASSERT_EQ(y[(p * h * s + oy) * w * s + ox], x[(p * h + oy / s) * w + ox / s]);
      }
    }
  }
  const std::vector<float> dy = random_values(y.size(), 8);
  std::vector<float> dx(x.size());
  cpu::upsample_nearest2d_backward(Stream(), dy.data(), dx.data(), planes, h, w, s);
  // Scatter-add definition: every output pixel adds its gradient to its source pixel.
  std::vector<double> expected(x.size(), 0.0);
  for (std::int64_t p = 0; p < planes; ++p) {
    for (std::int64_t oy = 0; oy < h * s; ++oy) {
      for (std::int64_t ox = 0; ox < w * s; ++ox) {
        expected[(p * h + oy / s) * w + ox / s] += dy[(p * h * s + oy) * w * s + ox];
      }
    }
  }
  for (std::size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(dx[i], expected[i], 1e-5) << i;
}

TEST(ElementwiseKernels, DropoutMaskIsThePhiloxRule) {
  const std::int64_t samples = 5, per_sample = 37;
  const std::vector<float> x = random_values(samples * per_sample, 9);
  std::vector<float> y(x.size());
  DropoutKey key;
  key.p = 0.3f;
  key.seed = 0x1234'5678'9ABCULL;
  key.stream_id = 7;
  key.step = 11;
  key.sample_offset = 40;
  cpu::dropout_apply(Stream(), x.data(), y.data(), samples, per_sample, key);
  int dropped = 0;
  for (std::int64_t s = 0; s < samples; ++s) {
    for (std::int64_t e = 0; e < per_sample; ++e) {
      const float u = philox_element_uniform(key.seed, 7, 11, static_cast<std::uint32_t>(40 + s),
                                             static_cast<std::uint32_t>(e));
      const float expected = u >= 0.3f ? x[s * per_sample + e] / 0.7f : 0.0f;
      ASSERT_NEAR(y[s * per_sample + e], expected, 1e-6f * std::fabs(expected));
      dropped += u < 0.3f;
    }
  }
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(dropout_scale(1.0f), 0.0f);
  EXPECT_FLOAT_EQ(dropout_scale(0.5f), 2.0f);
}

// Naive per-element cross-entropy in double, directly from the definition
// -sum_c target_c * log softmax(z)_c.
double naive_cross_entropy(const std::vector<double>& z, int label, double smoothing) {
  double max_value = z[0];
  for (double v : z) max_value = std::max(max_value, v);
  double sum = 0.0;
  for (double v : z) sum += std::exp(v - max_value);
  double loss = 0.0;
  for (std::size_t c = 0; c < z.size(); ++c) {
    const double log_p = z[c] - max_value - std::log(sum);
    const double target =
        (static_cast<int>(c) == label ? 1.0 - smoothing : 0.0) + smoothing / z.size();
    loss -= target * log_p;
  }
  return loss;
}

TEST(ElementwiseKernels, SoftmaxCrossEntropyMatchesNaiveDouble) {
  const std::int64_t outer = 3, classes = 6, inner = 4;
  const std::vector<float> logits = random_values(outer * classes * inner, 10, -5.0f, 5.0f);
  std::vector<std::int32_t> labels = {0, 5, 2, -100, 1, 1, 3, 4, 5, -100, 0, 2};
  const float smoothing = 0.1f;
  EXPECT_EQ(cpu::count_valid_labels(labels.data(), 12, classes, -100), 10);
  std::vector<float> grad(logits.size());
  const CrossEntropyTotals totals =
      cpu::softmax_cross_entropy(Stream(), logits.data(), labels.data(), outer, classes, inner,
                                 smoothing, -100, 2.0f, CrossEntropyGradScale::Sum, grad.data());
  double expected_sum = 0.0;
  std::int64_t expected_correct = 0;
  for (std::int64_t n = 0; n < outer; ++n) {
    for (std::int64_t i = 0; i < inner; ++i) {
      const int label = labels[n * inner + i];
      std::vector<double> z(classes);
      for (std::int64_t c = 0; c < classes; ++c) z[c] = logits[(n * classes + c) * inner + i];
      if (label == -100) {
        for (std::int64_t c = 0; c < classes; ++c) {
          EXPECT_EQ(grad[(n * classes + c) * inner + i], 0.0f);
        }
        continue;
      }
      expected_sum += naive_cross_entropy(z, label, smoothing);
      const auto argmax = std::max_element(z.begin(), z.end()) - z.begin();
      expected_correct += argmax == label;
      // Gradient of the per-element loss by central differences in double.
      for (std::int64_t c = 0; c < classes; ++c) {
        std::vector<double> zp = z, zm = z;
        zp[c] += 1e-5;
        zm[c] -= 1e-5;
        const double numeric = (naive_cross_entropy(zp, label, smoothing) -
                                naive_cross_entropy(zm, label, smoothing)) /
                               2e-5;
        EXPECT_NEAR(grad[(n * classes + c) * inner + i], 2.0 * numeric, 1e-5);
      }
    }
  }
  EXPECT_EQ(totals.valid_count, 10);
  EXPECT_EQ(totals.correct, expected_correct);
  EXPECT_NEAR(totals.loss_sum, expected_sum, 1e-5 * expected_sum);
}

TEST(ElementwiseKernels, CountValidLabelsRejectsOutOfRange) {
  const std::vector<std::int32_t> labels = {0, 3, -100, 4};
  EXPECT_THROW(cpu::count_valid_labels(labels.data(), 4, 4, -100), InvalidArgument);
  try {
    cpu::count_valid_labels(labels.data(), 4, 4, -100);
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("label 4"), std::string::npos) << e.what();
  }
  const std::vector<std::int32_t> negative = {-1};
  EXPECT_THROW(cpu::count_valid_labels(negative.data(), 1, 4, -100), InvalidArgument);
  EXPECT_EQ(cpu::count_valid_labels(labels.data(), 3, 4, -100), 2);
}

}  // namespace
}  // namespace mb
