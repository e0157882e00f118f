// SoftmaxCrossEntropy on the CPU: a known value (uniform logits give ln C), losses against
// a naive double-precision computation, grad_logits against central differences of the
// loss (both reductions, label smoothing, ignore_index, [N, C] and [N, C, H, W]), the
// micro-batch contract (per-split gradients sum to the full-batch mean gradient), and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "layers/softmax_cross_entropy.h"
#include "runtime/error.h"
#include "tests/layers/gradcheck.h"

namespace mb {
namespace {

// Labels in [0, classes), with every `ignore_every`-th one set to ignore_index (0: none).
Tensor random_labels(const Shape& shape, int classes, std::uint64_t seed, int ignore_every = 0,
                     int ignore_index = -100) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(0, classes - 1);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < labels.size(); ++i) {
    labels[i] = (ignore_every > 0 && i % ignore_every == 1) ? ignore_index : dist(rng);
  }
  return Tensor::from_vector_int(labels, shape);
}

struct NaiveLoss {
  double sum = 0.0;
  std::int64_t valid = 0;
  std::int64_t correct = 0;
};

// -sum_c target_c log softmax(z)_c per element in double, over layout [outer, C, inner].
NaiveLoss naive_loss(const Tensor& logits, const Tensor& labels, double smoothing,
                     int ignore_index) {
  const std::vector<float> z = logits.to_vector();
  const std::vector<std::int32_t> y = labels.to_vector_int();
  const std::int64_t outer = logits.dim(0), classes = logits.dim(1);
  const std::int64_t inner = logits.numel() / (outer * classes);
  NaiveLoss result;
  for (std::int64_t n = 0; n < outer; ++n) {
    for (std::int64_t i = 0; i < inner; ++i) {
      const int label = y[n * inner + i];
      if (label == ignore_index) continue;
      auto at = [&](std::int64_t c) {
        return static_cast<double>(z[(n * classes + c) * inner + i]);
      };
      double max_value = at(0);
      std::int64_t argmax = 0;
      for (std::int64_t c = 1; c < classes; ++c) {
        if (at(c) > max_value) {
          max_value = at(c);
          argmax = c;
        }
      }
      double sum_exp = 0.0;
      for (std::int64_t c = 0; c < classes; ++c) sum_exp += std::exp(at(c) - max_value);
      for (std::int64_t c = 0; c < classes; ++c) {
        const double target = (c == label ? 1.0 - smoothing : 0.0) + smoothing / classes;
        result.sum -= target * (at(c) - max_value - std::log(sum_exp));
      }
      result.valid += 1;
      result.correct += argmax == label;
    }
  }
  return result;
}

TEST(SoftmaxCrossEntropy, UniformLogitsGiveLogC) {
  const int classes = 10;
  const Tensor logits = Tensor::full(Shape{6, classes}, 0.37f);
  const Tensor labels = Tensor::from_vector_int({0, 1, 2, 3, 4, 9}, Shape{6});
  const LossResult mean = SoftmaxCrossEntropy().forward(logits, labels);
  EXPECT_NEAR(mean.loss, std::log(10.0), 1e-6);
  EXPECT_EQ(mean.valid_count, 6);
  EXPECT_EQ(mean.correct, 1);  // ties: argmax is the first class
  EXPECT_FALSE(mean.grad_logits.defined());
  LossOptions sum_options;
  sum_options.reduction = Reduction::Sum;
  const LossResult sum = SoftmaxCrossEntropy(sum_options).forward(logits, labels);
  EXPECT_NEAR(sum.loss, 6 * std::log(10.0), 1e-5);
  EXPECT_NEAR(sum.loss_sum, mean.loss_sum, 1e-9);
}

TEST(SoftmaxCrossEntropy, LossMatchesNaiveDouble) {
  for (const float smoothing : {0.0f, 0.1f}) {
    LossOptions options;
    options.label_smoothing = smoothing;
    const SoftmaxCrossEntropy loss(options);
    const Tensor logits = testing::random_tensor(Shape{13, 7}, 1, -6.0f, 6.0f);
    const Tensor labels = random_labels(Shape{13}, 7, 2, 4);
    const LossResult r = loss.forward_backward(logits, labels);
    const NaiveLoss expected = naive_loss(logits, labels, smoothing, -100);
    EXPECT_EQ(r.valid_count, expected.valid);
    EXPECT_EQ(r.correct, expected.correct);
    EXPECT_NEAR(r.loss_sum, expected.sum, 1e-5 * expected.sum);
    EXPECT_NEAR(r.loss, expected.sum / expected.valid, 1e-5 * expected.sum / expected.valid);

    const Tensor seg_logits = testing::random_tensor(Shape{2, 5, 3, 4}, 3, -6.0f, 6.0f);
    const Tensor seg_labels = random_labels(Shape{2, 3, 4}, 5, 4, 5);
    const LossResult s = loss.forward(seg_logits, seg_labels);
    const NaiveLoss seg_expected = naive_loss(seg_logits, seg_labels, smoothing, -100);
    EXPECT_EQ(s.valid_count, seg_expected.valid);
    EXPECT_EQ(s.correct, seg_expected.correct);
    EXPECT_NEAR(s.loss_sum, seg_expected.sum, 1e-5 * seg_expected.sum);
  }
}

TEST(SoftmaxCrossEntropy, LargeLogitsStayFinite) {
  const Tensor logits = Tensor::from_vector({1000.0f, 0.0f, -1000.0f, 500.0f}, Shape{2, 2});
  const Tensor labels = Tensor::from_vector_int({1, 0}, Shape{2});
  LossOptions options;
  options.reduction = Reduction::Sum;
  const LossResult r = SoftmaxCrossEntropy(options).forward_backward(logits, labels);
  EXPECT_NEAR(r.loss, 1000.0 + 1500.0, 1e-3);
  for (float g : r.grad_logits.to_vector()) EXPECT_TRUE(std::isfinite(g));
}

// grad_logits against central differences of the reported (reduced) loss.
void check_loss_gradient(const LossOptions& options, const Shape& logits_shape,
                         const Shape& labels_shape, std::uint64_t seed) {
  const SoftmaxCrossEntropy loss(options);
  const int classes = static_cast<int>(logits_shape[1]);
  const Tensor logits = testing::random_tensor(logits_shape, seed, -3.0f, 3.0f);
  const Tensor labels = random_labels(labels_shape, classes, seed + 1, 3, options.ignore_index);
  const float seed_scale = 0.5f;
  const LossResult r = loss.forward_backward(logits, labels, seed_scale);
  Tensor x = logits.clone();
  float* xd = x.data<float>();
  const double eps = 5e-3;
  std::vector<float> numeric(static_cast<std::size_t>(x.numel()));
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const float saved = xd[i];
    xd[i] = saved + static_cast<float>(eps);
    const double plus = loss.forward(x, labels).loss;
    xd[i] = saved - static_cast<float>(eps);
    const double minus = loss.forward(x, labels).loss;
    xd[i] = saved;
    numeric[i] = static_cast<float>(seed_scale * (plus - minus) / (2 * eps));
  }
  testing::expect_close(r.grad_logits.to_vector(), numeric, 1e-2, 2e-4,
                        "grad_logits for " + logits_shape.to_string());
}

TEST(SoftmaxCrossEntropy, GradientMatchesFiniteDifferences) {
  for (const Reduction reduction : {Reduction::Mean, Reduction::Sum}) {
    for (const float smoothing : {0.0f, 0.2f}) {
      LossOptions options;
      options.reduction = reduction;
      options.label_smoothing = smoothing;
      options.ignore_index = 255;
      SCOPED_TRACE(::testing::Message()
                   << "reduction " << static_cast<int>(reduction) << ", smoothing " << smoothing);
      check_loss_gradient(options, Shape{6, 5}, Shape{6}, 10);
      check_loss_gradient(options, Shape{2, 4, 3, 2}, Shape{2, 3, 2}, 20);
    }
  }
}

TEST(SoftmaxCrossEntropy, IgnoredElementsHaveZeroGradientAndNoLoss) {
  const Tensor logits = testing::random_tensor(Shape{4, 3}, 5);
  const Tensor labels = Tensor::from_vector_int({0, -100, 2, -100}, Shape{4});
  const LossResult r = SoftmaxCrossEntropy().forward_backward(logits, labels);
  EXPECT_EQ(r.valid_count, 2);
  const std::vector<float> g = r.grad_logits.to_vector();
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(g[1 * 3 + c], 0.0f);
    EXPECT_EQ(g[3 * 3 + c], 0.0f);
  }
  const Tensor all_ignored = Tensor::from_vector_int({-100, -100, -100, -100}, Shape{4});
  const LossResult none = SoftmaxCrossEntropy().forward_backward(logits, all_ignored);
  EXPECT_TRUE(std::isnan(none.loss));  // mean over nothing is reported, not hidden
  for (float v : none.grad_logits.to_vector()) EXPECT_EQ(v, 0.0f);
}

// The engine's contract: the gradients of micro-batches [7, 7, 2] of a 16-sample batch,
// seeded so that they add up, equal the full-batch mean gradient.
TEST(SoftmaxCrossEntropy, MicroBatchGradientsSumToFullBatchMean) {
  const Tensor logits = testing::random_tensor(Shape{16, 10}, 7, -4.0f, 4.0f);
  const Tensor labels = random_labels(Shape{16}, 10, 8);
  LossOptions mean_options;
  mean_options.label_smoothing = 0.1f;
  const LossResult full = SoftmaxCrossEntropy(mean_options).forward_backward(logits, labels);
  const std::vector<float> expected = full.grad_logits.to_vector();

  LossOptions sum_options = mean_options;
  sum_options.reduction = Reduction::Sum;
  const std::int64_t bounds[][2] = {{0, 7}, {7, 14}, {14, 16}};
  std::vector<float> from_sum(expected.size(), 0.0f), from_mean(expected.size(), 0.0f);
  double loss_sum = 0.0;
  std::int64_t valid = 0;
  for (const auto& bound : bounds) {
    const Tensor part_logits = logits.slice(bound[0], bound[1]);
    const Tensor part_labels = labels.slice(bound[0], bound[1]);
    const LossResult s =
        SoftmaxCrossEntropy(sum_options).forward_backward(part_logits, part_labels, 1.0f / 16.0f);
    const auto n_k = static_cast<float>(bound[1] - bound[0]);
    const LossResult m =
        SoftmaxCrossEntropy(mean_options).forward_backward(part_logits, part_labels, n_k / 16.0f);
    const std::vector<float> gs = s.grad_logits.to_vector(), gm = m.grad_logits.to_vector();
    for (std::size_t i = 0; i < gs.size(); ++i) {
      from_sum[bound[0] * 10 + i] += gs[i];
      from_mean[bound[0] * 10 + i] += gm[i];
    }
    loss_sum += s.loss_sum;
    valid += s.valid_count;
  }
  testing::expect_close(from_sum, expected, 1e-6, 1e-9, "Sum with seed 1/16");
  testing::expect_close(from_mean, expected, 1e-6, 1e-9, "Mean with seed n_k/16");
  EXPECT_EQ(valid, 16);
  EXPECT_NEAR(loss_sum / valid, full.loss, 1e-12 + 1e-9 * full.loss);
}

TEST(SoftmaxCrossEntropy, RejectsBadLabelsAndShapes) {
  const SoftmaxCrossEntropy loss;
  const Tensor logits = Tensor::zeros(Shape{3, 4});
  try {
    loss.forward(logits, Tensor::from_vector_int({0, 7, 1}, Shape{3}));
    FAIL() << "an out-of-range label was accepted";
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("label 7"), std::string::npos) << message;
    EXPECT_NE(message.find("C = 4"), std::string::npos) << message;
  }
  EXPECT_THROW(loss.forward(logits, Tensor::from_vector_int({0, -1, 1}, Shape{3})),
               InvalidArgument);
  EXPECT_THROW(loss.forward(logits, Tensor::from_vector_int({0, 1}, Shape{2})), InvalidArgument);
  EXPECT_THROW(loss.forward(logits, Tensor::zeros(Shape{3})), InvalidArgument);  // float labels
  EXPECT_THROW(loss.forward(Tensor::zeros(Shape{2, 3, 4}), Tensor::zeros(Shape{2})),
               InvalidArgument);
  EXPECT_THROW(
      loss.forward(Tensor::zeros(Shape{2, 3, 4, 4}),
                   Tensor::from_vector_int(std::vector<std::int32_t>(32, 0), Shape{2, 4, 4, 1})),
      InvalidArgument);
  LossOptions bad;
  bad.label_smoothing = 1.5f;
  EXPECT_THROW(SoftmaxCrossEntropy{bad}, InvalidArgument);
}

}  // namespace
}  // namespace mb
