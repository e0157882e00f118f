// The Feeder's stream rule, seen on the CPU through its own stream handles: a staging buffer
// is allocated on the copy stream that writes it, and recorded on the compute stream that
// reads it before it can be freed. A buffer allocated on the compute stream (the Feeder
// before issue 13) could be a block that compute-stream work freed while still running,
// overwritten by the copy: a corrupted input or an illegal access on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "allocator/pool_allocator.h"
#include "engine/feeder.h"
#include "runtime/allocator_registry.h"
#include "tests/pool_delegate.h"

namespace mb {
namespace {

// Logs what the Feeder asks of the arena, in order.
class StreamLog final : public testing::PoolDelegate {
 public:
  using PoolDelegate::PoolDelegate;
  struct Entry {
    char what;  // 'a' allocate, 'r' record_stream, 'f' free
    void* ptr;
    StreamHandle stream;
  };
  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream) override {
    void* ptr = PoolDelegate::allocate(bytes, tag, stream);
    entries.push_back({'a', ptr, stream});
    return ptr;
  }
  void record_stream(void* ptr, StreamHandle stream) override {
    entries.push_back({'r', ptr, stream});
  }
  void deallocate(void* ptr) noexcept override {
    entries.push_back({'f', ptr, nullptr});
    PoolDelegate::deallocate(ptr);
  }
  std::vector<Entry> entries;
};

// Two distinct handles the CPU never dereferences (its streams and events are the host).
StreamHandle fake_stream(std::uintptr_t id) {
  return reinterpret_cast<StreamHandle>(id);
}

Tensor batch_of(std::int64_t rows) {
  std::vector<float> values(static_cast<std::size_t>(rows * 4));
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  return Tensor::from_vector(values, {rows, 4});
}

TEST(Feeder, StagesOnTheCopyStreamAndRecordsTheComputeStreamBeforeFreeing) {
  const Tensor images = batch_of(10);  // the host batch, outside the logged arena
  auto log = std::make_shared<StreamLog>(
      std::make_shared<PoolAllocator>(make_host_memory_resource(), PoolOptions{}));
  ScopedAllocator scope(Device::cpu(), log);
  const Stream compute(Device::cpu(), fake_stream(0x10));
  const Stream copy(Device::cpu(), fake_stream(0x20));
  {
    Feeder feeder(Device::cpu(), compute, copy, /*copy_inputs=*/true);
    // A step of micro-batches [4, 4, 2]: stage two ahead, take, release, stage the next.
    const std::int64_t sizes[] = {4, 4, 2};
    std::int64_t offsets[] = {0, 4, 8};
    feeder.stage(images, offsets[0], sizes[0], 0);
    feeder.stage(images, offsets[1], sizes[1], 1);
    for (int k = 0; k < 3; ++k) {
      const Tensor input = feeder.take(k);
      // The copy really happened: the rows of this micro-batch.
      const std::vector<float> got = input.to_vector();
      ASSERT_EQ(got.size(), static_cast<std::size_t>(sizes[k] * 4));
      for (std::size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i], static_cast<float>(offsets[k] * 4 + static_cast<std::int64_t>(i)));
      }
      feeder.release(k);
      if (k + 2 < 3) feeder.stage(images, offsets[k + 2], sizes[k + 2], k + 2);
    }
    feeder.reset();
  }
  int allocations = 0;
  std::map<void*, bool> recorded;  // live staging block -> recorded on compute
  for (const auto& e : log->entries) {
    if (e.what == 'a') {
      ++allocations;
      EXPECT_EQ(e.stream, copy.handle()) << "a staging buffer was not allocated on the copy "
                                            "stream that writes it";
      recorded[e.ptr] = false;
    } else if (e.what == 'r') {
      ASSERT_TRUE(recorded.count(e.ptr)) << "record_stream of a block the Feeder did not stage";
      EXPECT_EQ(e.stream, compute.handle());
      recorded[e.ptr] = true;
    } else {
      ASSERT_TRUE(recorded.count(e.ptr));
      EXPECT_TRUE(recorded[e.ptr]) << "a staging buffer the compute stream read was freed "
                                      "without record_stream(compute)";
      recorded.erase(e.ptr);
    }
  }
  EXPECT_EQ(allocations, 3);
  EXPECT_TRUE(recorded.empty()) << "a staging buffer outlived the Feeder";
}

TEST(Feeder, OnTheCpuAMicroBatchIsAViewOfTheBatch) {
  const Tensor images = batch_of(6);
  Feeder feeder(Device::cpu());
  feeder.stage(images, 2, 3, 0);
  const Tensor input = feeder.take(0);
  EXPECT_EQ(input.storage(), images.storage());
  EXPECT_EQ(input.shape(), Shape({3, 4}));
  EXPECT_EQ(input.to_vector().front(), 8.0f);
}

}  // namespace
}  // namespace mb
