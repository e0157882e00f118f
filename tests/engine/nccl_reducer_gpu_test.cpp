// NCCL reducer on a CUDA device (label gpu). A one-rank NCCL group takes the path a
// multi-rank job takes (unique id, broadcast, communicator, communication stream, events),
// and the sum over one rank is its input, so the truth is the values written beforehand.
// Without a device (or without libnccl.so.2) the device tests skip, naming why.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/communicator.h"
#include "engine/nccl_reducer.h"
#include "runtime/error.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace mb {
namespace {

constexpr std::int64_t kOddCount = 1'000'003;  // not a multiple of any vector width

// Distinct, exactly representable values: a reduce that touched them would show.
std::vector<float> known_values(std::int64_t count, float offset) {
  std::vector<float> values(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    values[static_cast<std::size_t>(i)] = offset + 0.25f * static_cast<float>(i % 8191) - 1024.0f;
  }
  return values;
}

// Names the first mismatches instead of printing a million values.
void expect_same_values(const std::vector<float>& actual, const std::vector<float>& expected,
                        const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    if (actual[i] == expected[i]) continue;
    if (++mismatches <= 5) {
      ADD_FAILURE() << what << ": value " << i << " is " << actual[i] << ", expected "
                    << expected[i];
    }
  }
  EXPECT_EQ(mismatches, 0u) << what << ": values differing from the one rank's input";
}

class NcclReducerGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    MB_SKIP_WITHOUT_CUDA();
    try {
      reducer_ = make_nccl_reducer(*single_process_communicator(), gpu_);
    } catch (const InvalidArgument& error) {
      // A GPU machine without NCCL installed is not a fault of the reducer; any other
      // refusal (a library lacking symbols, say) is.
      if (std::string(error.what()).find("could not be loaded") == std::string::npos) throw;
      GTEST_SKIP() << "libnccl.so.2 not loadable: " << error.message();
    }
    stream_ = Stream::compute(gpu_);
  }

  // A gradient bucket on the device holding `values`, written by work queued on the compute
  // stream and not yet finished when this returns, as after a backward pass.
  Tensor bucket_with(const std::vector<float>& values) {
    const TensorOptions options = tensor_options(gpu_, MemoryTag::Grad);
    const Shape shape{static_cast<std::int64_t>(values.size())};
    Tensor source = Tensor::from_vector(values, shape, options);
    Tensor bucket = Tensor::empty(shape, options);
    bucket.copy_from(source, stream_.handle());
    sources_.push_back(source);  // kept until the test ends: the copy may still read it
    return bucket;
  }

  // The bucket's values as seen by work queued on the compute stream after wait().
  std::vector<float> values_after_wait(const Tensor& bucket) {
    Tensor result = Tensor::empty(bucket.shape(), tensor_options(gpu_, MemoryTag::Other));
    result.copy_from(bucket, stream_.handle());
    stream_.synchronize();
    return result.to_vector();
  }

  const Device gpu_ = Device::cuda(0);
  Stream stream_;
  std::unique_ptr<DeviceReducer> reducer_;
  std::vector<Tensor> sources_;
};

TEST_F(NcclReducerGpu, SumOverOneRankIsTheInput) {
  const std::vector<float> values = known_values(kOddCount, 0.0f);
  Tensor bucket = bucket_with(values);
  std::unique_ptr<PendingReduce> pending =
      reducer_->start(bucket.data<float>(), bucket.numel(), stream_);
  pending->wait();
  expect_same_values(values_after_wait(bucket), values, "one bucket");
}

TEST_F(NcclReducerGpu, TwoReducesInFlightOnOneStreamBothComplete) {
  const std::vector<float> first_values = known_values(kOddCount, 3.0f);
  const std::vector<float> second_values = known_values(4097, -7.5f);
  Tensor first = bucket_with(first_values);
  Tensor second = bucket_with(second_values);
  std::unique_ptr<PendingReduce> first_pending =
      reducer_->start(first.data<float>(), first.numel(), stream_);
  std::unique_ptr<PendingReduce> second_pending =
      reducer_->start(second.data<float>(), second.numel(), stream_);
  // Waited for in the opposite order: each pending reduce stands on its own.
  second_pending->wait();
  first_pending->wait();
  expect_same_values(values_after_wait(first), first_values, "first bucket");
  expect_same_values(values_after_wait(second), second_values, "second bucket");
}

// More reduces in flight than a step usually has, twice over: the event pool grows and its
// events are reused while others are still pending.
TEST_F(NcclReducerGpu, ManyReducesInFlightReuseTheEvents) {
  constexpr int kBuckets = 48;
  std::vector<std::vector<float>> values;
  std::vector<Tensor> buckets;
  for (int i = 0; i < kBuckets; ++i) {
    values.push_back(known_values(1000 + 37 * i, static_cast<float>(i)));
    buckets.push_back(bucket_with(values.back()));
  }
  for (int round = 0; round < 2; ++round) {
    std::vector<std::unique_ptr<PendingReduce>> pending;
    for (Tensor& bucket : buckets) {
      pending.push_back(reducer_->start(bucket.data<float>(), bucket.numel(), stream_));
    }
    for (auto& reduce : pending) reduce->wait();
  }
  for (int i = 0; i < kBuckets; ++i) {
    expect_same_values(values_after_wait(buckets[i]), values[i], "bucket " + std::to_string(i));
  }
}

TEST_F(NcclReducerGpu, CountZeroIsFine) {
  std::unique_ptr<PendingReduce> empty = reducer_->start(nullptr, 0, stream_);
  ASSERT_NE(empty, nullptr);
  empty->wait();
  Tensor bucket = bucket_with(known_values(16, 1.0f));
  reducer_->start(bucket.data<float>(), 0, stream_)->wait();
  stream_.synchronize();
}

// The contract: a pending reduce never waited for waits when destroyed, and it keeps what
// it waits on alive, so it may outlive the reducer.
TEST_F(NcclReducerGpu, PendingReduceOutlivesTheReducerAndWaitsWhenDestroyed) {
  const std::vector<float> values = known_values(kOddCount, 11.0f);
  Tensor bucket = bucket_with(values);
  std::unique_ptr<PendingReduce> pending =
      reducer_->start(bucket.data<float>(), bucket.numel(), stream_);
  reducer_.reset();
  pending.reset();
  expect_same_values(values_after_wait(bucket), values, "bucket of a destroyed reducer");
}

TEST_F(NcclReducerGpu, RejectsBadArguments) {
  Tensor bucket = bucket_with(known_values(16, 0.0f));
  EXPECT_THROW(reducer_->start(bucket.data<float>(), -1, stream_), InvalidArgument);
  EXPECT_THROW(reducer_->start(nullptr, 16, stream_), InvalidArgument);
  EXPECT_THROW(reducer_->start(bucket.data<float>(), 16, Stream()), InvalidArgument)
      << "a host stream accepted for a device bucket";
  stream_.synchronize();
}

// Needs no device and no NCCL: both builds refuse a CPU device with a typed error.
TEST(NcclReducer, RefusesACpuDevice) {
  EXPECT_THROW(make_nccl_reducer(*single_process_communicator(), Device::cpu()), InvalidArgument);
}

}  // namespace
}  // namespace mb
