// PoolAllocator over cudaMalloc (labels allocator, gpu): blocks are usable device memory,
// stream-aware reuse waits for a recorded stream's work, OOM under a cap, default capacity.
#include <gtest/gtest.h>

#include <vector>

#include "allocator/pool_allocator.h"
#include "runtime/error.h"
#include "tests/test_util.h"

#if MB_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace mb {
namespace {

constexpr std::size_t kMiB = 1024 * 1024;

#if MB_WITH_CUDA

TEST(PoolAllocatorGpu, BlocksAreDeviceMemoryAndRoundTrip) {
  MB_SKIP_WITHOUT_CUDA();
  PoolAllocator pool(make_cuda_memory_resource(0));
  EXPECT_EQ(pool.kind(), MemoryKind::Cuda);
  std::size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  EXPECT_LT(pool.capacity(), free_bytes) << "the default cap leaves a margin";
  EXPECT_GT(pool.capacity(), free_bytes / 2);
  std::vector<float> host(1 << 20);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i);
  void* device = pool.allocate(host.size() * sizeof(float), MemoryTag::Activation);
  ASSERT_EQ(cudaMemcpy(device, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  std::vector<float> back(host.size());
  ASSERT_EQ(cudaMemcpy(back.data(), device, back.size() * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(back, host);
  pool.deallocate(device);
  EXPECT_EQ(pool.report().allocated, 0u);
}

TEST(PoolAllocatorGpu, ReuseWaitsForARecordedStream) {
  MB_SKIP_WITHOUT_CUDA();
  PoolAllocator pool(make_cuda_memory_resource(0));
  cudaStream_t side = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), cudaSuccess);
  // Keep the side stream busy long enough that the event cannot have completed yet.
  void* busy = pool.allocate(256 * kMiB, MemoryTag::Other);
  void* block = pool.allocate(8 * kMiB, MemoryTag::Data);
  for (int i = 0; i < 20; ++i) cudaMemsetAsync(busy, i, 256 * kMiB, side);
  pool.record_stream(block, side);
  pool.deallocate(block);
  void* next = pool.allocate(8 * kMiB, MemoryTag::Data);
  EXPECT_NE(next, block) << "reused while the side stream may still use it";
  ASSERT_EQ(cudaStreamSynchronize(side), cudaSuccess);
  pool.deallocate(next);
  void* after = pool.allocate(8 * kMiB, MemoryTag::Data);
  EXPECT_EQ(after, block) << "after the side stream finished the block is reused";
  pool.deallocate(after);
  pool.deallocate(busy);
  cudaStreamDestroy(side);
  EXPECT_EQ(pool.report().allocated, 0u);
}

TEST(PoolAllocatorGpu, CapBoundsReservedAndOomIsRecoverable) {
  MB_SKIP_WITHOUT_CUDA();
  PoolOptions options;
  options.capacity = 64 * kMiB;
  PoolAllocator pool(make_cuda_memory_resource(0), options);
  void* a = pool.allocate(40 * kMiB, MemoryTag::Activation);
  EXPECT_THROW(pool.allocate(40 * kMiB, MemoryTag::Activation), OutOfMemory);
  EXPECT_LE(pool.report().reserved, 64 * kMiB);
  void* b = pool.allocate(20 * kMiB, MemoryTag::Activation);
  pool.deallocate(a);
  pool.deallocate(b);
  pool.empty_cache();
  EXPECT_EQ(pool.report().reserved, 0u);
}

#else

TEST(PoolAllocatorGpu, NeedsTheCudaBackend) {
  GTEST_SKIP() << "built without CUDA";
}

#endif

}  // namespace
}  // namespace mb
