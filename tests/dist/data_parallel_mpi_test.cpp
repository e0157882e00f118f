// Data-parallel training as 2 ranks (mpirun -np 2) against one process with the same global
// batch. Every rank runs both: the data-parallel Trainer on its shard (rows
// [floor(rB/2), floor((r+1)B/2)) of each batch, with a micro-batch of its own), and, alone,
// a single-process Trainer on the whole batch. The truth is the single process: after 3
// steps the parameters agree to fp32 round-off (rtol 2e-5, atol 2e-6, as the exactness
// tests), the reported loss and correct count are equal, and BatchNorm's running statistics
// are the global batch's. The collectives of a test are called in the same order on both
// ranks, so a test must not return early on one rank only.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
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

struct Outcome {
  std::vector<std::vector<float>> parameters;
  std::vector<std::vector<float>> buffers;  // running statistics
  std::vector<double> losses;
  std::vector<std::int64_t> correct;
  std::vector<StepResult> steps;
};

Outcome outcome_of(Trainer& trainer) {
  Outcome o;
  o.parameters = testing::parameter_values(trainer.model());
  for (auto& [name, b] : trainer.model().named_buffers()) {
    if (b->dtype() == DType::Float32) o.buffers.push_back(b->to_vector());
  }
  return o;
}

// kSteps steps of `trainer` over seeded global batches of `batch` samples; with a
// communicator, on this rank's shard of each.
Outcome train(Trainer& trainer, std::int64_t batch, bool sharded) {
  Communicator& group = trainer.communicator();
  std::vector<StepResult> results;
  for (int s = 0; s < kSteps; ++s) {
    const testing::Batch full = testing::make_batch(batch, 100 + s);
    std::int64_t begin = 0, end = batch;
    if (sharded) {
      begin = batch * group.rank() / group.size();
      end = batch * (group.rank() + 1) / group.size();
    }
    results.push_back(
        trainer.step(full.images.slice(begin, end), full.labels.slice(begin, end), kLr, begin));
  }
  Outcome o = outcome_of(trainer);
  for (const StepResult& r : results) {
    o.losses.push_back(r.loss);
    o.correct.push_back(r.correct);
  }
  o.steps = results;
  return o;
}

struct RunSetup {
  testing::Extra extra = testing::Extra::Dropout;
  OptimizerKind optimizer = OptimizerKind::Sgd;
  AccumulationMode accumulation = AccumulationMode::InPlace;
  std::int64_t batch = 37;
  std::int64_t micro_batch[2] = {4, 7};  // per rank
  std::int64_t single_micro_batch = 0;   // 0: the whole batch
  std::size_t bucket_bytes = std::size_t{4} << 20;
  bool overlap = true;
};

TrainerOptions options_for(const RunSetup& setup) {
  TrainerOptions options;
  options.optimizer.kind = setup.optimizer;
  options.optimizer.momentum = 0.9f;
  options.optimizer.weight_decay = 0.01f;
  options.accumulation = setup.accumulation;
  options.seed = 11;
  options.bucket_bytes = setup.bucket_bytes;
  options.overlap_reduce = setup.overlap;
  return options;
}

Outcome run_single(const RunSetup& setup) {
  TrainerOptions options = options_for(setup);
  options.micro_batch = setup.single_micro_batch > 0 ? setup.single_micro_batch : setup.batch;
  Trainer trainer(testing::small_cnn(setup.extra), options);
  return train(trainer, setup.batch, false);
}

Outcome run_ranks(const RunSetup& setup) {
  const std::shared_ptr<Communicator> group = launched_communicator();
  TrainerOptions options = options_for(setup);
  options.communicator = group;
  options.micro_batch = setup.micro_batch[group->rank() % 2];
  Trainer trainer(testing::small_cnn(setup.extra), options);
  return train(trainer, setup.batch, true);
}

void expect_same_training(const Outcome& ranks, const Outcome& single, const std::string& what) {
  testing::expect_parameters_close(ranks.parameters, single.parameters, 2e-5, 2e-6,
                                   what + " parameters");
  testing::expect_parameters_close(ranks.buffers, single.buffers, 1e-5, 1e-6,
                                   what + " running statistics");
  ASSERT_EQ(ranks.losses.size(), single.losses.size());
  for (std::size_t s = 0; s < ranks.losses.size(); ++s) {
    EXPECT_NEAR(ranks.losses[s], single.losses[s], 1e-6 * (1.0 + single.losses[s]))
        << what << " loss of step " << s;
    EXPECT_EQ(ranks.correct[s], single.correct[s]) << what << " correct of step " << s;
  }
}

class DataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (launched_rank_count() != 2) {
      GTEST_SKIP() << "needs 2 ranks: run it through mpirun -np 2 (ctest -L dist does)";
    }
  }
};

TEST_F(DataParallel, SgdWithDropoutOverUnevenShardsAndMicroBatchesMatchesOneProcess) {
  RunSetup setup;  // 37 = 18 + 19 samples; micro-batches [4 x 4, 2] and [7, 7, 5]
  const Outcome ranks = run_ranks(setup);
  const Outcome single = run_single(setup);
  expect_same_training(ranks, single, "sgd+dropout");
  const int rank = launched_communicator()->rank();
  EXPECT_EQ(ranks.steps[0].samples, 37);
  EXPECT_EQ(ranks.steps[0].local_samples, rank == 0 ? 18 : 19);
  EXPECT_EQ(ranks.steps[0].micro_batches, rank == 0 ? (std::vector<std::int64_t>{4, 4, 4, 4, 2})
                                                    : (std::vector<std::int64_t>{7, 7, 5}));
}

TEST_F(DataParallel, AdamWWithAccumulationBuffersMatchesOneProcess) {
  RunSetup setup;
  setup.optimizer = OptimizerKind::AdamW;
  setup.accumulation = AccumulationMode::Buffers;
  setup.micro_batch[0] = 5;
  setup.micro_batch[1] = 6;
  expect_same_training(run_ranks(setup), run_single(setup), "adamw+buffers");
}

TEST_F(DataParallel, SmallBucketsStartDuringBackwardAndGiveTheSameWeights) {
  RunSetup setup;
  setup.bucket_bytes = 4;  // one parameter per bucket
  const Outcome overlapped = run_ranks(setup);
  setup.overlap = false;
  const Outcome after = run_ranks(setup);
  expect_same_training(overlapped, run_single(setup), "small buckets");
  const ReduceReport& report = overlapped.steps[0].reduce;
  EXPECT_EQ(report.buckets, 6);  // conv1, conv2, fc: weight and bias each
  // Every bucket starts when its layer's backward returns, conv1's (the last to finish)
  // included, so all of them start before the step's backward has ended.
  EXPECT_GT(report.overlapped_bytes, 0u);
  EXPECT_EQ(report.overlapped_bytes, report.bytes);
  EXPECT_EQ(after.steps[0].reduce.overlapped_bytes, 0u);
  EXPECT_EQ(after.steps[0].reduce.bytes, report.bytes);
  testing::expect_parameters_close(overlapped.parameters, after.parameters, 0.0, 0.0,
                                   "overlap on vs off (same sums, bit for bit)");
}

TEST_F(DataParallel, BatchNormRunningStatisticsAreThoseOfTheGlobalBatch) {
  // 40 = 20 + 20, micro-batches of 10 on both ranks and in the single process: the same
  // micro-batches, so every BatchNorm layer (not only the first) must match.
  RunSetup setup;
  setup.extra = testing::Extra::BatchNorm;
  setup.batch = 40;
  setup.micro_batch[0] = setup.micro_batch[1] = 10;
  setup.single_micro_batch = 10;
  const Outcome ranks = run_ranks(setup);
  const Outcome single = run_single(setup);
  ASSERT_EQ(ranks.buffers.size(), 2u);  // bn1 running_mean, running_var
  expect_same_training(ranks, single, "batchnorm");
}

// Delegates to a pool and refuses one allocation on rank 1: the first one in its last
// micro-batch of the first step after a gradient bucket has started (the communicator
// below counts the starts), so the rank must re-plan on its own while the other rank has
// already summed those buckets.
class BucketWatcher final : public Communicator {
 public:
  explicit BucketWatcher(std::shared_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  int local_rank() const override { return inner_->local_rank(); }
  int local_size() const override { return inner_->local_size(); }
  std::string backend() const override { return inner_->backend(); }
  void all_reduce_sum(double* v, std::int64_t n) override { inner_->all_reduce_sum(v, n); }
  void all_reduce_sum(std::int64_t* v, std::int64_t n) override { inner_->all_reduce_sum(v, n); }
  void all_reduce_min(std::uint64_t* v, std::int64_t n) override { inner_->all_reduce_min(v, n); }
  void all_reduce_max(std::uint64_t* v, std::int64_t n) override { inner_->all_reduce_max(v, n); }
  std::unique_ptr<PendingReduce> start_all_reduce_sum(float* data, std::int64_t count,
                                                      const Stream& stream) override {
    ++started;
    return inner_->start_all_reduce_sum(data, count, stream);
  }
  void broadcast(void* data, std::size_t bytes, int root) override {
    inner_->broadcast(data, bytes, root);
  }
  void barrier() override { inner_->barrier(); }
  [[noreturn]] void abort(int code) override {
    inner_->abort(code);
    std::abort();  // not reached: the compiler cannot see through the virtual call
  }

  int started = 0;

 private:
  std::shared_ptr<Communicator> inner_;
};

class RefuseAfterBucket final : public testing::PoolDelegate {
 public:
  RefuseAfterBucket(std::shared_ptr<PoolAllocator> pool, const BucketWatcher& watcher, int target)
      : PoolDelegate(std::move(pool)), watcher_(watcher), target_(target) {}
  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream) override {
    if (armed_ && !fired && watcher_.started > 0) {
      fired = true;
      buckets_started_at_failure = watcher_.started;
      throw OutOfMemory(bytes, report(), "RefuseAfterBucket(test)");
    }
    return PoolDelegate::allocate(bytes, tag, stream);
  }
  void set_micro_batch(int index) override { armed_ = index == target_ && !fired && enabled; }

  bool enabled = false;  // after planning (its probes must not fail)
  bool fired = false;
  int buckets_started_at_failure = 0;

 private:
  const BucketWatcher& watcher_;
  int target_;
  bool armed_ = false;
};

TEST_F(DataParallel, OutOfMemoryOnOneRankAfterBucketsStartedReplansThatRankAlone) {
  RunSetup setup;
  setup.bucket_bytes = 256;
  const Outcome single = run_single(setup);

  auto watcher = std::make_shared<BucketWatcher>(launched_communicator());
  const int rank = watcher->rank();
  // Rank 1's micro-batches are [7, 7, 5]: the failure comes in micro-batch 2, during
  // backward, after the last layers' buckets started.
  auto refusing = std::make_shared<RefuseAfterBucket>(
      std::make_shared<PoolAllocator>(make_host_memory_resource(), PoolOptions{}), *watcher, 2);
  Outcome ranks;
  int replans = 0;
  {
    ScopedAllocator scope(Device::cpu(), refusing);
    TrainerOptions options = options_for(setup);
    options.communicator = watcher;
    options.micro_batch = setup.micro_batch[rank % 2];
    Trainer trainer(testing::small_cnn(setup.extra), options);
    const Shape sample{3, 8, 8};
    trainer.plan(rank == 0 ? 18 : 19, sample, Shape{});
    refusing->enabled = rank == 1;
    ranks = train(trainer, setup.batch, true);
    for (const StepResult& r : ranks.steps) replans += r.replans;
  }
  if (rank == 1) {
    EXPECT_TRUE(refusing->fired) << "the injected OutOfMemory never happened";
    EXPECT_GT(refusing->buckets_started_at_failure, 0);
    EXPECT_EQ(replans, 1);
  } else {
    EXPECT_EQ(replans, 0);
  }
  expect_same_training(ranks, single, "out of memory on rank 1");
}

TEST_F(DataParallel, RanksAgreeOnTheWeightsAndNoticeWhenTheyDiffer) {
  RunSetup setup;
  const std::shared_ptr<Communicator> group = launched_communicator();
  TrainerOptions options = options_for(setup);
  options.communicator = group;
  Trainer trainer(testing::small_cnn(setup.extra), options);
  train(trainer, setup.batch, true);
  EXPECT_NO_THROW(trainer.check_ranks_agree("after training"));
  // One weight changed on rank 1 only.
  if (group->rank() == 1) {
    Tensor& w = trainer.model().named_parameters().front().second->value;
    std::vector<float> values = w.to_vector();
    values[0] += 1e-3f;
    w.copy_from(Tensor::from_vector(values, w.shape()));
  }
  try {
    trainer.check_ranks_agree("after the change");
    ADD_FAILURE() << "different weights were not noticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.message()).find("the weights differ between ranks"), std::string::npos)
        << e.message();
  }
}

}  // namespace
}  // namespace mb
