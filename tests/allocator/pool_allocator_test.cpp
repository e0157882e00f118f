// PoolAllocator over host memory (label allocator): randomized alloc/free sequences checked
// against a simple model of live blocks, best fit, split and coalesce, the cap and
// OutOfMemory (only when no free block and no headroom holds the request; blocks lent across
// the small/large pools), cache release, stream-aware reuse (with a fake resource whose events the
// test completes by hand) and the default-allocator switch.
#include "allocator/pool_allocator.h"

#include <sys/sysinfo.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "allocator/default_allocator.h"
#include "allocator/host_memory.h"
#include "allocator/passthrough_allocator.h"
#include "runtime/allocator_registry.h"
#include "runtime/error.h"

namespace mb {
namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * 1024;

// Host memory with a hard device limit (reserve returns nullptr beyond it) and events the
// test completes by hand, to exercise the paths a GPU would take.
class FakeDeviceResource final : public MemoryResource {
 public:
  explicit FakeDeviceResource(std::size_t device_limit = SIZE_MAX,
                              MemoryKind kind = MemoryKind::Host)
      : device_limit_(device_limit), kind_(kind) {}
  ~FakeDeviceResource() override {
    for (bool* event : live_events_) delete event;
  }

  void* reserve(std::size_t bytes) override {
    if (bytes > device_limit_ - in_use_) return nullptr;
    in_use_ += bytes;
    return std::aligned_alloc(kSegmentAlignment, bytes);
  }
  void release(void* ptr, std::size_t bytes) noexcept override {
    in_use_ -= bytes;
    std::free(ptr);
  }
  MemoryKind kind() const override { return kind_; }
  int device_index() const override { return -1; }
  std::size_t device_free_bytes() const override { return device_limit_ - in_use_; }
  std::string name() const override { return "fake"; }

  void* record_event(StreamHandle) override {
    bool* done = new bool(false);
    live_events_.push_back(done);
    return done;
  }
  bool event_completed(void* event) override { return *static_cast<bool*>(event); }
  void destroy_event(void* event) noexcept override {
    live_events_.erase(std::find(live_events_.begin(), live_events_.end(), event));
    delete static_cast<bool*>(event);
  }
  void complete_all_events() {
    for (bool* event : live_events_) *event = true;
  }
  std::size_t live_events() const { return live_events_.size(); }

 private:
  std::size_t device_limit_;
  MemoryKind kind_;
  std::size_t in_use_ = 0;
  std::vector<bool*> live_events_;
};

struct LiveBlock {
  std::size_t requested;
  MemoryTag tag;
  unsigned char pattern;
};

// Checks every invariant of the pool against the model `live` (pointer -> request).
void check_invariants(const PoolAllocator& pool, const std::map<char*, LiveBlock>& live) {
  std::vector<SegmentSnapshot> segments = pool.snapshot();
  PoolStats stats = pool.stats();
  FreeArenaReport report = pool.report();

  std::size_t reserved = 0, allocated = 0, free_bytes = 0, largest_free = 0;
  std::size_t allocated_blocks = 0;
  std::array<std::size_t, kNumMemoryTags> by_tag{};
  std::map<char*, std::size_t> block_size_at;  // allocated blocks by address
  for (const SegmentSnapshot& segment : segments) {
    reserved += segment.size;
    std::size_t offset = 0;
    ASSERT_FALSE(segment.blocks.empty());
    for (std::size_t i = 0; i < segment.blocks.size(); ++i) {
      const BlockSnapshot& block = segment.blocks[i];
      ASSERT_EQ(block.offset, offset) << "blocks must tile segment " << segment.id;
      ASSERT_GT(block.size, 0u);
      offset += block.size;
      if (block.allocated) {
        allocated += block.size;
        ++allocated_blocks;
        by_tag[static_cast<int>(block.tag)] += block.size;
        block_size_at[reinterpret_cast<char*>(segment.base + block.offset)] = block.size;
      } else {
        free_bytes += block.size;
        largest_free = std::max(largest_free, block.size);
        // Coalescing: two free blocks are never neighbours.
        if (i > 0) {
          ASSERT_TRUE(segment.blocks[i - 1].allocated) << "unmerged free neighbours";
        }
      }
    }
    ASSERT_EQ(offset, segment.size) << "blocks must cover segment " << segment.id;
  }

  // Every live pointer is the start of an allocated block, big enough, aligned, and the
  // model's live blocks are exactly the allocated ones (so none overlap: they tile segments).
  ASSERT_EQ(allocated_blocks, live.size());
  std::array<std::size_t, kNumMemoryTags> model_by_tag{};
  for (const auto& [ptr, block] : live) {
    auto it = block_size_at.find(ptr);
    ASSERT_NE(it, block_size_at.end()) << "live pointer is not an allocated block start";
    ASSERT_GE(it->second, block.requested);
    ASSERT_GE(it->second, PoolAllocator::round_size(block.requested));
    ASSERT_EQ(reinterpret_cast<std::uintptr_t>(ptr) % 256, 0u);
    model_by_tag[static_cast<int>(block.tag)] += it->second;
  }
  char* previous_end = nullptr;
  for (const auto& [ptr, size] : block_size_at) {
    if (previous_end != nullptr) {
      ASSERT_LE(previous_end, ptr) << "allocated blocks overlap";
    }
    previous_end = ptr + size;
  }

  EXPECT_EQ(stats.allocated_bytes, allocated);
  EXPECT_EQ(stats.reserved_bytes, reserved);
  EXPECT_EQ(stats.active_blocks, live.size());
  EXPECT_EQ(stats.segments, segments.size());
  EXPECT_LE(stats.allocated_bytes, stats.peak_allocated_bytes);
  EXPECT_LE(stats.reserved_bytes, stats.peak_reserved_bytes);
  EXPECT_EQ(report.allocated, allocated);
  EXPECT_EQ(report.reserved, reserved);
  EXPECT_EQ(report.free_in_arena, reserved - allocated);
  EXPECT_EQ(report.free_in_arena, free_bytes);
  EXPECT_EQ(report.largest_free_block, largest_free);
  EXPECT_LE(report.reserved, report.capacity);
  EXPECT_EQ(report.headroom, report.capacity - report.reserved);
  if (free_bytes == 0) {
    EXPECT_EQ(report.fragmentation, 0.0);
  } else {
    EXPECT_DOUBLE_EQ(report.fragmentation, 1.0 - double(largest_free) / double(free_bytes));
  }
  std::size_t tag_sum = 0;
  for (int tag = 0; tag < kNumMemoryTags; ++tag) {
    EXPECT_EQ(report.allocated_by_tag[tag], by_tag[tag]) << "tag " << tag;
    EXPECT_EQ(model_by_tag[tag], by_tag[tag]) << "tag " << tag;
    tag_sum += report.allocated_by_tag[tag];
  }
  EXPECT_EQ(tag_sum, report.allocated);
}

// Sizes from 1 B to 8 MiB, log-uniform so that small and large pools both see traffic.
std::size_t random_size(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> exponent(0.0, 23.0);
  return std::max<std::size_t>(1, static_cast<std::size_t>(std::exp2(exponent(rng))));
}

void fill(char* ptr, std::size_t bytes, unsigned char pattern) {
  std::memset(ptr, pattern, std::min<std::size_t>(bytes, 64));
  std::memset(ptr + bytes - std::min<std::size_t>(bytes, 64), pattern,
              std::min<std::size_t>(bytes, 64));
}

bool still_filled(const char* ptr, std::size_t bytes, unsigned char pattern) {
  std::size_t n = std::min<std::size_t>(bytes, 64);
  for (std::size_t i = 0; i < n; ++i) {
    if (static_cast<unsigned char>(ptr[i]) != pattern) return false;
    if (static_cast<unsigned char>(ptr[bytes - 1 - i]) != pattern) return false;
  }
  return true;
}

// Random alloc/free; returns the number of OOMs seen. With `capacity`, checks the cap holds.
int run_random_sequence(PoolAllocator& pool, std::uint64_t seed, int steps, int check_every) {
  std::mt19937_64 rng(seed);
  std::map<char*, LiveBlock> live;
  int ooms = 0;
  for (int step = 0; step < steps; ++step) {
    bool do_alloc = live.empty() || (rng() % 100) < (live.size() < 64 ? 60u : 40u);
    if (do_alloc) {
      std::size_t bytes = random_size(rng);
      auto tag = static_cast<MemoryTag>(rng() % kNumMemoryTags);
      try {
        char* ptr = static_cast<char*>(pool.allocate(bytes, tag));
        auto pattern = static_cast<unsigned char>(rng());
        fill(ptr, bytes, pattern);
        EXPECT_EQ(live.count(ptr), 0u) << "pointer handed out twice";
        live[ptr] = LiveBlock{bytes, tag, pattern};
      } catch (const OutOfMemory& oom) {
        ++ooms;
        EXPECT_EQ(oom.requested_bytes(), bytes);
        EXPECT_LE(oom.report().reserved, pool.capacity());
      }
    } else {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      EXPECT_TRUE(still_filled(it->first, it->second.requested, it->second.pattern))
          << "another block overwrote this one";
      pool.deallocate(it->first);
      live.erase(it);
    }
    EXPECT_LE(pool.stats().reserved_bytes, pool.capacity());
    if (step % check_every == 0) {
      check_invariants(pool, live);
      if (::testing::Test::HasFatalFailure()) return ooms;
    }
  }
  check_invariants(pool, live);
  for (auto& [ptr, block] : live) {
    EXPECT_TRUE(still_filled(ptr, block.requested, block.pattern));
    pool.deallocate(ptr);
  }
  live.clear();
  check_invariants(pool, live);
  PoolStats stats = pool.stats();
  EXPECT_EQ(stats.allocated_bytes, 0u);
  EXPECT_EQ(stats.active_blocks, 0u);
  // Fully coalesced: every segment is one free block again.
  for (const SegmentSnapshot& segment : pool.snapshot()) {
    EXPECT_EQ(segment.blocks.size(), 1u);
    EXPECT_FALSE(segment.blocks.empty() || segment.blocks[0].allocated);
  }
  return ooms;
}

TEST(PoolAllocator, RoundSize) {
  EXPECT_EQ(PoolAllocator::round_size(0), 512u);
  EXPECT_EQ(PoolAllocator::round_size(1), 512u);
  EXPECT_EQ(PoolAllocator::round_size(512), 512u);
  EXPECT_EQ(PoolAllocator::round_size(513), 1024u);
  EXPECT_EQ(PoolAllocator::round_size(kMiB), kMiB);
  // Large: eight classes per power of two, at most 2 MiB apart.
  EXPECT_EQ(PoolAllocator::round_size(kMiB + 1), kMiB + 128 * kKiB);
  EXPECT_EQ(PoolAllocator::round_size(5 * kMiB + 1), 5 * kMiB + 512 * kKiB);
  EXPECT_EQ(PoolAllocator::round_size(100 * kMiB + 1), 102 * kMiB);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; ++i) {
    std::size_t bytes =
        static_cast<std::size_t>(std::exp2(std::uniform_real_distribution<>(0, 34)(rng)));
    std::size_t rounded = PoolAllocator::round_size(bytes);
    ASSERT_GE(rounded, bytes);
    ASSERT_EQ(rounded % 512, 0u);
    if (bytes > 4096) {
      ASSERT_LE(rounded - bytes, std::min<std::size_t>(bytes / 8, 2 * kMiB));
    }
  }
}

TEST(PoolAllocator, RandomSequencesKeepTheBooks) {
  for (std::uint64_t seed : {1u, 2u, 3u, 4u}) {
    SCOPED_TRACE(seed);
    PoolAllocator pool(make_host_memory_resource());
    EXPECT_EQ(run_random_sequence(pool, seed, 3000, 7), 0);
    PoolStats stats = pool.stats();
    EXPECT_GT(stats.cache_hits, stats.allocations / 2) << "the pool should mostly reuse";
    EXPECT_EQ(stats.ooms, 0u);
    if (HasFatalFailure()) return;
  }
}

TEST(PoolAllocator, RandomSequencesUnderACapNeverExceedIt) {
  for (std::uint64_t seed : {11u, 12u, 13u}) {
    SCOPED_TRACE(seed);
    PoolOptions options;
    options.capacity = 48 * kMiB;
    PoolAllocator pool(make_host_memory_resource(), options);
    EXPECT_EQ(pool.report().capacity, 48 * kMiB);
    int ooms = run_random_sequence(pool, seed, 3000, 11);
    EXPECT_GT(ooms, 0) << "the cap should bite in this sequence";
    EXPECT_EQ(pool.stats().ooms, static_cast<std::size_t>(ooms));
    EXPECT_LE(pool.stats().peak_reserved_bytes, 48 * kMiB);
    if (HasFatalFailure()) return;
  }
}

TEST(PoolAllocator, SplitAndCoalesceRestoreOneBlock) {
  PoolAllocator pool(make_host_memory_resource());
  char* x = static_cast<char*>(pool.allocate(4 * kKiB, MemoryTag::Activation));
  char* y = static_cast<char*>(pool.allocate(4 * kKiB, MemoryTag::Activation));
  char* z = static_cast<char*>(pool.allocate(4 * kKiB, MemoryTag::Activation));
  EXPECT_EQ(y, x + 4 * kKiB);
  EXPECT_EQ(z, y + 4 * kKiB);
  std::vector<SegmentSnapshot> segments = pool.snapshot();
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].size, PoolAllocator::kSmallSegment);
  ASSERT_EQ(segments[0].blocks.size(), 4u);  // x, y, z and the free tail

  pool.deallocate(x);
  pool.deallocate(z);  // merges with the tail
  segments = pool.snapshot();
  ASSERT_EQ(segments[0].blocks.size(), 3u);
  EXPECT_FALSE(segments[0].blocks[0].allocated);
  EXPECT_TRUE(segments[0].blocks[1].allocated);
  EXPECT_EQ(segments[0].blocks[2].size, PoolAllocator::kSmallSegment - 8 * kKiB);

  pool.deallocate(y);  // merges with both neighbours
  segments = pool.snapshot();
  ASSERT_EQ(segments[0].blocks.size(), 1u);
  EXPECT_EQ(segments[0].blocks[0].size, PoolAllocator::kSmallSegment);
  EXPECT_EQ(pool.report().largest_free_block, PoolAllocator::kSmallSegment);
  EXPECT_EQ(pool.report().fragmentation, 0.0);
}

// usage() is report()'s capacity, reserved and allocated, from the counters alone.
TEST(PoolAllocator, UsageIsTheReportsCounters) {
  PoolOptions options;
  options.capacity = 64 * kMiB;
  PoolAllocator pool(make_host_memory_resource(), options);
  void* small = pool.allocate(3 * kKiB, MemoryTag::Activation);
  void* large = pool.allocate(5 * kMiB, MemoryTag::Grad);
  pool.deallocate(small);
  const FreeArenaReport report = pool.report();
  const MemoryUsage usage = pool.usage();
  EXPECT_EQ(usage.capacity, report.capacity);
  EXPECT_EQ(usage.capacity, 64 * kMiB);
  EXPECT_EQ(usage.reserved, report.reserved);
  EXPECT_EQ(usage.allocated, report.allocated);
  EXPECT_GE(usage.allocated, 5 * kMiB);
  EXPECT_GT(usage.reserved, usage.allocated);  // the small segment stays cached
  pool.deallocate(large);
}

TEST(PoolAllocator, BestFitPicksTheSmallestFittingBlock) {
  PoolAllocator pool(make_host_memory_resource());
  // a (8 KiB), b (2 KiB), c (4 KiB) separated by live 512 B spacers, then freed.
  void* a = pool.allocate(8 * kKiB, MemoryTag::Other);
  void* s1 = pool.allocate(512, MemoryTag::Other);
  void* b = pool.allocate(2 * kKiB, MemoryTag::Other);
  void* s2 = pool.allocate(512, MemoryTag::Other);
  void* c = pool.allocate(4 * kKiB, MemoryTag::Other);
  void* s3 = pool.allocate(512, MemoryTag::Other);
  pool.deallocate(a);
  pool.deallocate(b);
  pool.deallocate(c);
  FreeArenaReport report = pool.report();
  EXPECT_EQ(report.free_in_arena, PoolAllocator::kSmallSegment - 3 * 512);
  // First fit (by address) would return a for both requests.
  void* two = pool.allocate(2 * kKiB, MemoryTag::Other);
  EXPECT_EQ(two, b);
  void* three = pool.allocate(3 * kKiB, MemoryTag::Other);
  EXPECT_EQ(three, c);
  std::vector<SegmentSnapshot> segments = pool.snapshot();
  ASSERT_EQ(segments.size(), 1u);
  // c was split: 3 KiB allocated, 1 KiB free behind it.
  const auto& blocks = segments[0].blocks;
  ASSERT_EQ(blocks.size(), 8u);  // a, s1, b, s2, c (3 KiB), 1 KiB, s3, tail
  EXPECT_FALSE(blocks[0].allocated);
  EXPECT_EQ(blocks[0].size, 8 * kKiB);
  EXPECT_EQ(blocks[4].size, 3 * kKiB);
  EXPECT_TRUE(blocks[4].allocated);
  EXPECT_EQ(blocks[5].size, 1 * kKiB);
  EXPECT_FALSE(blocks[5].allocated);
  for (void* p : {s1, s2, s3, two, three}) pool.deallocate(p);
  EXPECT_EQ(pool.snapshot()[0].blocks.size(), 1u);
}

TEST(PoolAllocator, LargePoolKeepsSmallRemaindersAttached) {
  PoolAllocator pool(make_host_memory_resource());
  void* big = pool.allocate(2 * kMiB, MemoryTag::Activation);
  void* after = pool.allocate(2 * kMiB, MemoryTag::Activation);
  pool.deallocate(big);
  // 1.5 MiB fits the freed 2 MiB block; the 0.5 MiB remainder is too small to split off.
  void* again = pool.allocate(3 * kMiB / 2, MemoryTag::Activation);
  EXPECT_EQ(again, big);
  EXPECT_EQ(pool.report().allocated, 4 * kMiB);
  EXPECT_EQ(pool.stats().segments, 1u);
  EXPECT_EQ(pool.snapshot()[0].size, PoolAllocator::kLargeSegment);
  for (void* p : {again, after}) pool.deallocate(p);
  // Requests above 10 MiB get their own segment, rounded to 2 MiB (once nothing cached fits).
  pool.empty_cache();
  void* huge = pool.allocate(11 * kMiB, MemoryTag::Activation);
  std::vector<SegmentSnapshot> segments = pool.snapshot();
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].size, 12 * kMiB);
  pool.deallocate(huge);
}

TEST(PoolAllocator, OutOfMemoryCarriesTheReportAndThePoolStaysUsable) {
  PoolOptions options;
  options.capacity = 8 * kMiB;
  PoolAllocator pool(make_host_memory_resource(), options);
  void* six = pool.allocate(6 * kMiB, MemoryTag::Param);
  EXPECT_EQ(pool.stats().reserved_bytes, 6 * kMiB);  // the 20 MiB segment did not fit
  try {
    pool.allocate(4 * kMiB, MemoryTag::Activation);
    FAIL() << "expected OutOfMemory";
  } catch (const OutOfMemory& oom) {
    EXPECT_EQ(oom.requested_bytes(), 4 * kMiB);
    const FreeArenaReport& report = oom.report();
    EXPECT_EQ(report.capacity, 8 * kMiB);
    EXPECT_EQ(report.reserved, 6 * kMiB);
    EXPECT_EQ(report.allocated, 6 * kMiB);
    EXPECT_EQ(report.free_in_arena, 0u);
    EXPECT_EQ(report.headroom, 2 * kMiB);
    EXPECT_EQ(report.tag_bytes(MemoryTag::Param), 6 * kMiB);
    EXPECT_EQ(report.tag_bytes(MemoryTag::Activation), 0u);
    std::string message = oom.what();
    EXPECT_NE(message.find("PoolAllocator(host)"), std::string::npos) << message;
    EXPECT_NE(message.find("4.00 MiB"), std::string::npos) << message;
  }
  // A request too large to round is an OutOfMemory too, not a wrapped-around tiny block.
  EXPECT_THROW(pool.allocate(SIZE_MAX, MemoryTag::Activation), OutOfMemory);
  PoolStats stats = pool.stats();
  EXPECT_EQ(stats.ooms, 2u);
  EXPECT_EQ(stats.allocated_bytes, 6 * kMiB);
  // Something that fits after the OOM succeeds.
  void* two = pool.allocate(2 * kMiB, MemoryTag::Activation);
  EXPECT_EQ(pool.stats().reserved_bytes, 8 * kMiB);
  EXPECT_EQ(pool.report().headroom, 0u);
  pool.deallocate(two);
  pool.deallocate(six);
  EXPECT_EQ(pool.report().allocated, 0u);
}

TEST(PoolAllocator, CapReleasesCachedSegmentsBeforeFailing) {
  PoolOptions options;
  options.capacity = 8 * kMiB;
  PoolAllocator pool(make_host_memory_resource(), options);
  pool.deallocate(pool.allocate(6 * kMiB, MemoryTag::Activation));
  EXPECT_EQ(pool.report().reserved, 6 * kMiB);
  EXPECT_EQ(pool.report().free_in_arena, 6 * kMiB);
  // 7 MiB does not fit the cached 6 MiB block, and 6 + 7 > 8: the cache must go first.
  void* seven = pool.allocate(7 * kMiB, MemoryTag::Activation);
  PoolStats stats = pool.stats();
  EXPECT_EQ(stats.releases, 1u);
  EXPECT_EQ(stats.ooms, 0u);
  EXPECT_EQ(stats.segments, 1u);
  EXPECT_EQ(stats.reserved_bytes, 8 * kMiB);  // rounded to 2 MiB
  pool.deallocate(seven);
  pool.empty_cache();
  EXPECT_EQ(pool.report().reserved, 0u);
  EXPECT_EQ(pool.stats().releases, 2u);
}

TEST(PoolAllocator, DeviceOutOfMemoryReleasesCacheThenThrows) {
  auto resource = std::make_unique<FakeDeviceResource>(8 * kMiB);
  PoolOptions uncapped;
  uncapped.capacity = SIZE_MAX;  // no cap: only the "device" limits
  PoolAllocator pool(std::move(resource), uncapped);
  pool.deallocate(pool.allocate(6 * kMiB, MemoryTag::Activation));
  void* seven = pool.allocate(7 * kMiB, MemoryTag::Activation);  // after releasing the cache
  EXPECT_EQ(pool.stats().releases, 1u);
  EXPECT_THROW(pool.allocate(4 * kMiB, MemoryTag::Activation), OutOfMemory);
  EXPECT_EQ(pool.report().headroom, 0u);  // bounded by the device's free bytes
  pool.deallocate(seven);
  EXPECT_NO_THROW(pool.deallocate(pool.allocate(4 * kMiB, MemoryTag::Activation)));
}

TEST(PoolAllocator, StreamAwareReuseWaitsForRecordedStreams) {
  auto owned = std::make_unique<FakeDeviceResource>();
  FakeDeviceResource* resource = owned.get();
  PoolAllocator pool(std::move(owned));
  auto compute = reinterpret_cast<StreamHandle>(0x1);
  auto copy = reinterpret_cast<StreamHandle>(0x2);

  void* p = pool.allocate(64 * kKiB, MemoryTag::Data, compute);
  void* keep = pool.allocate(64 * kKiB, MemoryTag::Data, compute);
  pool.record_stream(p, copy);
  pool.record_stream(p, compute);  // its own stream: no event needed
  pool.deallocate(p);
  EXPECT_EQ(resource->live_events(), 1u);
  // Still counted until the copy stream is done with it.
  EXPECT_EQ(pool.report().allocated, 128 * kKiB);
  void* q = pool.allocate(64 * kKiB, MemoryTag::Data, compute);
  EXPECT_NE(q, p) << "reused before the other stream's event completed";
  pool.deallocate(q);

  resource->complete_all_events();
  void* r = pool.allocate(64 * kKiB, MemoryTag::Data, compute);
  EXPECT_EQ(r, p) << "after the event the block is free again (best fit, lowest address)";
  EXPECT_EQ(resource->live_events(), 0u);
  EXPECT_EQ(pool.report().allocated, 128 * kKiB);

  // A block of one stream is not handed to another stream.
  pool.deallocate(r);
  void* other = pool.allocate(64 * kKiB, MemoryTag::Data, copy);
  EXPECT_EQ(pool.stats().segments, 2u);
  std::vector<SegmentSnapshot> segments = pool.snapshot();
  EXPECT_EQ(segments[1].stream, copy);
  pool.deallocate(other);
  pool.deallocate(keep);
  EXPECT_EQ(pool.report().allocated, 0u);
  EXPECT_THROW(pool.record_stream(keep, copy), InvalidArgument);
}

TEST(PoolAllocator, RecordStreamOnHostFreesAtOnce) {
  PoolAllocator pool(make_host_memory_resource());
  void* p = pool.allocate(kKiB, MemoryTag::Data);
  pool.record_stream(p, reinterpret_cast<StreamHandle>(0x7));
  pool.deallocate(p);
  EXPECT_EQ(pool.report().allocated, 0u);
}

// The free blocks of one stream (both pools), in bytes.
std::vector<std::size_t> free_block_sizes(const PoolAllocator& pool) {
  std::vector<std::size_t> sizes;
  for (const SegmentSnapshot& segment : pool.snapshot()) {
    for (const BlockSnapshot& block : segment.blocks) {
      if (!block.allocated) sizes.push_back(block.size);
    }
  }
  return sizes;
}

// Bytes a release of cached segments could give back: segments that are one free block.
std::size_t whole_free_segment_bytes(const PoolAllocator& pool) {
  std::size_t bytes = 0;
  for (const SegmentSnapshot& segment : pool.snapshot()) {
    if (segment.blocks.size() == 1 && !segment.blocks[0].allocated) bytes += segment.size;
  }
  return bytes;
}

// The LeNet-under-16-MiB failure, reduced: a capped arena holds large and small blocks; the
// large ones are freed; a small request that only fits in the freed large space must be
// carved from it (the small pool has no room and the cap none for a new small segment).
TEST(PoolAllocator, SmallRequestUsesFreedLargeSpaceUnderACap) {
  PoolOptions options;
  options.capacity = 22 * kMiB + 256 * kKiB;
  PoolAllocator pool(make_host_memory_resource(), options);
  // One 20 MiB large segment filled with 5 x 4 MiB, one 2 MiB small segment with 4 x 512 KiB.
  std::vector<void*> large, small;
  for (int i = 0; i < 5; ++i) large.push_back(pool.allocate(4 * kMiB, MemoryTag::Activation));
  for (int i = 0; i < 4; ++i) small.push_back(pool.allocate(512 * kKiB, MemoryTag::Activation));
  PoolStats stats = pool.stats();
  ASSERT_EQ(stats.reserved_bytes, 22 * kMiB);
  ASSERT_EQ(stats.segments, 2u);
  // Free the large blocks but one, so no segment is whole-free (nothing to release).
  for (int i : {0, 2, 3, 4}) pool.deallocate(large[i]);
  FreeArenaReport report = pool.report();
  EXPECT_EQ(report.free_in_arena, 16 * kMiB);
  EXPECT_EQ(report.largest_free_block, 12 * kMiB);
  EXPECT_EQ(report.headroom, 256 * kKiB);

  // 350 KiB fits neither the small pool nor the headroom: only the freed large space.
  void* in_large_space = pool.allocate(350 * kKiB, MemoryTag::Activation);
  EXPECT_EQ(pool.stats().ooms, 0u);
  EXPECT_EQ(pool.stats().segments, 2u);
  EXPECT_EQ(pool.stats().reserved_bytes, 22 * kMiB);
  EXPECT_EQ(pool.stats().lent_blocks, 1u);
  // Best fit: the 4 MiB hole at the segment's start (not the 12 MiB tail), split at 512 B
  // granularity rather than handed out whole.
  std::vector<SegmentSnapshot> segments = pool.snapshot();
  ASSERT_EQ(segments.size(), 2u);
  const SegmentSnapshot& large_segment = segments[0].small_pool ? segments[1] : segments[0];
  ASSERT_FALSE(large_segment.small_pool);
  ASSERT_EQ(large_segment.blocks.size(), 4u);
  EXPECT_EQ(large_segment.base, reinterpret_cast<std::uintptr_t>(in_large_space));
  EXPECT_TRUE(large_segment.blocks[0].allocated);
  EXPECT_EQ(large_segment.blocks[0].size, PoolAllocator::round_size(350 * kKiB));
  EXPECT_FALSE(large_segment.blocks[1].allocated);
  EXPECT_EQ(large_segment.blocks[1].size, 4 * kMiB - PoolAllocator::round_size(350 * kKiB));
  std::map<char*, LiveBlock> live;
  live[static_cast<char*>(in_large_space)] = LiveBlock{350 * kKiB, MemoryTag::Activation, 0};
  live[static_cast<char*>(large[1])] = LiveBlock{4 * kMiB, MemoryTag::Activation, 0};
  for (void* p : small) {
    live[static_cast<char*>(p)] = LiveBlock{512 * kKiB, MemoryTag::Activation, 0};
  }
  check_invariants(pool, live);
  if (HasFatalFailure()) return;

  // Freeing coalesces the large segment back into one block.
  pool.deallocate(in_large_space);
  pool.deallocate(large[1]);
  for (const SegmentSnapshot& segment : pool.snapshot()) {
    if (!segment.small_pool) {
      EXPECT_EQ(segment.blocks.size(), 1u);
    }
  }
  for (void* p : small) pool.deallocate(p);
  EXPECT_EQ(pool.report().allocated, 0u);
}

TEST(PoolAllocator, LargeRequestUsesFreeSmallSegmentUnderACap) {
  PoolOptions options;
  options.capacity = 4 * kMiB;
  PoolAllocator pool(make_host_memory_resource(), options);
  void* small = pool.allocate(kMiB, MemoryTag::Activation);  // 2 MiB small segment
  void* large = pool.allocate(2 * kMiB, MemoryTag::Activation);
  EXPECT_EQ(pool.stats().reserved_bytes, 4 * kMiB);
  pool.deallocate(large);
  void* second_small = pool.allocate(kMiB, MemoryTag::Activation);  // fills the small segment
  pool.deallocate(small);
  // 1.5 MiB takes the freed 2 MiB large block whole (a large-pool remainder <= 1 MiB stays
  // attached). Then 1.25 MiB fits neither the small segment's free 1 MiB nor the headroom
  // (0): OutOfMemory is right.
  void* one_and_half = pool.allocate(3 * kMiB / 2, MemoryTag::Activation);
  EXPECT_THROW(pool.allocate(5 * kMiB / 4, MemoryTag::Activation), OutOfMemory);
  pool.deallocate(second_small);
  // Now the small segment is wholly free (2 MiB): the 1.25 MiB request is lent it.
  void* lent = pool.allocate(5 * kMiB / 4, MemoryTag::Activation);
  EXPECT_EQ(pool.stats().lent_blocks, 1u);
  EXPECT_EQ(pool.stats().reserved_bytes, 4 * kMiB);
  std::vector<SegmentSnapshot> segments = pool.snapshot();
  for (const SegmentSnapshot& segment : segments) {
    if (!segment.small_pool) continue;
    ASSERT_EQ(segment.blocks.size(), 2u);  // split at 512 B granularity
    EXPECT_EQ(segment.base, reinterpret_cast<std::uintptr_t>(lent));
    EXPECT_EQ(segment.blocks[0].size, 5 * kMiB / 4);
  }
  pool.deallocate(lent);
  pool.deallocate(one_and_half);
  EXPECT_EQ(pool.report().allocated, 0u);
}

TEST(PoolAllocator, SmallSegmentShrinksToFitUnderTheCap) {
  PoolOptions options;
  options.capacity = 7 * kMiB + 300 * kKiB;
  PoolAllocator pool(make_host_memory_resource(), options);
  void* large = pool.allocate(6 * kMiB, MemoryTag::Param);
  // 1.29 MiB of headroom: not a full 2 MiB small segment, so one of round_down(headroom).
  void* a = pool.allocate(100 * kKiB, MemoryTag::Activation);
  std::size_t headroom = 1 * kMiB + 300 * kKiB;
  EXPECT_EQ(pool.stats().reserved_bytes, 6 * kMiB + headroom / 512 * 512);
  // The next small requests share that segment instead of each needing headroom.
  void* b = pool.allocate(600 * kKiB, MemoryTag::Activation);
  void* c = pool.allocate(500 * kKiB, MemoryTag::Activation);
  EXPECT_EQ(pool.stats().segments, 2u);
  EXPECT_EQ(pool.stats().ooms, 0u);
  EXPECT_THROW(pool.allocate(200 * kKiB, MemoryTag::Activation), OutOfMemory);
  for (void* p : {a, b, c, large}) pool.deallocate(p);
  check_invariants(pool, {});
}

// Uncapped, mixed shapes: the freed space of one pool serves the other before the arena
// grows. A step of 2 MiB tensors, then a step of 1 MiB ones (small pool) reuses the first
// step's free large segment instead of reserving small segments.
TEST(PoolAllocator, MixedShapesReuseTheOtherPoolBeforeGrowing) {
  PoolAllocator pool(make_host_memory_resource());
  std::vector<void*> step;
  for (int i = 0; i < 8; ++i) step.push_back(pool.allocate(2 * kMiB, MemoryTag::Activation));
  for (void* p : step) pool.deallocate(p);
  step.clear();
  std::size_t reserved = pool.stats().reserved_bytes;
  EXPECT_EQ(reserved, PoolAllocator::kLargeSegment);
  for (int i = 0; i < 8; ++i) step.push_back(pool.allocate(kMiB, MemoryTag::Activation));
  EXPECT_EQ(pool.stats().reserved_bytes, reserved) << "grew although 20 MiB were free";
  EXPECT_EQ(pool.stats().lent_blocks, 8u);
  for (void* p : step) pool.deallocate(p);
  EXPECT_EQ(pool.snapshot()[0].blocks.size(), 1u);
}

// Randomized under a tight cap: an OutOfMemory is allowed only when the rounded request fits
// in no free block, and not in the headroom even after releasing whole free segments.
TEST(PoolAllocator, CappedOutOfMemoryOnlyWhenNothingCanHoldTheRequest) {
  for (std::uint64_t seed : {21u, 22u, 23u, 24u, 25u}) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    PoolOptions options;
    options.capacity = 16 * kMiB + 512 * kKiB * (seed % 3);
    PoolAllocator pool(make_host_memory_resource(), options);
    std::map<char*, LiveBlock> live;
    int ooms = 0, successes_after_pressure = 0;
    for (int step = 0; step < 4000; ++step) {
      bool do_alloc = live.empty() || rng() % 100 < 55u;
      if (do_alloc) {
        // Mostly small (LeNet-like activations), some large, log-uniform 512 B .. 4 MiB.
        std::size_t bytes = static_cast<std::size_t>(
            std::exp2(std::uniform_real_distribution<double>(9.0, 22.0)(rng)));
        std::size_t rounded = PoolAllocator::round_size(bytes);
        std::vector<std::size_t> free_sizes = free_block_sizes(pool);
        bool fits_a_free_block = std::any_of(free_sizes.begin(), free_sizes.end(),
                                             [&](std::size_t size) { return size >= rounded; });
        std::size_t headroom = pool.report().headroom + whole_free_segment_bytes(pool);
        bool could_hold = fits_a_free_block || headroom >= rounded;
        try {
          char* ptr = static_cast<char*>(pool.allocate(bytes, MemoryTag::Activation));
          auto pattern = static_cast<unsigned char>(rng());
          fill(ptr, bytes, pattern);
          live[ptr] = LiveBlock{bytes, MemoryTag::Activation, pattern};
          if (pool.stats().ooms > 0) ++successes_after_pressure;
        } catch (const OutOfMemory& oom) {
          ++ooms;
          ASSERT_FALSE(could_hold)
              << "OutOfMemory for " << bytes << " B (rounded " << rounded
              << ") although a free block or the headroom could hold it: " << oom.what();
          EXPECT_LT(oom.report().largest_free_block, rounded);
          EXPECT_LT(oom.report().headroom, rounded);
        }
      } else {
        auto it = live.begin();
        std::advance(it, rng() % live.size());
        ASSERT_TRUE(still_filled(it->first, it->second.requested, it->second.pattern));
        pool.deallocate(it->first);
        live.erase(it);
      }
      if (step % 13 == 0) {
        check_invariants(pool, live);
        if (HasFatalFailure()) return;
      }
    }
    EXPECT_GT(ooms, 0) << "the cap should bite in this sequence";
    EXPECT_GT(successes_after_pressure, 0);
    EXPECT_LE(pool.stats().peak_reserved_bytes, options.capacity);
    for (auto& [ptr, block] : live) pool.deallocate(ptr);
    live.clear();
    check_invariants(pool, live);
    for (const SegmentSnapshot& segment : pool.snapshot()) EXPECT_EQ(segment.blocks.size(), 1u);
  }
}

TEST(PoolAllocator, PeakAndResetPeak) {
  PoolAllocator pool(make_host_memory_resource());
  void* a = pool.allocate(100 * kKiB, MemoryTag::Activation);
  void* b = pool.allocate(200 * kKiB, MemoryTag::Activation);
  pool.deallocate(b);
  EXPECT_EQ(pool.peak_allocated(), 300 * kKiB);
  EXPECT_EQ(pool.stats().cumulative_allocated_bytes, 300 * kKiB);
  pool.reset_peak();
  EXPECT_EQ(pool.peak_allocated(), 100 * kKiB);
  pool.deallocate(a);
  EXPECT_EQ(pool.stats().allocations, 2u);
  EXPECT_EQ(pool.stats().cache_hits, 1u);  // only the first reserved a segment
}

TEST(PoolAllocator, PeakReservedCountsSegmentsUntilReset) {
  PoolAllocator pool(make_host_memory_resource());
  void* small = pool.allocate(100 * kKiB, MemoryTag::Activation);  // one 2 MiB segment
  void* large = pool.allocate(12 * kMiB, MemoryTag::Activation);   // its own 12 MiB segment
  pool.deallocate(large);
  pool.empty_cache();
  EXPECT_EQ(pool.report().reserved, 2 * kMiB);
  EXPECT_EQ(pool.peak_reserved(), 14 * kMiB);
  pool.reset_peak();
  EXPECT_EQ(pool.peak_reserved(), 2 * kMiB);
  pool.deallocate(small);
}

TEST(PoolAllocator, ConcurrentThreadsKeepTheBooks) {
  PoolAllocator pool(make_host_memory_resource());
  std::atomic<std::size_t> allocations{0};
  auto worker = [&pool, &allocations](std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<void*> mine;
    for (int i = 0; i < 4000; ++i) {
      if (mine.empty() || rng() % 2 == 0) {
        mine.push_back(pool.allocate(1 + rng() % (256 * kKiB), MemoryTag::Activation));
        allocations += 1;
      } else {
        std::size_t index = rng() % mine.size();
        pool.deallocate(mine[index]);
        mine[index] = mine.back();
        mine.pop_back();
      }
    }
    for (void* p : mine) pool.deallocate(p);
  };
  std::thread first(worker, 1), second(worker, 2);
  first.join();
  second.join();
  check_invariants(pool, {});
  EXPECT_EQ(pool.stats().allocations, allocations.load());
  EXPECT_EQ(pool.report().allocated, 0u);
}

TEST(PoolAllocator, DefaultAllocatorIsThePoolUnlessNoCache) {
  unsetenv("MB_ALLOC_NO_CACHE");
  std::shared_ptr<Allocator> pooled = make_default_allocator(Device::cpu(), 64 * kMiB);
  auto* pool = dynamic_cast<PoolAllocator*>(pooled.get());
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(pool->capacity(), 64 * kMiB);
  setenv("MB_ALLOC_NO_CACHE", "1", 1);
  std::shared_ptr<Allocator> plain = make_default_allocator(Device::cpu());
  unsetenv("MB_ALLOC_NO_CACHE");
  EXPECT_NE(dynamic_cast<PassThroughAllocator*>(plain.get()), nullptr);
}

TEST(PoolAllocator, DefaultCapacityLeavesAMargin) {
  FakeDeviceResource device(10ull << 30, MemoryKind::Cuda);
  EXPECT_EQ(default_pool_capacity(device), (10ull << 30) - (10ull << 30) / 20);
  FakeDeviceResource small(1ull << 30, MemoryKind::Cuda);
  EXPECT_EQ(default_pool_capacity(small), (1ull << 30) - 256 * kMiB);
  // Host memory follows the same rule: the CPU arena is capped by default.
  FakeDeviceResource host_like(4ull << 30, MemoryKind::Host);
  EXPECT_EQ(default_pool_capacity(host_like), (4ull << 30) - 256 * kMiB);
  // A resource that cannot say what is free (SIZE_MAX) gets no cap, not a made-up one.
  FakeDeviceResource unknown(SIZE_MAX, MemoryKind::Host);
  EXPECT_EQ(default_pool_capacity(unknown), 0u);
}

// The real host resource reports what the kernel says is available: at most the machine's
// RAM (sysinfo, an independent source) and more than nothing, and a default pool over it
// is capped below that instead of growing without bound.
TEST(HostMemoryResource, FreeBytesAreBoundedByPhysicalMemory) {
  struct sysinfo info {};
  ASSERT_EQ(sysinfo(&info), 0);
  const std::size_t ram = static_cast<std::size_t>(info.totalram) * info.mem_unit;
  auto host = make_host_memory_resource();
  const std::size_t free_bytes = host->device_free_bytes();
  EXPECT_GT(free_bytes, 0u);
  EXPECT_LE(free_bytes, ram);
  const std::size_t capacity = default_pool_capacity(*host);
  EXPECT_GT(capacity, 0u);
  EXPECT_LT(capacity, ram);
  PoolAllocator pool(make_host_memory_resource());
  EXPECT_LT(pool.capacity(), ram);
  EXPECT_THROW(pool.allocate(ram, MemoryTag::Activation), OutOfMemory);
}

TEST(HostMemory, ParsesMeminfoAndCgroupLimits) {
  const std::string meminfo =
      "MemTotal:       24576000 kB\nMemFree:         1000000 kB\n"
      "MemAvailable:   20000000 kB\nBuffers:           12345 kB\n";
  EXPECT_EQ(parse_meminfo_available(meminfo), 20000000ull * 1024);
  EXPECT_EQ(parse_meminfo_available("MemTotal: 1 kB\nMemFree: 1 kB\n"), SIZE_MAX);
  EXPECT_EQ(parse_meminfo_available("XMemAvailable: 5 kB\n"), SIZE_MAX);
  EXPECT_EQ(parse_cgroup_headroom("1073741824\n", "268435456\n"), 768ull << 20);
  EXPECT_EQ(parse_cgroup_headroom("max\n", "268435456\n"), SIZE_MAX);
  EXPECT_EQ(parse_cgroup_headroom("9223372036854771712\n", "1\n"), SIZE_MAX);  // v1: none
  EXPECT_EQ(parse_cgroup_headroom("1000\n", "2000\n"), 0u);  // over the limit already
}

TEST(PinnedHostMemoryResource, FallsBackToHostMemoryWithoutADevice) {
  auto resource = make_pinned_host_memory_resource();
  EXPECT_EQ(resource->kind(), MemoryKind::Host);
  void* ptr = resource->reserve(1000);
  ASSERT_NE(ptr, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(ptr) % MemoryResource::kSegmentAlignment, 0u);
  std::memset(ptr, 1, 1000);
  resource->release(ptr, 1000);
  PoolAllocator pool(make_pinned_host_memory_resource());
  pool.deallocate(pool.allocate(4096, MemoryTag::Data));
}

// Freeing a pointer the allocator never handed out is a caller's bug: debug builds stop at
// it, release builds count it and leave the books untouched.
TEST(PoolAllocator, UnknownFreesAreCountedNotApplied) {
  PoolAllocator pool(make_host_memory_resource());
  PassThroughAllocator passthrough(make_host_memory_resource());
  void* block = pool.allocate(4096, MemoryTag::Other);
  const FreeArenaReport before = pool.report();
  int not_ours = 0;
#ifdef NDEBUG
  pool.deallocate(&not_ours);
  passthrough.deallocate(&not_ours);
  EXPECT_EQ(pool.unknown_frees(), 1u);
  EXPECT_EQ(pool.stats().unknown_frees, 1u);
  EXPECT_EQ(passthrough.unknown_frees(), 1u);
  EXPECT_EQ(pool.report().allocated, before.allocated);
  EXPECT_EQ(pool.report().free_in_arena, before.free_in_arena);
#else
  EXPECT_DEATH(pool.deallocate(&not_ours), "not allocated by this pool");
  EXPECT_DEATH(passthrough.deallocate(&not_ours), "not allocated here");
#endif
  pool.deallocate(block);
  EXPECT_EQ(pool.unknown_frees(), pool.stats().unknown_frees);
  EXPECT_EQ(pool.report().allocated, 0u);
}

}  // namespace
}  // namespace mb
