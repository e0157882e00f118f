// evaluate() (engine/evaluate.h): loss and accuracy in inference mode, in chunks. The truth
// is computed in the test, in double precision, from the weights it chose: logits by the
// layers' formulas (BatchNorm with its running statistics, dropout as the identity, a linear
// map), the loss as logsumexp(z) - z[label] averaged over the labels that are not ignored,
// and the accuracy by argmax.
#include "engine/evaluate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "runtime/allocator_registry.h"
#include "runtime/error.h"
#include "tests/pool_delegate.h"

namespace mb {
namespace {

struct Truth {
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  std::int64_t valid = 0;
  double loss() const { return loss_sum / static_cast<double>(valid); }
};

// Adds one element with logits `z` and label `label` to `truth` (nothing when ignored).
void add_element(Truth& truth, const std::vector<double>& z, int label, int ignore_index) {
  if (label == ignore_index) return;
  const double top = *std::max_element(z.begin(), z.end());
  double sum = 0.0;
  for (double v : z) sum += std::exp(v - top);
  truth.loss_sum += top + std::log(sum) - z[static_cast<std::size_t>(label)];
  // Argmax, with the runner-up far enough away that fp32 logits cannot reorder them.
  std::vector<double> sorted = z;
  std::sort(sorted.rbegin(), sorted.rend());
  EXPECT_GT(sorted[0] - sorted[1], 1e-3) << "a near tie: choose other test values";
  const auto best = std::max_element(z.begin(), z.end()) - z.begin();
  truth.correct += best == label ? 1 : 0;
  ++truth.valid;
}

void set_values(Tensor& tensor, const std::vector<float>& values) {
  tensor.copy_from(Tensor::from_vector(values, tensor.shape()));
}

std::vector<float> normal_values(std::size_t count, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(count);
  for (float& v : values) v = normal(rng);
  return values;
}

void expect_matches(const EvalResult& result, const Truth& truth, const std::string& what) {
  EXPECT_EQ(result.valid, truth.valid) << what;
  EXPECT_EQ(result.correct, truth.correct) << what;
  // fp32 logits against fp64 ones: a few ulps of float per element.
  EXPECT_NEAR(result.loss, truth.loss(), 1e-5 * std::max(1.0, truth.loss())) << what;
  EXPECT_DOUBLE_EQ(result.accuracy(), static_cast<double>(truth.correct) / truth.valid) << what;
}

// bn (2 channels, running statistics set below) -> dropout(0.5) -> flatten -> fc(2 -> 3),
// on inputs [N, 2, 1, 1]. Training mode would normalize with the chunk's own statistics
// (and refuse a 1-sample chunk) and drop half the features, so every chunk size below
// tells inference from training.
constexpr std::int64_t kClasses = 3;
const std::vector<float> kGamma = {1.5f, -0.5f}, kBeta = {0.2f, 0.1f};
const std::vector<float> kRunningMean = {0.3f, -0.2f}, kRunningVar = {2.0f, 0.5f};
const std::vector<float> kWeight = {1.0f, -2.0f, 0.5f, 1.5f, -1.0f, 0.25f};  // [3, 2]
const std::vector<float> kBias = {0.1f, -0.3f, 0.2f};

struct ClassifierModel {
  std::shared_ptr<Sequential> net = std::make_shared<Sequential>();
  std::shared_ptr<BatchNorm2d> bn;
};

ClassifierModel classifier() {
  ClassifierModel m;
  m.bn = m.net->add("bn", std::make_shared<BatchNorm2d>(2));
  m.net->add("drop", std::make_shared<Dropout>(0.5f, 3));
  m.net->add("flatten", std::make_shared<Flatten>());
  auto fc = m.net->add("fc", std::make_shared<Linear>(2, kClasses));
  set_values(m.bn->weight().value, kGamma);
  set_values(m.bn->bias().value, kBeta);
  set_values(m.bn->running_mean(), kRunningMean);
  set_values(m.bn->running_var(), kRunningVar);
  set_values(fc->weight().value, kWeight);
  set_values(fc->bias()->value, kBias);
  return m;
}

Truth classifier_truth(const std::vector<float>& x, const std::vector<std::int32_t>& labels,
                       int ignore_index) {
  Truth truth;
  const double eps = 1e-5;  // BatchNorm2d's default
  for (std::size_t i = 0; i < labels.size(); ++i) {
    double y[2];
    for (std::size_t c = 0; c < 2; ++c) {
      y[c] = kGamma[c] * (x[2 * i + c] - static_cast<double>(kRunningMean[c])) /
                 std::sqrt(static_cast<double>(kRunningVar[c]) + eps) +
             kBeta[c];
    }
    std::vector<double> z(kClasses);
    for (std::size_t j = 0; j < kClasses; ++j) {
      z[j] = static_cast<double>(kWeight[2 * j]) * y[0] +
             static_cast<double>(kWeight[2 * j + 1]) * y[1] + kBias[j];
    }
    add_element(truth, z, labels[i], ignore_index);
  }
  return truth;
}

TEST(Evaluate, ClassifierLossAndAccuracyInInferenceModeForEveryChunkSize) {
  constexpr std::int64_t kSamples = 7;
  const std::vector<float> x = normal_values(2 * kSamples, 11);
  // Sample 4 is ignored (the default ignore_index). The argmax of the hand-computed logits
  // is [1, 1, 2, 0, 0, 2, 0]: samples 0, 2, 3 and 6 are right, 1 and 5 wrong.
  const std::vector<std::int32_t> labels = {1, 2, 2, 0, -100, 0, 0};
  const Truth truth = classifier_truth(x, labels, -100);
  ASSERT_EQ(truth.valid, 6);
  ASSERT_EQ(truth.correct, 4);
  ClassifierModel m = classifier();
  const Tensor images = Tensor::from_vector(x, {kSamples, 2, 1, 1});
  const Tensor label_tensor = Tensor::from_vector_int(labels, {kSamples});
  const EvalResult whole = evaluate(*m.net, Device::cpu(), images, label_tensor, kSamples, {});
  expect_matches(whole, truth, "one chunk");
  // Chunk sizes that divide 7 and that do not, and one larger than the data: only the
  // grouping of the same per-sample losses changes.
  for (std::int64_t chunk : {1, 2, 3, 4, 6, 100}) {
    const EvalResult chunked = evaluate(*m.net, Device::cpu(), images, label_tensor, chunk, {});
    const std::string what = "chunk " + std::to_string(chunk);
    expect_matches(chunked, truth, what);
    EXPECT_EQ(chunked.correct, whole.correct) << what;
    EXPECT_NEAR(chunked.loss, whole.loss, 1e-12 * whole.loss) << what;
  }
  // Inference reads the running statistics and leaves them, and gathers no batch sums.
  EXPECT_EQ(m.bn->running_mean().to_vector(), kRunningMean);
  EXPECT_EQ(m.bn->running_var().to_vector(), kRunningVar);
  EXPECT_EQ(m.bn->num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{0});
  EXPECT_EQ(m.bn->accumulated_count(), 0);
}

TEST(Evaluate, LossIsThePlainMeanWhateverTheTrainingLossOptions) {
  constexpr std::int64_t kSamples = 5;
  const std::vector<float> x = normal_values(2 * kSamples, 12);
  // ignore_index 2: the samples labelled 2 do not count, in the loss or in the accuracy.
  // The argmax is [1, 1, 0, 2, 2]: of the valid samples 1 and 2 are right, 4 is wrong, and
  // the ignored sample 3 would be right if it counted.
  const std::vector<std::int32_t> labels = {2, 1, 0, 2, 1};
  const Truth truth = classifier_truth(x, labels, 2);
  ASSERT_EQ(truth.valid, 3);
  ASSERT_EQ(truth.correct, 2);
  ClassifierModel m = classifier();
  LossOptions options;
  options.ignore_index = 2;
  options.label_smoothing = 0.3f;      // a training option: evaluation reports plain CE
  options.reduction = Reduction::Sum;  // evaluation reports the mean all the same
  for (std::int64_t chunk : {1, 2, 5}) {
    const EvalResult result =
        evaluate(*m.net, Device::cpu(), Tensor::from_vector(x, {kSamples, 2, 1, 1}),
                 Tensor::from_vector_int(labels, {kSamples}), chunk, options);
    expect_matches(result, truth, "chunk " + std::to_string(chunk));
  }
}

TEST(Evaluate, SegmentationCountsPixelsAndSkipsIgnoredOnes) {
  // A 1x1 convolution 2 -> 3 channels: per-pixel logits z = W x + b.
  constexpr std::int64_t kSamples = 3, kHeight = 2, kWidth = 3;
  const std::vector<float> weight = {0.8f, -1.2f, -0.4f, 0.9f, 1.1f, 0.3f};  // [3, 2, 1, 1]
  const std::vector<float> bias = {0.05f, -0.1f, 0.2f};
  Conv2d conv(2, 3, 1);
  set_values(conv.weight().value, weight);
  set_values(conv.bias()->value, bias);
  const std::int64_t pixels = kHeight * kWidth;
  const std::vector<float> x = normal_values(static_cast<std::size_t>(kSamples * 2 * pixels), 13);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(kSamples * pixels));
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int32_t>(i % 3);
  labels[1] = labels[8] = labels[15] = labels[16] = 255;  // ignored pixels
  Truth truth;
  for (std::int64_t n = 0; n < kSamples; ++n) {
    for (std::int64_t p = 0; p < pixels; ++p) {
      std::vector<double> z(3);
      for (std::size_t j = 0; j < 3; ++j) {
        z[j] = bias[j];
        for (std::int64_t c = 0; c < 2; ++c) {
          z[j] += static_cast<double>(weight[2 * j + static_cast<std::size_t>(c)]) *
                  x[static_cast<std::size_t>((n * 2 + c) * pixels + p)];
        }
      }
      add_element(truth, z, labels[static_cast<std::size_t>(n * pixels + p)], 255);
    }
  }
  ASSERT_EQ(truth.valid, kSamples * pixels - 4);
  LossOptions options;
  options.ignore_index = 255;
  for (std::int64_t chunk : {1, 2, 3}) {
    const EvalResult result =
        evaluate(conv, Device::cpu(), Tensor::from_vector(x, {kSamples, 2, kHeight, kWidth}),
                 Tensor::from_vector_int(labels, {kSamples, kHeight, kWidth}), chunk, options);
    expect_matches(result, truth, "chunk " + std::to_string(chunk));
  }
}

TEST(Evaluate, RefusesWhatItCannotRun) {
  ClassifierModel m = classifier();
  const Tensor images = Tensor::zeros({4, 2, 1, 1});
  TensorOptions label_options;
  label_options.dtype = DType::Int32;
  EXPECT_THROW(evaluate(*m.net, Device::cpu(), images, Tensor::zeros({4}, label_options), 0, {}),
               InvalidArgument);
  EXPECT_THROW(evaluate(*m.net, Device::cpu(), images, Tensor::zeros({3}, label_options), 2, {}),
               InvalidArgument);
}

// Refuses every activation larger than `limit` bytes, as an arena too full for the chunk.
class RefuseLargeActivations final : public testing::PoolDelegate {
 public:
  RefuseLargeActivations(std::size_t limit)
      : PoolDelegate(std::make_shared<PoolAllocator>(make_host_memory_resource(), PoolOptions{})),
        limit_(limit) {}
  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream) override {
    if (tag == MemoryTag::Activation && bytes > limit_) {
      throw OutOfMemory(bytes, report(), "RefuseLargeActivations(test)");
    }
    return PoolDelegate::allocate(bytes, tag, stream);
  }

 private:
  std::size_t limit_;
};

TEST(Evaluate, AChunkThatRunsOutOfMemoryIsRunAgainInHalves) {
  constexpr std::int64_t kSamples = 7;
  const std::vector<float> x = normal_values(2 * kSamples, 11);
  const std::vector<std::int32_t> labels = {1, 2, 2, 0, -100, 0, 0};
  const Truth truth = classifier_truth(x, labels, -100);
  ClassifierModel m = classifier();
  const Tensor images = Tensor::from_vector(x, {kSamples, 2, 1, 1});
  const Tensor label_tensor = Tensor::from_vector_int(labels, {kSamples});
  // The largest activation of n samples is the logits, n x kClasses floats: 3 samples fit.
  const std::size_t three_samples = 3 * kClasses * sizeof(float);
  {
    ScopedAllocator scope(Device::cpu(), std::make_shared<RefuseLargeActivations>(three_samples));
    const EvalResult result = evaluate(*m.net, Device::cpu(), images, label_tensor, kSamples, {});
    expect_matches(result, truth, "7 refused, then chunks of 3");
    EXPECT_EQ(result.chunk, 3);
    EXPECT_EQ(result.halvings, 1);
  }
  {
    ScopedAllocator scope(Device::cpu(), std::make_shared<RefuseLargeActivations>(0));
    EXPECT_THROW(evaluate(*m.net, Device::cpu(), images, label_tensor, kSamples, {}), OutOfMemory);
  }
  const EvalResult plain = evaluate(*m.net, Device::cpu(), images, label_tensor, kSamples, {});
  EXPECT_EQ(plain.chunk, kSamples);
  EXPECT_EQ(plain.halvings, 0);
}

}  // namespace
}  // namespace mb
