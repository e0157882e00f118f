// The step's device-side totals (kernels/softmax_cross_entropy.h, kernels/accumulate_grads.h):
// softmax_cross_entropy_add adds what softmax_cross_entropy returns and writes the same
// gradient; add_cross_entropy_sums adds field by field and carries a bad label;
// cross_entropy_totals names a bad label; sum_of_squares_into writes sum_of_squares' bits.
// Truth: the synchronous ops the engine used before (themselves checked against PyTorch in
// tests/layers), and on CUDA the CPU twin.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/accumulate_grads.h"
#include "kernels/softmax_cross_entropy.h"
#include "runtime/error.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace mb {
namespace {

constexpr std::int64_t kRows = 37, kClasses = 11;

struct Inputs {
  std::vector<float> logits;
  std::vector<std::int32_t> labels;
};

Inputs make_inputs(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  Inputs in;
  for (std::int64_t i = 0; i < kRows * kClasses; ++i) in.logits.push_back(normal(rng));
  for (std::int64_t r = 0; r < kRows; ++r) {
    in.labels.push_back(r % 7 == 3 ? -100 : static_cast<std::int32_t>(rng() % kClasses));
  }
  return in;
}

CrossEntropySums zero_sums() {
  CrossEntropySums sums;
  std::memset(&sums, 0, sizeof(sums));
  return sums;
}

TEST(LossSums, AddIsTheSumOfTheSynchronousTotalsWithTheSameGradient) {
  const Stream cpu = Stream::compute(Device::cpu());
  CrossEntropySums sums = zero_sums();
  double expected_loss = 0.0;
  std::int64_t expected_valid = 0, expected_correct = 0;
  for (unsigned seed : {1u, 2u}) {
    const Inputs in = make_inputs(seed);
    std::vector<float> grad(in.logits.size()), expected_grad(in.logits.size());
    const CrossEntropyTotals totals =
        softmax_cross_entropy(cpu, in.logits.data(), in.labels.data(), kRows, kClasses, 1, 0.1f,
                              -100, 0.5f, CrossEntropyGradScale::Mean, expected_grad.data());
    softmax_cross_entropy_add(cpu, in.logits.data(), in.labels.data(), kRows, kClasses, 1, 0.1f,
                              -100, 0.5f, CrossEntropyGradScale::Mean, grad.data(), &sums);
    EXPECT_EQ(grad, expected_grad) << "seed " << seed;
    expected_loss += totals.loss_sum;
    expected_valid += totals.valid_count;
    expected_correct += totals.correct;
  }
  const CrossEntropyTotals read = cross_entropy_totals(sums, kClasses, -100);
  EXPECT_EQ(read.loss_sum, expected_loss);
  EXPECT_EQ(read.valid_count, expected_valid);
  EXPECT_EQ(read.correct, expected_correct);
  EXPECT_GT(read.valid_count, 0);
  EXPECT_LT(read.valid_count, 2 * kRows);  // some labels were ignore_index
}

TEST(LossSums, AddingSumsCarriesEveryFieldAndABadLabel) {
  const Stream cpu = Stream::compute(Device::cpu());
  CrossEntropySums from = zero_sums(), into = zero_sums();
  from.loss_sum = 2.5;
  from.valid_count = 3;
  from.correct = 2;
  into.loss_sum = 1.0;
  into.valid_count = 4;
  into.correct = 1;
  add_cross_entropy_sums(cpu, &from, &into);
  EXPECT_EQ(into.loss_sum, 3.5);
  EXPECT_EQ(into.valid_count, 7u);
  EXPECT_EQ(into.correct, 3u);
  EXPECT_EQ(into.bad_label_count, 0u);
  from.bad_label_count = 2;
  from.bad_label = 42;
  add_cross_entropy_sums(cpu, &from, &into);
  EXPECT_EQ(into.bad_label_count, 2u);
  EXPECT_EQ(into.bad_label, 42);
}

TEST(LossSums, ReadingABadLabelNamesItAndTheFix) {
  CrossEntropySums sums = zero_sums();
  sums.bad_label_count = 3;
  sums.bad_label = 12;
  try {
    cross_entropy_totals(sums, 10, -100);
    FAIL() << "a bad label was not reported";
  } catch (const InvalidArgument& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("label 12 is outside [0, 10)"), std::string::npos) << message;
    EXPECT_NE(message.find("3 such labels"), std::string::npos) << message;
    EXPECT_NE(message.find("Fix:"), std::string::npos) << message;
  }
}

TEST(LossSums, SumOfSquaresIntoWritesTheSynchronousSum) {
  const Stream cpu = Stream::compute(Device::cpu());
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> buffers;
  for (std::int64_t size : {0, 5, 70001}) {
    std::vector<float> b(static_cast<std::size_t>(size));
    for (float& v : b) v = normal(rng);
    buffers.push_back(b);
  }
  std::vector<ConstBufferSlot> slots;
  for (const auto& b : buffers) {
    slots.push_back(ConstBufferSlot{b.data(), static_cast<std::int64_t>(b.size())});
  }
  double total = -1.0;
  sum_of_squares_into(cpu, slots.data(), static_cast<int>(slots.size()), &total);
  EXPECT_EQ(total, sum_of_squares(cpu, slots.data(), static_cast<int>(slots.size())));
  EXPECT_GT(total, 0.0);
}

// CUDA: the sums stay on the device and equal the CPU twin's (loss within float round-off of
// a different reduction order; counts exactly); a bad label is counted, not thrown, and
// reported when the sums are read.
TEST(LossSumsGpu, DeviceSumsMatchTheCpuAndABadLabelWaitsForTheRead) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu_device = Device::cuda(0);
  const Stream gpu = Stream::compute(gpu_device);
  const Stream cpu = Stream::compute(Device::cpu());
  Tensor device_sums = Tensor::zeros(Shape{static_cast<std::int64_t>(sizeof(CrossEntropySums))},
                                     tensor_options(gpu_device, MemoryTag::Other, DType::UInt8));
  auto* sums = static_cast<CrossEntropySums*>(device_sums.raw_data());
  CrossEntropySums cpu_sums = zero_sums();
  for (unsigned seed : {3u, 4u}) {
    const Inputs in = make_inputs(seed);
    const Shape shape{kRows, kClasses};
    const Tensor logits = Tensor::from_vector(in.logits, shape).to(gpu_device);
    const Tensor labels = Tensor::from_vector_int(in.labels, Shape{kRows}).to(gpu_device);
    Tensor grad = Tensor::zeros(shape, tensor_options(gpu_device, MemoryTag::Activation));
    softmax_cross_entropy_add(gpu, logits.data<float>(), labels.data<std::int32_t>(), kRows,
                              kClasses, 1, 0.0f, -100, 1.0f, CrossEntropyGradScale::Sum,
                              grad.data<float>(), sums);
    std::vector<float> cpu_grad(in.logits.size());
    softmax_cross_entropy_add(cpu, in.logits.data(), in.labels.data(), kRows, kClasses, 1, 0.0f,
                              -100, 1.0f, CrossEntropyGradScale::Sum, cpu_grad.data(), &cpu_sums);
    const std::vector<float> gpu_grad = grad.to_vector();
    for (std::size_t i = 0; i < cpu_grad.size(); ++i) {
      ASSERT_NEAR(gpu_grad[i], cpu_grad[i], 1e-5f) << "element " << i;
    }
  }
  CrossEntropySums read = zero_sums();
  copy_bytes(&read, sums, sizeof(read), gpu);
  gpu.synchronize();
  const CrossEntropyTotals totals = cross_entropy_totals(read, kClasses, -100);
  EXPECT_NEAR(totals.loss_sum, cpu_sums.loss_sum, 1e-5 * cpu_sums.loss_sum);
  EXPECT_EQ(totals.valid_count, static_cast<std::int64_t>(cpu_sums.valid_count));
  EXPECT_EQ(totals.correct, static_cast<std::int64_t>(cpu_sums.correct));

  Inputs bad = make_inputs(9);
  bad.labels[5] = 99;
  const Tensor logits = Tensor::from_vector(bad.logits, Shape{kRows, kClasses}).to(gpu_device);
  const Tensor labels = Tensor::from_vector_int(bad.labels, Shape{kRows}).to(gpu_device);
  EXPECT_NO_THROW(softmax_cross_entropy_add(gpu, logits.data<float>(), labels.data<std::int32_t>(),
                                            kRows, kClasses, 1, 0.0f, -100, 1.0f,
                                            CrossEntropyGradScale::Sum, nullptr, sums));
  copy_bytes(&read, sums, sizeof(read), gpu);
  gpu.synchronize();
  EXPECT_EQ(read.bad_label_count, 1u);
  EXPECT_EQ(read.bad_label, 99);
  EXPECT_THROW(cross_entropy_totals(read, kClasses, -100), InvalidArgument);
}

TEST(LossSumsGpu, SumOfSquaresIntoEqualsTheSynchronousSumBitForBit) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu_device = Device::cuda(0);
  const Stream gpu = Stream::compute(gpu_device);
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<Tensor> buffers;
  std::vector<ConstBufferSlot> slots;
  for (std::int64_t size : {3, 1027, 70001}) {
    std::vector<float> b(static_cast<std::size_t>(size));
    for (float& v : b) v = normal(rng);
    buffers.push_back(Tensor::from_vector(b, Shape{size}).to(gpu_device));
    slots.push_back(ConstBufferSlot{buffers.back().data<float>(), size});
  }
  Tensor total =
      Tensor::zeros(Shape{8}, tensor_options(gpu_device, MemoryTag::Other, DType::UInt8));
  sum_of_squares_into(gpu, slots.data(), static_cast<int>(slots.size()),
                      static_cast<double*>(total.raw_data()));
  double read = 0.0;
  copy_bytes(&read, total.raw_data(), sizeof(read), gpu);
  gpu.synchronize();
  EXPECT_EQ(read, sum_of_squares(gpu, slots.data(), static_cast<int>(slots.size())));
}

}  // namespace
}  // namespace mb
