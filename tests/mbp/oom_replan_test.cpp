// BatchNorm and an OutOfMemory re-plan in the middle of a step. An allocator refuses one
// allocation inside a chosen micro-batch, after the model's last BatchNorm has gathered
// that micro-batch's sums, so the engine must drop them (Module::abort_micro_batch) before
// it redoes the work: InPlace redoes the batch from its first sample, Buffers redoes the
// failing micro-batch.
//
// Two places to fail: in forward after the last BatchNorm, and at the micro-batch's last
// allocation, in backward, after the loss has added the micro-batch's totals (which must not
// reach the step's loss then).
//
// The truth is an undisturbed step driven by hand over the split the engine ended with:
// each micro-batch's forward (training), mean loss and backward, its gradient added with
// factor n_k / B in fp64, the BatchNorm hooks begin / commit / end, and plain SGD
// p -= lr * g. The engine must reach the same parameters (fp32 round-off of a different
// summation order: rtol 2e-5, atol 2e-6, as in exactness_test.cpp) and the same running
// statistics (they come from fp64 sums, so 1e-6). A micro-batch's statistics counted twice
// move the running mean by about 1e-2 here.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"
#include "runtime/allocator_registry.h"
#include "tests/mbp/mbp_test_util.h"
#include "tests/pool_delegate.h"

namespace mb {
namespace {

constexpr std::int64_t kBatch = 16;
constexpr std::int64_t kMicroBatch = 8;
constexpr float kLr = 0.1f;

// conv(3->4) bn1 relu conv(4->4) bn2 relu maxpool flatten linear(4*4*4 -> 5), 8x8 input.
struct BnModel {
  std::shared_ptr<Sequential> net = std::make_shared<Sequential>();
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
};

BnModel bn_model() {
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

Outcome outcome(BnModel& m) {
  Outcome o;
  o.parameters = testing::parameter_values(*m.net);
  for (BatchNorm2d* bn : {m.bn1.get(), m.bn2.get()}) {
    o.running.push_back(bn->running_mean().to_vector());
    o.running.push_back(bn->running_var().to_vector());
    o.batches_tracked.push_back(bn->num_batches_tracked().to_vector_int()[0]);
  }
  return o;
}

// One undisturbed SGD step over `split`, by hand.
Outcome reference_step(const testing::Batch& batch, const std::vector<std::int64_t>& split) {
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
    const double factor = static_cast<double>(count) / kBatch;
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
      updated[j] = static_cast<float>(updated[j] - static_cast<double>(kLr) * sums[i][j]);
    }
    value.copy_from(Tensor::from_vector(updated, value.shape()));
  }
  Outcome result = outcome(m);
  result.loss = loss_sum / kBatch;
  return result;
}

// bn1's running mean and variance after one batch, by formula: it sees conv1's output for
// the whole batch whatever the split, so they are full-batch BatchNorm's (PyTorch's
// definition, momentum 0.1, unbiased variance, from mean 0 and variance 1), computed in
// fp64 from conv1's output at the initial weights.
std::vector<std::vector<float>> first_layer_running_statistics(const testing::Batch& batch) {
  BnModel m = bn_model();
  RunState state;
  const std::vector<float> y = m.conv1->forward(batch.images, state).to_vector();
  m.conv1->clear_cache();
  const std::size_t channels = 4, pixels = 8 * 8;
  std::vector<float> mean(channels), var(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    double sum = 0.0, sum_sq = 0.0;
    for (std::size_t n = 0; n < static_cast<std::size_t>(kBatch); ++n) {
      for (std::size_t p = 0; p < pixels; ++p) {
        const double v = y[(n * channels + c) * pixels + p];
        sum += v;
        sum_sq += v * v;
      }
    }
    const double count = static_cast<double>(kBatch * pixels);
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
class InjectingAllocator final : public testing::PoolDelegate {
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

void expect_close(const std::vector<std::vector<float>>& actual,
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

TrainerOptions step_options(AccumulationMode mode) {
  TrainerOptions options;
  options.micro_batch = kMicroBatch;
  options.accumulation = mode;
  options.optimizer.momentum = 0.0f;
  return options;
}

// The allocations micro-batch `target` makes in an undisturbed step.
int allocations_in_micro_batch(const testing::Batch& batch, const Case& c) {
  auto counting = std::make_shared<InjectingAllocator>(
      std::make_shared<PoolAllocator>(make_host_memory_resource(), PoolOptions{}),
      c.failing_micro_batch, c.at);
  counting->armed = false;
  ScopedAllocator scope(Device::cpu(), counting);
  BnModel m = bn_model();
  counting->watched = m.bn2.get();
  Trainer trainer(m.net, step_options(c.mode));
  trainer.step(batch.images, batch.labels, kLr);
  return counting->allocations_in_target;
}

void PrintTo(const Case& c, std::ostream* out) {
  *out << c.name;
}

class OomReplan : public ::testing::TestWithParam<Case> {};

TEST_P(OomReplan, AbortedMicroBatchLeavesNoTraceInParametersOrRunningStatistics) {
  const Case c = GetParam();
  const testing::Batch batch = testing::make_batch(kBatch, 21);
  const Outcome expected = reference_step(batch, c.final_split);

  const int last_allocation = allocations_in_micro_batch(batch, c);
  auto injecting = std::make_shared<InjectingAllocator>(
      std::make_shared<PoolAllocator>(make_host_memory_resource(), PoolOptions{}),
      c.failing_micro_batch, c.at);
  injecting->fail_at_allocation = last_allocation;
  ScopedAllocator scope(Device::cpu(), injecting);
  BnModel m = bn_model();
  injecting->watched = m.bn2.get();
  TrainerOptions options = step_options(c.mode);
  std::vector<std::string> log;
  options.log = [&log](const std::string& line) { log.push_back(line); };
  Trainer trainer(m.net, options);
  const StepResult result = trainer.step(batch.images, batch.labels, kLr);

  ASSERT_TRUE(injecting->fired) << "the injected OutOfMemory never happened";
  // 8 samples x 8 x 8 pixels of bn2's sums were pending when the allocation failed.
  EXPECT_EQ(injecting->pending_at_failure, kMicroBatch * 8 * 8);
  EXPECT_EQ(result.replans, 1);
  EXPECT_EQ(result.micro_batches, c.final_split);
  bool redo_logged = false;
  for (const auto& line : log) redo_logged |= line.find("redoes the batch") != std::string::npos;
  EXPECT_EQ(redo_logged, c.mode == AccumulationMode::InPlace && c.failing_micro_batch > 0);

  // The loss counts every sample once: an aborted micro-batch's totals (added before its
  // backward ran out of memory) are not in it.
  EXPECT_NEAR(result.loss, expected.loss, 1e-6 * expected.loss) << c.name;

  const Outcome actual = outcome(m);
  testing::expect_parameters_close(actual.parameters, expected.parameters, 2e-5, 2e-6, c.name);
  expect_close(actual.running, expected.running, 1e-6, std::string(c.name) + " running stats");
  expect_close({actual.running[0], actual.running[1]}, first_layer_running_statistics(batch), 1e-6,
               std::string(c.name) + " bn1 running stats by formula");
  EXPECT_EQ(actual.batches_tracked, (std::vector<std::int32_t>{1, 1})) << c.name;
  EXPECT_EQ(m.bn1->accumulated_count(), 0);
  EXPECT_EQ(m.bn2->accumulated_count(), 0);
}

// Note: InPlace after micro-batch 0 begins the batch again, which clears BatchNorm's sums
// as well; so only the cases that keep earlier micro-batches (Buffers) or fail in the first
// one rely on abort_micro_batch alone.
INSTANTIATE_TEST_SUITE_P(
    BatchNorm, OomReplan,
    ::testing::Values(Case{AccumulationMode::InPlace, 1, {4, 4, 4, 4}, "InPlaceSecond"},
                      Case{AccumulationMode::Buffers, 1, {8, 4, 4}, "BuffersSecond"},
                      Case{AccumulationMode::InPlace, 0, {4, 4, 4, 4}, "InPlaceFirst"},
                      Case{AccumulationMode::Buffers, 0, {4, 4, 4, 4}, "BuffersFirst"},
                      Case{AccumulationMode::Buffers,
                           1,
                           {8, 4, 4},
                           "BuffersSecondInBackward",
                           FailAt::LastAllocation},
                      Case{AccumulationMode::InPlace,
                           0,
                           {4, 4, 4, 4},
                           "InPlaceFirstInBackward",
                           FailAt::LastAllocation}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mb
