// The data-parallel step in one process, without MPI: a "mirror" communicator stands for a
// group of two ranks whose other rank sees exactly the batch this one sees. Each of its sums
// is this rank's value doubled, done at once when a reduce starts (so a bucket started before
// its gradients were final would double a partial gradient and show). The truth is one
// ordinary process on the same batch: twice the samples with the same mean gradient and the
// same dropout masks (both copies start at sample 0), so the parameters agree to fp32
// round-off and the correct count is doubled. With BatchNorm the truth is one process over
// the batch twice over, since the running variance is unbiased over the global batch.
// These run in the single-process suite (and under the sanitizers with leak checks), where the
// two-rank tests in tests/dist/ cannot.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "allocator/pool_allocator.h"
#include "engine/communicator.h"
#include "engine/trainer.h"
#include "runtime/allocator_registry.h"
#include "tests/mbp/mbp_test_util.h"
#include "tests/pool_delegate.h"

namespace mb {
namespace {

constexpr float kLr = 0.05f;
constexpr int kSteps = 3;
constexpr std::int64_t kBatch = 19;

class MirrorCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 2; }
  std::string backend() const override { return "mirror(test)"; }
  void all_reduce_sum(double* v, std::int64_t n) override {
    for (std::int64_t i = 0; i < n; ++i) v[i] *= 2.0;
  }
  void all_reduce_sum(std::int64_t* v, std::int64_t n) override {
    for (std::int64_t i = 0; i < n; ++i) v[i] *= 2;
  }
  void all_reduce_min(std::uint64_t*, std::int64_t) override {}
  void all_reduce_max(std::uint64_t*, std::int64_t) override {}
  std::unique_ptr<PendingReduce> start_all_reduce_sum(float* data, std::int64_t count,
                                                      const Stream& stream) override {
    EXPECT_FALSE(stream.is_cuda());
    for (std::int64_t i = 0; i < count; ++i) data[i] *= 2.0f;
    ranges.emplace_back(data, data + count);
    return std::make_unique<Done>();
  }
  void broadcast(void*, std::size_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override {
    throw std::logic_error("MirrorCommunicator::abort(" + std::to_string(code) + ")");
  }

  std::vector<std::pair<const float*, const float*>> ranges;  // every bucket summed

 private:
  struct Done final : PendingReduce {
    void wait() override {}
  };
};

struct Outcome {
  std::vector<std::vector<float>> parameters;
  std::vector<std::vector<float>> buffers;
  std::vector<StepResult> steps;
};

// The batch twice over, one copy after the other: the global batch of the mirrored pair.
testing::Batch twice(const testing::Batch& batch) {
  std::vector<float> images = batch.images.to_vector();
  images.insert(images.end(), images.begin(), images.end());
  std::vector<std::int32_t> labels = batch.labels.to_vector_int();
  labels.insert(labels.end(), labels.begin(), labels.end());
  std::vector<std::int64_t> dims = batch.images.shape().dims();
  dims[0] *= 2;
  return {Tensor::from_vector(images, Shape(dims)),
          Tensor::from_vector_int(labels, Shape{2 * batch.labels.shape()[0]})};
}

// kSteps steps over seeded batches of `size` samples; `duplicated`: each batch twice over.
Outcome train(Trainer& trainer, std::int64_t size = kBatch, bool duplicated = false) {
  Outcome o;
  for (int s = 0; s < kSteps; ++s) {
    testing::Batch batch = testing::make_batch(size, 200 + s);
    if (duplicated) batch = twice(batch);
    o.steps.push_back(trainer.step(batch.images, batch.labels, kLr, 0));
  }
  o.parameters = testing::parameter_values(trainer.model());
  for (auto& [name, b] : trainer.model().named_buffers()) {
    if (b->dtype() == DType::Float32) o.buffers.push_back(b->to_vector());
  }
  return o;
}

struct RunSetup {
  testing::Extra extra = testing::Extra::Dropout;
  OptimizerKind optimizer = OptimizerKind::Sgd;
  AccumulationMode accumulation = AccumulationMode::InPlace;
  std::int64_t micro_batch = 4;  // 19 = 4 x 4 + 3
  std::size_t bucket_bytes = std::size_t{4} << 20;
  bool overlap = true;
};

TrainerOptions options_for(const RunSetup& setup) {
  TrainerOptions options;
  options.optimizer.kind = setup.optimizer;
  options.optimizer.momentum = 0.9f;
  options.optimizer.weight_decay = 0.01f;
  options.accumulation = setup.accumulation;
  options.seed = 5;
  options.micro_batch = setup.micro_batch;
  options.bucket_bytes = setup.bucket_bytes;
  options.overlap_reduce = setup.overlap;
  return options;
}

Outcome run_single(const RunSetup& setup) {
  Trainer trainer(testing::small_cnn(setup.extra), options_for(setup));
  return train(trainer);
}

void expect_same_training(const Outcome& mirror, const Outcome& single, const std::string& what) {
  testing::expect_parameters_close(mirror.parameters, single.parameters, 2e-5, 2e-6,
                                   what + " parameters");
  testing::expect_parameters_close(mirror.buffers, single.buffers, 1e-5, 1e-6,
                                   what + " running statistics");
  ASSERT_EQ(mirror.steps.size(), single.steps.size());
  for (std::size_t s = 0; s < single.steps.size(); ++s) {
    EXPECT_NEAR(mirror.steps[s].loss, single.steps[s].loss, 1e-6 * (1.0 + single.steps[s].loss))
        << what << " loss of step " << s;
    EXPECT_EQ(mirror.steps[s].samples, 2 * kBatch) << what;
    EXPECT_EQ(mirror.steps[s].local_samples, kBatch) << what;
    EXPECT_EQ(mirror.steps[s].correct, 2 * single.steps[s].correct) << what;
  }
}

struct MirrorRun {
  Outcome outcome;
  std::shared_ptr<MirrorCommunicator> group = std::make_shared<MirrorCommunicator>();
  // Each parameter's gradient (in-place accumulation: what the buckets sum).
  std::vector<std::pair<const float*, const float*>> gradients;
};

MirrorRun run_mirror(const RunSetup& setup) {
  MirrorRun run;
  TrainerOptions options = options_for(setup);
  options.communicator = run.group;
  Trainer trainer(testing::small_cnn(setup.extra), options);
  run.outcome = train(trainer);
  for (auto& [name, p] : trainer.model().named_parameters()) {
    run.gradients.emplace_back(p->grad.data<float>(), p->grad.data<float>() + p->grad.numel());
  }
  return run;
}

TEST(GradientReducer, MirroredRankWithSgdAndDropoutMatchesOneProcess) {
  const RunSetup setup;
  expect_same_training(run_mirror(setup).outcome, run_single(setup), "sgd+dropout");
}

TEST(GradientReducer, MirroredRankWithAdamWAndAccumulationBuffersMatchesOneProcess) {
  RunSetup setup;
  setup.optimizer = OptimizerKind::AdamW;
  setup.accumulation = AccumulationMode::Buffers;
  setup.micro_batch = 5;
  expect_same_training(run_mirror(setup).outcome, run_single(setup), "adamw+buffers");
}

// BatchNorm's running variance is unbiased over the global batch (n / (n - 1) with n = 40,
// not 20), so the truth here is one process over the duplicated batch, in micro-batches of
// 10 as on the mirrored rank: [10, 10] twice over normalizes exactly as [10, 10] does.
TEST(GradientReducer, MirroredRankWithBatchNormMatchesOneProcessOverTheGlobalBatch) {
  RunSetup setup;
  setup.extra = testing::Extra::BatchNorm;
  setup.micro_batch = 10;
  TrainerOptions options = options_for(setup);
  options.communicator = std::make_shared<MirrorCommunicator>();
  Trainer mirrored(testing::small_cnn(setup.extra), options);
  const Outcome mirror = train(mirrored, 20);
  Trainer single(testing::small_cnn(setup.extra), options_for(setup));
  const Outcome global = train(single, 20, true);
  ASSERT_EQ(mirror.buffers.size(), 2u);  // bn1 running_mean, running_var
  testing::expect_parameters_close(mirror.parameters, global.parameters, 2e-5, 2e-6,
                                   "batchnorm parameters");
  testing::expect_parameters_close(mirror.buffers, global.buffers, 1e-5, 1e-6,
                                   "batchnorm running statistics");
  for (std::size_t s = 0; s < global.steps.size(); ++s) {
    EXPECT_NEAR(mirror.steps[s].loss, global.steps[s].loss, 1e-6 * (1.0 + global.steps[s].loss));
    EXPECT_EQ(mirror.steps[s].samples, 40);
    EXPECT_EQ(mirror.steps[s].correct, global.steps[s].correct);
  }
}

// One parameter per bucket, started as each module's backward returns: every gradient is
// summed exactly once per step, by buckets that do not overlap, all before backward ended.
TEST(GradientReducer, SmallBucketsSumEveryGradientOnceAndStartDuringBackward) {
  RunSetup setup;
  setup.bucket_bytes = 4;
  const MirrorRun run = run_mirror(setup);
  expect_same_training(run.outcome, run_single(setup), "small buckets");
  const ReduceReport& report = run.outcome.steps[0].reduce;
  EXPECT_EQ(report.buckets, 6);  // conv1, conv2, fc: weight and bias each
  EXPECT_EQ(report.overlapped_bytes, report.bytes);

  ASSERT_EQ(run.group->ranges.size(), static_cast<std::size_t>(6 * kSteps));
  std::vector<std::pair<const float*, const float*>> step(run.group->ranges.begin(),
                                                          run.group->ranges.begin() + 6);
  std::sort(step.begin(), step.end());
  for (std::size_t i = 1; i < step.size(); ++i) {
    EXPECT_LE(step[i - 1].second, step[i].first)
        << "buckets " << i - 1 << " and " << i << " overlap";
  }
  std::size_t summed = 0;
  for (const auto& [begin, end] : step) summed += static_cast<std::size_t>(end - begin);
  for (const auto& [begin, end] : run.gradients) {
    const bool covered = std::any_of(step.begin(), step.end(), [&](const auto& range) {
      return range.first <= begin && end <= range.second;
    });
    EXPECT_TRUE(covered) << "a gradient of " << end - begin << " values was not summed";
  }
  EXPECT_EQ(report.bytes, summed * sizeof(float));  // padding between gradients included
}

// An OutOfMemory in the last micro-batch, after some buckets were summed: the sums are kept
// and put back after the re-planned redo, so nothing is summed twice or lost.
class RefuseOnceAfterBucket final : public testing::PoolDelegate {
 public:
  RefuseOnceAfterBucket(std::shared_ptr<PoolAllocator> pool, const MirrorCommunicator& group)
      : PoolDelegate(std::move(pool)), group_(group) {}
  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream) override {
    if (armed_ && !fired && !group_.ranges.empty()) {
      fired = true;
      buckets_at_failure = group_.ranges.size();
      throw OutOfMemory(bytes, report(), "RefuseOnceAfterBucket(test)");
    }
    return PoolDelegate::allocate(bytes, tag, stream);
  }
  // Micro-batch 4 is the last of [4, 4, 4, 4, 3].
  void set_micro_batch(int index) override { armed_ = enabled && index == 4; }

  bool enabled = false;
  bool fired = false;
  std::size_t buckets_at_failure = 0;

 private:
  const MirrorCommunicator& group_;
  bool armed_ = false;
};

TEST(GradientReducer, OutOfMemoryAfterBucketsStartedKeepsTheirSums) {
  RunSetup setup;
  setup.bucket_bytes = 256;
  const Outcome single = run_single(setup);

  auto group = std::make_shared<MirrorCommunicator>();
  auto refusing = std::make_shared<RefuseOnceAfterBucket>(
      std::make_shared<PoolAllocator>(make_host_memory_resource(), PoolOptions{}), *group);
  Outcome mirror;
  {
    ScopedAllocator scope(Device::cpu(), refusing);
    TrainerOptions options = options_for(setup);
    options.communicator = group;
    Trainer trainer(testing::small_cnn(setup.extra), options);
    trainer.plan(kBatch, Shape{3, 8, 8}, Shape{});
    refusing->enabled = true;
    mirror = train(trainer);
  }
  ASSERT_TRUE(refusing->fired) << "the injected OutOfMemory never happened";
  EXPECT_GT(refusing->buckets_at_failure, 0u);
  EXPECT_EQ(mirror.steps[0].replans, 1);
  expect_same_training(mirror, single, "out of memory after buckets started");
}

}  // namespace
}  // namespace mb
