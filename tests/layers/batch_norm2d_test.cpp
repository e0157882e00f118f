// BatchNorm2d on the CPU: forward against naive double loops, finite-difference gradients,
// the micro-batch running-statistics contract (docs/architecture.md, "Contracts") against a
// full-batch run and the closed form PyTorch would record, and argument checking.
#include "layers/batch_norm2d.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "tests/layers/gradcheck.h"

namespace mb {
namespace {

using testing::check_gradients;
using testing::expect_close;
using testing::random_tensor;

struct ChannelStats {
  std::vector<double> mean;
  std::vector<double> biased_var;
  std::vector<double> unbiased_var;
};

// Per-channel statistics of the samples [begin, end) of an NCHW tensor, by naive loops.
ChannelStats naive_stats(const Tensor& x, std::int64_t begin, std::int64_t end) {
  const std::vector<float> v = x.to_vector();
  const std::int64_t c = x.dim(1), hw = x.dim(2) * x.dim(3);
  ChannelStats s;
  for (std::int64_t ch = 0; ch < c; ++ch) {
    double sum = 0.0;
    std::int64_t count = 0;
    for (std::int64_t i = begin; i < end; ++i)
      for (std::int64_t j = 0; j < hw; ++j, ++count) sum += v[(i * c + ch) * hw + j];
    const double mean = sum / count;
    double sq = 0.0;
    for (std::int64_t i = begin; i < end; ++i)
      for (std::int64_t j = 0; j < hw; ++j) {
        const double d = v[(i * c + ch) * hw + j] - mean;
        sq += d * d;
      }
    s.mean.push_back(mean);
    s.biased_var.push_back(sq / count);
    s.unbiased_var.push_back(sq / (count - 1));
  }
  return s;
}

std::vector<float> naive_normalize(const Tensor& x, const std::vector<double>& mean,
                                   const std::vector<double>& var, double eps,
                                   const std::vector<float>& weight,
                                   const std::vector<float>& bias) {
  const std::vector<float> v = x.to_vector();
  const std::int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  std::vector<float> y(v.size());
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t ch = 0; ch < c; ++ch)
      for (std::int64_t j = 0; j < hw; ++j) {
        const std::size_t e = static_cast<std::size_t>((i * c + ch) * hw + j);
        y[e] = static_cast<float>((v[e] - mean[ch]) / std::sqrt(var[ch] + eps) * weight[ch] +
                                  bias[ch]);
      }
  return y;
}

void set_values(Tensor& t, const std::vector<float>& values) {
  t.copy_from(Tensor::from_vector(values, t.shape()));
}

RunState training_state() {
  RunState s;
  s.training = true;
  return s;
}

RunState eval_state() {
  RunState s;
  s.training = false;
  return s;
}

// Channel-dependent offsets and scales, so each channel has its own mean and variance.
Tensor channel_data(const Shape& shape, std::uint64_t seed) {
  return testing::channel_data(shape, seed, [](float v, std::int64_t ch) {
    return v * (0.5f + ch) + 0.75f * static_cast<float>(ch) - 0.3f;
  });
}

TEST(BatchNorm2d, ParametersAndBuffersFollowTorchvisionNames) {
  BatchNorm2d bn(4);
  auto params = bn.named_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].first, "weight");
  EXPECT_EQ(params[1].first, "bias");
  EXPECT_FALSE(params[0].second->decay);
  EXPECT_FALSE(params[1].second->decay);
  EXPECT_EQ(params[0].second->value.to_vector(), std::vector<float>(4, 1.0f));
  EXPECT_EQ(params[1].second->value.to_vector(), std::vector<float>(4, 0.0f));
  auto buffers = bn.named_buffers();
  ASSERT_EQ(buffers.size(), 3u);
  EXPECT_EQ(buffers[0].first, "running_mean");
  EXPECT_EQ(buffers[1].first, "running_var");
  EXPECT_EQ(buffers[2].first, "num_batches_tracked");
  EXPECT_EQ(buffers[0].second->to_vector(), std::vector<float>(4, 0.0f));
  EXPECT_EQ(buffers[1].second->to_vector(), std::vector<float>(4, 1.0f));
  EXPECT_EQ(buffers[2].second->dtype(), DType::Int32);
  EXPECT_EQ(buffers[2].second->shape(), Shape{});
  EXPECT_EQ(buffers[2].second->to_vector_int(), std::vector<std::int32_t>{0});
  EXPECT_EQ(bn.parameter_count(), 8);
}

TEST(BatchNorm2d, TrainingForwardMatchesNaiveLoops) {
  BatchNorm2d bn(3, 1e-3);
  const std::vector<float> weight{0.5f, -1.5f, 2.0f}, bias{0.1f, 0.0f, -0.7f};
  set_values(bn.weight().value, weight);
  set_values(bn.bias().value, bias);
  Tensor x = channel_data(Shape{5, 3, 3, 7}, 1);
  Tensor y = bn.forward(x, training_state());
  ASSERT_EQ(y.shape(), x.shape());
  EXPECT_EQ(y.tag(), MemoryTag::Activation);
  const ChannelStats s = naive_stats(x, 0, 5);
  expect_close(y.to_vector(), naive_normalize(x, s.mean, s.biased_var, 1e-3, weight, bias), 1e-5,
               1e-5, "training output");
  // A forward alone never touches the running statistics.
  EXPECT_EQ(bn.running_mean().to_vector(), std::vector<float>(3, 0.0f));
  EXPECT_EQ(bn.running_var().to_vector(), std::vector<float>(3, 1.0f));
  EXPECT_EQ(bn.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{0});
}

TEST(BatchNorm2d, EvalForwardUsesRunningStatistics) {
  BatchNorm2d bn(2, 1e-5);
  const std::vector<float> weight{1.5f, -0.5f}, bias{0.25f, 1.0f};
  set_values(bn.weight().value, weight);
  set_values(bn.bias().value, bias);
  set_values(bn.running_mean(), {0.3f, -2.0f});
  set_values(bn.running_var(), {4.0f, 0.25f});
  Tensor x = channel_data(Shape{3, 2, 4, 5}, 2);
  Tensor y = bn.forward(x, eval_state());
  expect_close(y.to_vector(), naive_normalize(x, {0.3, -2.0}, {4.0, 0.25}, 1e-5, weight, bias),
               1e-5, 1e-6, "eval output");
  // Eval forwards add nothing to the statistics; end_batch then changes nothing.
  EXPECT_EQ(bn.accumulated_count(), 0);
  bn.end_batch();
  EXPECT_EQ(bn.running_mean().to_vector(), (std::vector<float>{0.3f, -2.0f}));
  EXPECT_EQ(bn.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{0});
}

// Note: the finite-difference step stays at 1e-2 on inputs of spread ~1; BN's output is
// scale-invariant in x, so the loss is smooth and well conditioned there. A BN eps of 1e-3
// (instead of 1e-5) keeps the tiny-variance direction of the Jacobian away from the fp32
// noise floor; the formulas checked do not depend on it.
TEST(BatchNorm2d, TrainingGradientsMatchFiniteDifferences) {
  BatchNorm2d bn(3, 1e-3);
  set_values(bn.weight().value, {0.7f, -1.2f, 1.5f});
  set_values(bn.bias().value, {0.2f, -0.1f, 0.3f});
  Tensor x = channel_data(Shape{3, 3, 3, 5}, 3);
  testing::GradCheckOptions options;
  options.state = training_state();
  check_gradients(bn, x, 11, options);
}

TEST(BatchNorm2d, EvalGradientsMatchFiniteDifferences) {
  BatchNorm2d bn(2);
  set_values(bn.weight().value, {0.7f, -1.2f});
  set_values(bn.bias().value, {0.2f, -0.1f});
  set_values(bn.running_mean(), {0.1f, -0.4f});
  set_values(bn.running_var(), {0.5f, 2.0f});
  Tensor x = channel_data(Shape{2, 2, 3, 3}, 4);
  testing::GradCheckOptions options;
  options.state = eval_state();
  check_gradients(bn, x, 12, options);
}

TEST(BatchNorm2d, AccumulateModeAddsToOverwriteResult) {
  BatchNorm2d bn(3);
  set_values(bn.weight().value, {0.7f, -1.2f, 1.5f});
  Tensor x1 = channel_data(Shape{4, 3, 2, 3}, 5);
  Tensor x2 = channel_data(Shape{3, 3, 2, 3}, 6);
  Tensor g1 = random_tensor(x1.shape(), 7);
  Tensor g2 = random_tensor(x2.shape(), 8);
  BackwardState overwrite, accumulate;
  accumulate.mode = GradientMode::Accumulate;

  bn.forward(x1, training_state());
  Tensor dx1 = bn.backward(g1, overwrite);
  const std::vector<float> w1 = bn.weight().grad.to_vector(), b1 = bn.bias().grad.to_vector();
  bn.forward(x2, training_state());
  bn.backward(g2, overwrite);
  const std::vector<float> w2 = bn.weight().grad.to_vector(), b2 = bn.bias().grad.to_vector();

  bn.forward(x1, training_state());
  Tensor dx1_again = bn.backward(g1, overwrite);
  bn.forward(x2, training_state());
  bn.backward(g2, accumulate);
  std::vector<float> w_sum(3), b_sum(3);
  for (int i = 0; i < 3; ++i) {
    w_sum[i] = w1[i] + w2[i];
    b_sum[i] = b1[i] + b2[i];
  }
  expect_close(bn.weight().grad.to_vector(), w_sum, 1e-6, 1e-6, "accumulated weight grad");
  expect_close(bn.bias().grad.to_vector(), b_sum, 1e-6, 1e-6, "accumulated bias grad");
  // The input gradient is never accumulated.
  EXPECT_EQ(dx1.to_vector(), dx1_again.to_vector());
  // The weight gradient really changed between micro-batches (the test can fail).
  EXPECT_GT(std::fabs(w1[0] - w2[0]), 1e-4);
}

TEST(BatchNorm2d, NoInputGradientWhenNotNeeded) {
  BatchNorm2d bn(2);
  Tensor x = channel_data(Shape{2, 2, 2, 2}, 9);
  bn.forward(x, training_state());
  BackwardState state;
  state.need_input_grad = false;
  Tensor dx = bn.backward(random_tensor(x.shape(), 10), state);
  EXPECT_FALSE(dx.defined());
  EXPECT_TRUE(bn.weight().grad.defined());
}

// The heart of the BN contract: micro-batches [7, 7, 2] of a 16-sample batch record the
// running statistics of one full-batch forward, which are PyTorch's (unbiased variance).
TEST(BatchNorm2d, MicroBatchRunningStatsEqualFullBatch) {
  const Shape shape{16, 3, 3, 4};
  Tensor x = channel_data(shape, 21);
  const ChannelStats full = naive_stats(x, 0, 16);

  BatchNorm2d split(3);
  split.begin_batch();
  std::int64_t begin = 0;
  for (std::int64_t size : {7, 7, 2}) {
    split.forward(x.slice(begin, begin + size), training_state());
    split.commit_micro_batch();
    begin += size;
  }
  EXPECT_EQ(split.accumulated_count(), 16 * 12);
  split.end_batch();
  EXPECT_EQ(split.accumulated_count(), 0);

  BatchNorm2d whole(3);
  whole.begin_batch();
  whole.forward(x, training_state());
  whole.end_batch();

  std::vector<float> expected_mean(3), expected_var(3);
  for (int ch = 0; ch < 3; ++ch) {
    expected_mean[ch] = static_cast<float>(0.9 * 0.0 + 0.1 * full.mean[ch]);
    expected_var[ch] = static_cast<float>(0.9 * 1.0 + 0.1 * full.unbiased_var[ch]);
  }
  expect_close(split.running_mean().to_vector(), whole.running_mean().to_vector(), 1e-5, 1e-7,
               "split vs full running_mean");
  expect_close(split.running_var().to_vector(), whole.running_var().to_vector(), 1e-5, 1e-7,
               "split vs full running_var");
  expect_close(split.running_mean().to_vector(), expected_mean, 1e-5, 1e-7,
               "split running_mean vs closed form");
  expect_close(split.running_var().to_vector(), expected_var, 1e-5, 1e-7,
               "split running_var vs closed form");
  expect_close(whole.running_mean().to_vector(), expected_mean, 1e-5, 1e-7,
               "full running_mean vs PyTorch's");
  expect_close(whole.running_var().to_vector(), expected_var, 1e-5, 1e-7,
               "full running_var vs PyTorch's (unbiased)");
  EXPECT_EQ(split.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{1});
  EXPECT_EQ(whole.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{1});

  // The per-micro-batch statistics differ from the full batch's: aggregating matters.
  const ChannelStats last = naive_stats(x, 14, 16);
  EXPECT_GT(std::fabs(last.mean[1] - full.mean[1]), 1e-3);
}

TEST(BatchNorm2d, UncommittedMicroBatchesCountAtEndBatch) {
  // Standalone use without commit calls: begin, three forwards, end.
  Tensor x = channel_data(Shape{16, 2, 2, 3}, 22);
  const ChannelStats full = naive_stats(x, 0, 16);
  BatchNorm2d bn(2, 1e-5, 0.25);
  bn.begin_batch();
  bn.forward(x.slice(0, 7), training_state());
  bn.forward(x.slice(7, 14), training_state());
  bn.forward(x.slice(14, 16), training_state());
  bn.end_batch();
  std::vector<float> mean(2), var(2);
  for (int ch = 0; ch < 2; ++ch) {
    mean[ch] = static_cast<float>(0.25 * full.mean[ch]);
    var[ch] = static_cast<float>(0.75 + 0.25 * full.unbiased_var[ch]);
  }
  expect_close(bn.running_mean().to_vector(), mean, 1e-5, 1e-7, "running_mean");
  expect_close(bn.running_var().to_vector(), var, 1e-5, 1e-7, "running_var");
}

TEST(BatchNorm2d, AbortedMicroBatchIsNotCounted) {
  Tensor x = channel_data(Shape{10, 2, 3, 3}, 23);
  Tensor junk = channel_data(Shape{4, 2, 3, 3}, 24);
  const ChannelStats full = naive_stats(x, 0, 10);
  BatchNorm2d bn(2);
  bn.begin_batch();
  bn.forward(x.slice(0, 6), training_state());
  bn.commit_micro_batch();
  bn.forward(junk, training_state());  // e.g. an OutOfMemory later in this micro-batch
  bn.abort_micro_batch();
  bn.forward(x.slice(6, 10), training_state());
  bn.commit_micro_batch();
  EXPECT_EQ(bn.accumulated_count(), 10 * 9);
  bn.end_batch();
  std::vector<float> mean(2), var(2);
  for (int ch = 0; ch < 2; ++ch) {
    mean[ch] = static_cast<float>(0.1 * full.mean[ch]);
    var[ch] = static_cast<float>(0.9 + 0.1 * full.unbiased_var[ch]);
  }
  expect_close(bn.running_mean().to_vector(), mean, 1e-5, 1e-7, "running_mean");
  expect_close(bn.running_var().to_vector(), var, 1e-5, 1e-7, "running_var");
}

TEST(BatchNorm2d, BeginBatchResetsAndEmptyEndBatchDoesNothing) {
  Tensor x = channel_data(Shape{4, 2, 2, 2}, 25);
  BatchNorm2d bn(2);
  bn.forward(channel_data(Shape{3, 2, 2, 2}, 26), training_state());  // stale, dropped below
  bn.begin_batch();
  EXPECT_EQ(bn.accumulated_count(), 0);
  bn.end_batch();  // nothing seen since begin_batch
  EXPECT_EQ(bn.running_mean().to_vector(), std::vector<float>(2, 0.0f));
  EXPECT_EQ(bn.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{0});
  bn.forward(x, training_state());
  bn.end_batch();
  const ChannelStats s = naive_stats(x, 0, 4);
  expect_close(bn.running_mean().to_vector(),
               {static_cast<float>(0.1 * s.mean[0]), static_cast<float>(0.1 * s.mean[1])}, 1e-5,
               1e-7, "running_mean after reset");
}

TEST(BatchNorm2d, TwoBatchesChainMomentum) {
  Tensor a = channel_data(Shape{6, 2, 2, 2}, 27);
  Tensor b = channel_data(Shape{5, 2, 2, 2}, 28);
  const ChannelStats sa = naive_stats(a, 0, 6), sb = naive_stats(b, 0, 5);
  BatchNorm2d bn(2);
  for (const Tensor* batch : {&a, &b}) {
    bn.begin_batch();
    bn.forward(batch->slice(0, 3), training_state());
    bn.commit_micro_batch();
    bn.forward(batch->slice(3, batch->dim(0)), training_state());
    bn.commit_micro_batch();
    bn.end_batch();
  }
  std::vector<float> mean(2), var(2);
  for (int ch = 0; ch < 2; ++ch) {
    mean[ch] = static_cast<float>(0.9 * (0.1 * sa.mean[ch]) + 0.1 * sb.mean[ch]);
    var[ch] =
        static_cast<float>(0.9 * (0.9 + 0.1 * sa.unbiased_var[ch]) + 0.1 * sb.unbiased_var[ch]);
  }
  expect_close(bn.running_mean().to_vector(), mean, 1e-5, 1e-7, "running_mean");
  expect_close(bn.running_var().to_vector(), var, 1e-5, 1e-7, "running_var");
  EXPECT_EQ(bn.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{2});
}

TEST(BatchNorm2d, UpdatePerForwardBehavesLikePyTorch) {
  Tensor x = channel_data(Shape{5, 2, 3, 2}, 29);
  BatchNorm2d hooks(2), standalone(2);
  standalone.set_update_per_forward(true);
  hooks.begin_batch();
  hooks.forward(x, training_state());
  hooks.end_batch();
  standalone.forward(x, training_state());
  EXPECT_EQ(standalone.running_mean().to_vector(), hooks.running_mean().to_vector());
  EXPECT_EQ(standalone.running_var().to_vector(), hooks.running_var().to_vector());
  EXPECT_EQ(standalone.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{1});
  EXPECT_EQ(standalone.accumulated_count(), 0);
  EXPECT_NE(standalone.running_mean().to_vector(), std::vector<float>(2, 0.0f));
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no InvalidArgument thrown";
}

TEST(BatchNorm2d, BadInputsThrowNamingLayerAndShape) {
  BatchNorm2d bn(3);
  const RunState s = training_state();
  std::string m = message_of([&] { bn.forward(Tensor::zeros(Shape{2, 3, 4}), s); });
  EXPECT_NE(m.find("BatchNorm2d(3)"), std::string::npos) << m;
  EXPECT_NE(m.find("[2, 3, 4]"), std::string::npos) << m;
  m = message_of([&] { bn.forward(Tensor::zeros(Shape{2, 4, 5, 5}), s); });
  EXPECT_NE(m.find("BatchNorm2d(3)"), std::string::npos) << m;
  EXPECT_NE(m.find("[2, 4, 5, 5]"), std::string::npos) << m;
  m = message_of([&] { bn.output_shape(Shape{2, 2, 5, 5}); });
  EXPECT_NE(m.find("[2, 2, 5, 5]"), std::string::npos) << m;
  // One value per channel: no batch variance can be formed (PyTorch refuses it as well).
  m = message_of([&] { bn.forward(Tensor::zeros(Shape{1, 3, 1, 1}), s); });
  EXPECT_NE(m.find("more than one value"), std::string::npos) << m;
  m = message_of([&] { bn.backward(Tensor::zeros(Shape{2, 3, 2, 2}), BackwardState{}); });
  EXPECT_NE(m.find("forward"), std::string::npos) << m;
  bn.forward(Tensor::zeros(Shape{2, 3, 2, 2}), s);
  m = message_of([&] { bn.backward(Tensor::zeros(Shape{2, 3, 2, 3}), BackwardState{}); });
  EXPECT_NE(m.find("[2, 3, 2, 3]"), std::string::npos) << m;
  EXPECT_THROW(BatchNorm2d(0), InvalidArgument);
  EXPECT_THROW(BatchNorm2d(2, 0.0), InvalidArgument);
  EXPECT_THROW(BatchNorm2d(2, 1e-5, 1.5), InvalidArgument);
}

TEST(BatchNorm2d, ShapeFlopsAndSavedBytes) {
  BatchNorm2d bn(8);
  const Shape in{4, 8, 5, 6};
  EXPECT_EQ(bn.output_shape(in), in);
  EXPECT_EQ(bn.forward_flops(in), 4 * in.numel());
  EXPECT_EQ(bn.saved_bytes(in), static_cast<std::size_t>(in.numel() + 16) * 4);
}

}  // namespace
}  // namespace mb
