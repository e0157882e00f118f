// OutOfMemory re-planning on CUDA (label gpu; skips without a device): the GPU half of
// memory_limit_test.cpp (a capped arena) and oom_replan_test.cpp (BatchNorm and an OOM in
// the middle of a step).
//
// 1. A CUDA arena capped below what LeNet-5's full batch needs: a step with the micro-batch
//    fixed at the whole batch runs out of device memory, re-plans smaller, and reaches the
//    parameters of the same training uncapped on the GPU and on the CPU. The cap comes from
//    a measured uncapped step: the fixed state plus 40% of the step's other tensors, cuDNN's
//    workspaces left out (their size follows the algorithm cuDNN is given room for, so they
//    cannot make the full batch fit or fail). So the full batch cannot fit whatever cuDNN
//    picks.
// 2. An allocator on a CUDA pool refuses one allocation inside a chosen micro-batch, after
//    the model's last BatchNorm has gathered that micro-batch's sums: parameters and running
//    statistics equal a step driven by hand on the CPU over the split the engine ended with
//    (oom_replan_test.cpp's truth, unchanged), and bn1's running statistics equal
//    full-batch BatchNorm's by formula.
//
// Tolerances: TF32 off (full fp32 on both backends). The backends sum in different orders
// (cuDNN's algorithms, chosen by the memory available, against im2col + GEMM), so where the
// CPU contract asks rtol 2e-5 / atol 2e-6 of one backend, here parameters are compared with
// rtol 1e-4, atol 1e-5: fp32 round-off of the gradients moves a parameter by lr * |g| *
// 1e-6, about 1e-8 here, and a ReLU input within rounding of 0 that takes the other side
// of its mask on one backend by less than 1e-6; a micro-batch skipped or counted twice moves
// parameters by 1e-4 to 1e-3. Running statistics come from fp64 sums of inputs that differ
// by fp32 round-off: 1e-5 relative (a micro-batch counted twice moves them by about 1e-2).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"
#include "runtime/allocator_registry.h"
#include "runtime/context.h"
#include "runtime/memory_resource.h"
#include "tests/mbp/mbp_test_util.h"
#include "tests/pool_delegate.h"
#include "tests/test_util.h"

namespace mb {
namespace {

const Device kGpu = Device::cuda(0);

// TF32 off on the GPU for the test's lifetime (full fp32, as the CPU computes), restored
// after.
class Fp32Cuda {
 public:
  Fp32Cuda() : context_(Context::get(kGpu)), tf32_(context_.allow_tf32()) {
    context_.set_allow_tf32(false);
  }
  ~Fp32Cuda() { context_.set_allow_tf32(tf32_); }
  Fp32Cuda(const Fp32Cuda&) = delete;
  Fp32Cuda& operator=(const Fp32Cuda&) = delete;

 private:
  Context& context_;
  bool tf32_;
};

// A pool over device 0's memory; capacity 0: the default (the device's free memory minus a
// margin).
std::shared_ptr<PoolAllocator> cuda_pool(std::size_t capacity) {
  PoolOptions options;
  options.capacity = capacity;
  return std::make_shared<PoolAllocator>(make_cuda_memory_resource(0), options);
}

// PoolDelegate over a CUDA pool. It also passes record_stream on: the Feeder allocates a
// staged input on the copy stream and records it on the compute stream, and without that
// record the pool could hand the block to the next copy while a kernel still reads it.
class CudaPoolDelegate : public testing::PoolDelegate {
 public:
  explicit CudaPoolDelegate(std::shared_ptr<PoolAllocator> pool)
      : PoolDelegate(pool), pool_(std::move(pool)) {}
  void record_stream(void* ptr, StreamHandle stream) override { pool_->record_stream(ptr, stream); }
  int device_index() const override { return pool_->device_index(); }

 private:
  std::shared_ptr<PoolAllocator> pool_;
};

// --- 1. A capped CUDA arena --------------------------------------------------------------

constexpr std::int64_t kBatch = 128;
constexpr float kLr = 0.05f;
constexpr int kSteps = 2;

testing::Batch mnist_like_batch(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::uniform_int_distribution<int> label(0, 9);
  std::vector<float> images(static_cast<std::size_t>(kBatch * 28 * 28));
  for (float& v : images) v = pixel(rng);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(kBatch));
  for (auto& l : labels) l = label(rng);
  return {Tensor::from_vector(images, {kBatch, 1, 28, 28}),
          Tensor::from_vector_int(labels, {kBatch})};
}

TrainerOptions lenet_options(const Device& device, AccumulationMode mode) {
  TrainerOptions options;
  options.device = device;
  options.micro_batch = kBatch;  // fixed at the whole batch: only a re-plan can split it
  options.accumulation = mode;
  options.optimizer.momentum = 0.9f;
  return options;
}

struct TrainingRun {
  std::vector<std::vector<float>> parameters;
  std::vector<StepResult> steps;
  std::vector<std::string> log;
};

// kSteps steps of LeNet-5 on `device` through the allocator installed for it.
TrainingRun train_lenet(const Device& device, AccumulationMode mode) {
  auto model = build_model("lenet5");
  TrainerOptions options = lenet_options(device, mode);
  TrainingRun run;
  options.log = [&run](const std::string& line) { run.log.push_back(line); };
  Trainer trainer(model, options);
  for (int s = 0; s < kSteps; ++s) {
    const testing::Batch batch = mnist_like_batch(40 + s);
    run.steps.push_back(trainer.step(batch.images, batch.labels, kLr));
  }
  run.parameters = testing::parameter_values(*model);
  return run;
}

struct StepBytes {
  std::size_t fixed = 0;  // parameters, gradients, optimizer state
  std::size_t other = 0;  // a full-batch step's peak above them, cuDNN's workspaces left out
};

// One uncapped full-batch step of LeNet-5 in a fresh CUDA pool, read from the pool's events:
// each Alloc / Free event carries the bytes allocated in all and under its own tag after it.
StepBytes measure_full_batch_step(AccumulationMode mode) {
  auto pool = cuda_pool(0);
  ScopedAllocator scope(kGpu, pool);
  Trainer trainer(build_model("lenet5"), lenet_options(kGpu, mode));
  StepBytes bytes;
  bytes.fixed = pool->report().allocated;
  const testing::Batch batch = mnist_like_batch(40);
  trainer.step(batch.images, batch.labels, kLr);
  std::size_t workspace = 0, peak = 0;
  for (const PoolEvent& event : pool->events()) {
    if (event.kind != PoolEventKind::Alloc && event.kind != PoolEventKind::Free) continue;
    if (event.tag == MemoryTag::Workspace) workspace = event.tag_allocated;
    peak = std::max(peak, event.allocated - std::min(workspace, event.allocated));
  }
  bytes.other = peak > bytes.fixed ? peak - bytes.fixed : 0;
  return bytes;
}

TEST(OomReplanGpu, CappedArenaRunsOutOfMemoryReplansAndMatchesUncappedAndCpu) {
  MB_SKIP_WITHOUT_CUDA();
  Fp32Cuda fp32;
  for (const AccumulationMode mode : {AccumulationMode::InPlace, AccumulationMode::Buffers}) {
    const std::string name = accumulation_name(mode);
    SCOPED_TRACE(name);
    const StepBytes measured = measure_full_batch_step(mode);
    ASSERT_GT(measured.other, std::size_t{1} << 20)
        << "a full-batch step of LeNet-5 used under 1 MiB beside its fixed state";
    const std::size_t cap = measured.fixed + measured.other * 2 / 5;

    auto pool = cuda_pool(cap);
    TrainingRun capped;
    {
      ScopedAllocator scope(kGpu, pool);
      capped = train_lenet(kGpu, mode);
    }
    ASSERT_EQ(capped.steps.size(), static_cast<std::size_t>(kSteps));
    EXPECT_GE(capped.steps[0].replans, 1)
        << "the full batch ran under a cap of " << format_bytes(cap) << " (fixed "
        << format_bytes(measured.fixed) << ", step " << format_bytes(measured.other) << ")";
    EXPECT_EQ(capped.steps[1].replans, 0) << "the smaller plan should stick";
    for (const StepResult& step : capped.steps) {
      std::int64_t total = 0;
      for (const std::int64_t n : step.micro_batches) {
        EXPECT_LT(n, kBatch);
        total += n;
      }
      EXPECT_EQ(total, kBatch) << "a sample was skipped or counted twice";
      EXPECT_TRUE(std::isfinite(step.loss));
    }
    EXPECT_GE(pool->stats().ooms, 1u);
    EXPECT_LE(pool->peak_reserved(), cap) << "the arena grew past its cap";
    bool logged = false;
    for (const auto& line : capped.log) logged |= line.find("re-plan") != std::string::npos;
    EXPECT_TRUE(logged) << "no re-plan was logged";

    TrainingRun uncapped;
    {
      ScopedAllocator scope(kGpu, cuda_pool(0));
      uncapped = train_lenet(kGpu, mode);
    }
    EXPECT_EQ(uncapped.steps[0].micro_batches, std::vector<std::int64_t>{kBatch});
    const TrainingRun cpu = train_lenet(Device::cpu(), mode);
    testing::expect_parameters_close(capped.parameters, uncapped.parameters, 1e-4, 1e-5,
                                     "capped GPU against uncapped GPU, " + name);
    testing::expect_parameters_close(capped.parameters, cpu.parameters, 1e-4, 1e-5,
                                     "capped GPU against CPU, " + name);
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(capped.steps[s].loss, cpu.steps[s].loss, 1e-5 * std::fabs(cpu.steps[s].loss))
          << "step " << s;
    }
  }
}

// --- 2. BatchNorm and an OutOfMemory in the middle of a step -----------------------------

constexpr std::int64_t kBnBatch = 16;
constexpr std::int64_t kMicroBatch = 8;
constexpr float kBnLr = 0.1f;

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

// One undisturbed SGD step over `split` on the CPU, by hand: each micro-batch's forward
// (training), mean loss and backward, its gradient added with factor n_k / B in fp64, the
// BatchNorm hooks begin / commit / end, and p -= lr * g.
Outcome reference_step(const testing::Batch& batch, const std::vector<std::int64_t>& split) {
  BnModel m = bn_model();
  auto parameters = m.net->named_parameters();
  std::vector<std::vector<double>> sums(parameters.size());
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    sums[i].assign(static_cast<std::size_t>(parameters[i].second->value.numel()), 0.0);
  }
  m.net->begin_batch();
  std::int64_t offset = 0;
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
  return outcome(m);
}

// bn1's running mean and variance after one batch, by formula (PyTorch's definition,
// momentum 0.1, unbiased variance, from mean 0 and variance 1), in fp64 from conv1's output
// for the whole batch at the initial weights, computed on the CPU.
std::vector<std::vector<float>> first_layer_running_statistics(const testing::Batch& batch) {
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

// Delegates to a CUDA pool, but refuses one allocation in micro-batch `target` (the first
// time that micro-batch runs): the first one after `watched` (the last BatchNorm) has added
// the micro-batch's sums, so every BatchNorm of the model holds pending statistics then.
class InjectingAllocator final : public CudaPoolDelegate {
 public:
  InjectingAllocator(std::shared_ptr<PoolAllocator> pool, int target)
      : CudaPoolDelegate(std::move(pool)), target_(target) {}
  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream) override {
    if (in_target_ && !fired && watched->accumulated_count() > count_at_start_) {
      fired = true;
      pending_at_failure = watched->accumulated_count() - count_at_start_;
      throw OutOfMemory(bytes, report(), "InjectingAllocator(test)");
    }
    return CudaPoolDelegate::allocate(bytes, tag, stream);
  }
  void set_micro_batch(int index) override {
    in_target_ = index == target_ && !fired;
    if (in_target_) count_at_start_ = watched->accumulated_count();
  }

  BatchNorm2d* watched = nullptr;
  bool fired = false;
  std::int64_t pending_at_failure = 0;

 private:
  int target_;
  bool in_target_ = false;
  std::int64_t count_at_start_ = 0;
};

// |actual - expected| <= tolerance * (1 + |expected|) elementwise.
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
};

void PrintTo(const Case& c, std::ostream* out) {
  *out << c.name;
}

class OomReplanBatchNormGpu : public ::testing::TestWithParam<Case> {};

TEST_P(OomReplanBatchNormGpu, AbortedMicroBatchLeavesNoTraceInParametersOrRunningStatistics) {
  MB_SKIP_WITHOUT_CUDA();
  Fp32Cuda fp32;
  const Case c = GetParam();
  const testing::Batch batch = testing::make_batch(kBnBatch, 21);
  const Outcome expected = reference_step(batch, c.final_split);
  const std::vector<std::vector<float>> first_layer = first_layer_running_statistics(batch);

  auto injecting = std::make_shared<InjectingAllocator>(cuda_pool(0), c.failing_micro_batch);
  ScopedAllocator scope(kGpu, injecting);
  BnModel m = bn_model();
  injecting->watched = m.bn2.get();
  TrainerOptions options;
  options.device = kGpu;
  options.micro_batch = kMicroBatch;
  options.accumulation = c.mode;
  options.optimizer.momentum = 0.0f;
  std::vector<std::string> log;
  options.log = [&log](const std::string& line) { log.push_back(line); };
  Trainer trainer(m.net, options);
  const StepResult result = trainer.step(batch.images, batch.labels, kBnLr);

  ASSERT_TRUE(injecting->fired) << "the injected OutOfMemory never happened";
  // 8 samples x 8 x 8 pixels of bn2's sums were pending when the allocation failed.
  EXPECT_EQ(injecting->pending_at_failure, kMicroBatch * 8 * 8);
  EXPECT_EQ(result.replans, 1);
  EXPECT_EQ(result.micro_batches, c.final_split);
  bool redo_logged = false;
  for (const auto& line : log) redo_logged |= line.find("redoes the batch") != std::string::npos;
  EXPECT_EQ(redo_logged, c.mode == AccumulationMode::InPlace && c.failing_micro_batch > 0);

  const Outcome actual = outcome(m);
  testing::expect_parameters_close(actual.parameters, expected.parameters, 1e-4, 1e-5, c.name);
  expect_close(actual.running, expected.running, 1e-5, std::string(c.name) + " running stats");
  expect_close({actual.running[0], actual.running[1]}, first_layer, 1e-5,
               std::string(c.name) + " bn1 running stats by formula");
  EXPECT_EQ(actual.batches_tracked, (std::vector<std::int32_t>{1, 1})) << c.name;
  EXPECT_EQ(m.bn1->accumulated_count(), 0);
  EXPECT_EQ(m.bn2->accumulated_count(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    BatchNorm, OomReplanBatchNormGpu,
    ::testing::Values(Case{AccumulationMode::InPlace, 1, {4, 4, 4, 4}, "InPlaceSecond"},
                      Case{AccumulationMode::Buffers, 1, {8, 4, 4}, "BuffersSecond"},
                      Case{AccumulationMode::InPlace, 0, {4, 4, 4, 4}, "InPlaceFirst"},
                      Case{AccumulationMode::Buffers, 0, {4, 4, 4, 4}, "BuffersFirst"}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mb
