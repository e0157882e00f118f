// Shared by the OutOfMemory re-plan tests of BatchNorm models (oom_replan_test.cpp on the CPU,
// oom_replan_gpu_test.cpp on CUDA): the model, the truth (a step driven by hand on the CPU
// over the split the engine ended with, and bn1's running statistics by formula), and the
// allocator that refuses one allocation inside a chosen micro-batch.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "allocator/pool_allocator.h"
#include "tests/mbp/mbp_test_util.h"
#include "tests/pool_delegate.h"

namespace mb::testing {

constexpr std::int64_t kBnBatch = 16;
constexpr std::int64_t kBnMicroBatch = 8;
constexpr float kBnLr = 0.1f;

// conv(3->4) bn1 relu conv(4->4) bn2 relu maxpool flatten linear(4*4*4 -> 5), 8x8 input.
struct BnModel {
  std::shared_ptr<Sequential> net = std::make_shared<Sequential>();
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
};

inline BnModel bn_model() {
  BnModel m;
  m.conv1 = m.net->add("conv1", std::make_shared<Conv2d>(3, 4, 3, 1, 1));
  m.bn1 = m.net->add("bn1", std::make_shared<BatchNorm2d>(4));
  m.net->add("relu1", std::make_shared<ReLU>());
  m.net->add("conv2", std::make_shared<Conv2d>(4, 4, 3, 1, 1));
  m.bn2 = m.net->add("bn2", std::make_shared<BatchNorm2d>(4));
  m.net->add("relu2", std::make_shared<ReLU>());
  m.net->add("pool", std::make_shared<MaxPool2d>(2));
  m.net->add("flatten", std::make_shared<Flatten>());
  m.net->add("fc", std::make_shared<Linear>(4 * 4 * 4, 5));
  initialize_parameters(*m.net, 5);
  return m;
}

struct Outcome {
  double loss = 0.0;  // the batch's mean loss
  std::vector<std::vector<float>> parameters;
  std::vector<std::vector<float>> running;  // bn1 mean, bn1 var, bn2 mean, bn2 var
  std::vector<std::int32_t> batches_tracked;
};

inline Outcome outcome(BnModel& m) {
  Outcome o;
  o.parameters = parameter_values(*m.net);
  for (BatchNorm2d* bn : {m.bn1.get(), m.bn2.get()}) {
    o.running.push_back(bn->running_mean().to_vector());
    o.running.push_back(bn->running_var().to_vector());
    o.batches_tracked.push_back(bn->num_batches_tracked().to_vector_int()[0]);
  }
  return o;
}

// One undisturbed SGD step over `split`, by hand.
inline Outcome reference_step(const Batch& batch, const std::vector<std::int64_t>& split) {
  BnModel m = bn_model();
  auto parameters = m.net->named_parameters();
  std::vector<std::vector<double>> sums(parameters.size());
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    sums[i].assign(static_cast<std::size_t>(parameters[i].second->value.numel()), 0.0);
  }
  m.net->begin_batch();
  std::int64_t offset = 0;
  double loss_sum = 0.0;
  for (std::int64_t count : split) {
    RunState state;
    state.training = true;
    state.sample_offset = offset;
    const Tensor logits = m.net->forward(batch.images.slice(offset, offset + count), state);
    const LossResult loss =
        SoftmaxCrossEntropy().forward_backward(logits, batch.labels.slice(offset, offset + count));
    BackwardState backward;
    backward.need_input_grad = false;
    m.net->backward(loss.grad_logits, backward);
    loss_sum += loss.loss_sum;
    const double factor = static_cast<double>(count) / kBnBatch;
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      const std::vector<float> grad = parameters[i].second->grad.to_vector();
      for (std::size_t j = 0; j < grad.size(); ++j) sums[i][j] += factor * grad[j];
    }
    m.net->commit_micro_batch();
    offset += count;
  }
  m.net->end_batch();
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    Tensor& value = parameters[i].second->value;
    std::vector<float> updated = value.to_vector();
    for (std::size_t j = 0; j < updated.size(); ++j) {
      updated[j] = static_cast<float>(updated[j] - static_cast<double>(kBnLr) * sums[i][j]);
    }
    value.copy_from(Tensor::from_vector(updated, value.shape()));
  }
  Outcome result = outcome(m);
  result.loss = loss_sum / kBnBatch;
  return result;
}

// bn1's running mean and variance after one batch, by formula: it sees conv1's output for
// the whole batch whatever the split, so they are full-batch BatchNorm's (PyTorch's
// definition, momentum 0.1, unbiased variance, from mean 0 and variance 1), computed in
// fp64 from conv1's output at the initial weights.
inline std::vector<std::vector<float>> first_layer_running_statistics(const Batch& batch) {
  BnModel m = bn_model();
  RunState state;
  const std::vector<float> y = m.conv1->forward(batch.images, state).to_vector();
  m.conv1->clear_cache();
  const std::size_t channels = 4, pixels = 8 * 8;
  std::vector<float> mean(channels), var(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    double sum = 0.0, sum_sq = 0.0;
    for (std::size_t n = 0; n < static_cast<std::size_t>(kBnBatch); ++n) {
      for (std::size_t p = 0; p < pixels; ++p) {
        const double v = y[(n * channels + c) * pixels + p];
        sum += v;
        sum_sq += v * v;
      }
    }
    const double count = static_cast<double>(kBnBatch * pixels);
    const double batch_mean = sum / count;
    const double unbiased = (sum_sq - count * batch_mean * batch_mean) / (count - 1.0);
    mean[c] = static_cast<float>(0.1 * batch_mean);
    var[c] = static_cast<float>(0.9 * 1.0 + 0.1 * unbiased);
  }
  return {mean, var};
}

// Where in the micro-batch the allocation fails.
enum class FailAt {
  AfterLastBatchNorm,  // forward, before the loss
  LastAllocation,      // backward, after the loss added the micro-batch's totals
};

// Delegates to a pool, but refuses one allocation in micro-batch `target` (the first time
// that micro-batch runs): the first one after `watched` (the last BatchNorm) has added the
// micro-batch's sums, so every BatchNorm of the model holds pending statistics then; or
// the micro-batch's last allocation (in backward), counted by an undisturbed step
// (`allocations_in_target` after a step with target set and `armed` false).
class InjectingAllocator final : public PoolDelegate {
 public:
  InjectingAllocator(std::shared_ptr<PoolAllocator> pool, int target, FailAt at)
      : PoolDelegate(std::move(pool)), target_(target), at_(at) {}
  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream) override {
    if (in_target_ && !fired) {
      ++allocations_in_target;
      const bool fire = at_ == FailAt::AfterLastBatchNorm
                            ? watched->accumulated_count() > count_at_start_
                            : allocations_in_target == fail_at_allocation;
      if (armed && fire) {
        fired = true;
        pending_at_failure = watched->accumulated_count() - count_at_start_;
        throw OutOfMemory(bytes, report(), "InjectingAllocator(test)");
      }
    }
    return PoolDelegate::allocate(bytes, tag, stream);
  }
  void set_micro_batch(int index) override {
    in_target_ = index == target_ && !fired;
    if (in_target_) {
      count_at_start_ = watched->accumulated_count();
      allocations_in_target = 0;
    }
  }

  BatchNorm2d* watched = nullptr;
  bool armed = true;
  bool fired = false;
  std::int64_t pending_at_failure = 0;
  int allocations_in_target = 0;
  int fail_at_allocation = -1;

 private:
  int target_;
  FailAt at_;
  bool in_target_ = false;
  std::int64_t count_at_start_ = 0;
};

inline void expect_close(const std::vector<std::vector<float>>& actual,
                         const std::vector<std::vector<float>>& expected, double tolerance,
                         const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (std::size_t t = 0; t < actual.size(); ++t) {
    ASSERT_EQ(actual[t].size(), expected[t].size()) << what;
    for (std::size_t i = 0; i < actual[t].size(); ++i) {
      EXPECT_NEAR(actual[t][i], expected[t][i], tolerance * (1.0 + std::fabs(expected[t][i])))
          << what << ": tensor " << t << " element " << i;
    }
  }
}

struct Case {
  AccumulationMode mode;
  int failing_micro_batch;
  std::vector<std::int64_t> final_split;  // what the engine runs after halving 8 to 4
  const char* name;
  FailAt at = FailAt::AfterLastBatchNorm;
};

inline void PrintTo(const Case& c, std::ostream* out) {
  *out << c.name;
}

}  // namespace mb::testing
