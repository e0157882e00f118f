// A fixed sequence of pool operations shared by the trace tests (tests/allocator and
// tests/cli): every kind of event the trace records, with `after` called after each one so
// a test can take its truth (snapshot, report) at that point.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"

namespace mb::testing {

// A sequence of allocations and frees over several pools, tags, sizes and segment kinds
// (small, large, own), and empty_cache() at the end (with nothing cached to release, it releases
// nothing); calls `after` after each operation.
inline void exercise(PoolAllocator& pool, const std::function<void()>& after) {
  std::vector<void*> live;
  const std::size_t sizes[] = {1000, 300000, 5u << 20, 700, 12u << 20, 64, 900000, 3u << 20};
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 8; ++i) {
      const MemoryTag tag = static_cast<MemoryTag>((i + round) % kNumMemoryTags);
      live.push_back(pool.allocate(sizes[i] + 512 * round, tag));
      after();
    }
    pool.mark("round " + std::to_string(round));
    after();
    // Free every other block: leaves holes, so the segment map has free gaps.
    for (std::size_t i = 0; i < live.size(); i += 2) {
      if (live[i] == nullptr) continue;
      pool.deallocate(live[i]);
      live[i] = nullptr;
      after();
    }
  }
  pool.empty_cache();
  after();
  for (void* ptr : live) {
    if (ptr == nullptr) continue;
    pool.deallocate(ptr);
    after();
  }
}

}  // namespace mb::testing
