// PoolAllocator: the caching arena every tensor allocates from by default.
//
// Segments are reserved from a MemoryResource and carved into blocks: best fit over the free
// blocks, split on allocation, coalesced with free neighbours on free. Requests are rounded
// (512 B multiples up to 1 MiB, coarser classes above) so that micro-batches of varying size
// reuse the same blocks. Small requests (<= 1 MiB) live in 2 MiB segments, large ones in
// 20 MiB segments, and requests above 10 MiB get a segment of their own (rounded to 2 MiB).
// A request the own pool cannot serve takes a free block of the other pool (best fit) before
// the arena grows: free bytes in the arena serve any request that fits in one of its blocks.
// A cap bounds the reserved bytes (to emulate a smaller device); when it cannot take a full
// segment, a tighter one is reserved (for small requests: what fits, in 512 B steps), then
// cached whole-free segments are released, and only then is OutOfMemory thrown. So an OOM
// means: no free block of the stream and no headroom (after releases) holds the rounded
// request. The planner reads report().
//
// Stream-aware reuse: a block is reused only on the stream it was allocated on; if other
// streams were recorded with record_stream(), its free waits for events on those streams.
//
// Every alloc / free / reserve / release / mark / OOM is kept in a bounded ring buffer of
// events that can be written as a Chrome trace (load in Perfetto) or as CSV.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "runtime/allocator.h"

namespace mb {

struct PoolOptions {
  // Cap on reserved bytes. 0: the free memory of the resource at construction minus a
  // margin (default_pool_capacity): cudaMemGetInfo on CUDA, MemAvailable and the cgroup's
  // limit on the host (host_memory.h).
  std::size_t capacity = 0;
  // Events kept in the trace ring buffer (the oldest are overwritten). 0 turns tracing off.
  std::size_t trace_events = std::size_t{1} << 16;
};

// Free memory of the resource minus max(256 MiB, 5%), or half of it when that is less than
// the margin; 0 (no cap) when the resource cannot say what is free.
std::size_t default_pool_capacity(const MemoryResource& resource);

struct PoolStats {
  std::size_t allocated_bytes = 0;             // live blocks, rounded sizes
  std::size_t peak_allocated_bytes = 0;        // since construction or reset_peak()
  std::size_t cumulative_allocated_bytes = 0;  // sum over every allocation ever made
  std::size_t reserved_bytes = 0;              // segments held from the resource
  std::size_t peak_reserved_bytes = 0;
  std::size_t cumulative_reserved_bytes = 0;
  std::size_t active_blocks = 0;
  std::size_t segments = 0;
  std::size_t allocations = 0;    // successful allocate() calls
  std::size_t cache_hits = 0;     // allocations served without reserving a segment
  std::size_t lent_blocks = 0;    // of those, served by a free block of the other pool
  std::size_t releases = 0;       // segments given back to the resource
  std::size_t ooms = 0;           // OutOfMemory thrown
  std::size_t unknown_frees = 0;  // deallocate() of a pointer the pool never handed out
};

enum class PoolEventKind : std::uint8_t { Alloc, Free, Reserve, Release, Mark, Oom };
const char* pool_event_kind_name(PoolEventKind kind);

struct PoolEvent {
  PoolEventKind kind = PoolEventKind::Mark;
  MemoryTag tag = MemoryTag::Other;
  int micro_batch = -1;
  int segment_id = -1;                 // -1 for marks and OOMs
  std::int64_t time_ns = 0;            // since the allocator was created
  std::size_t bytes = 0;               // block / segment size; the request for an OOM
  std::size_t offset = 0;              // of the block within its segment
  std::size_t allocated = 0;           // after the event
  std::size_t reserved = 0;            // after the event
  std::size_t largest_free_block = 0;  // after the event
  std::size_t tag_allocated = 0;       // bytes allocated under `tag` after the event
  std::string name;                    // marks only
};

struct BlockSnapshot {
  std::size_t offset = 0;
  std::size_t size = 0;
  bool allocated = false;  // live, or freed but waiting for another stream's event
  MemoryTag tag = MemoryTag::Other;
};

struct SegmentSnapshot {
  int id = 0;
  std::uintptr_t base = 0;
  std::size_t size = 0;
  bool small_pool = false;
  StreamHandle stream = nullptr;
  std::vector<BlockSnapshot> blocks;  // in address order, covering the segment exactly
};

class PoolAllocator final : public Allocator {
 public:
  explicit PoolAllocator(std::unique_ptr<MemoryResource> resource, PoolOptions options = {});
  ~PoolAllocator() override;
  PoolAllocator(const PoolAllocator&) = delete;
  PoolAllocator& operator=(const PoolAllocator&) = delete;

  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream = nullptr) override;
  void deallocate(void* ptr) noexcept override;
  void record_stream(void* ptr, StreamHandle stream) override;

  FreeArenaReport report() const override;
  MemoryUsage usage() const override;
  MemoryKind kind() const override { return resource_->kind(); }
  int device_index() const override { return resource_->device_index(); }
  std::size_t peak_allocated() const override;
  std::size_t peak_reserved() const override;
  void reset_peak() override;
  std::size_t unknown_frees() const override;
  void empty_cache() override;
  void set_micro_batch(int index) override;
  void mark(const std::string& name) override;

  PoolStats stats() const;
  std::size_t capacity() const { return capacity_; }
  std::vector<SegmentSnapshot> snapshot() const;
  // The events still in the ring buffer, oldest first.
  std::vector<PoolEvent> events() const;
  // Chrome-trace JSON (counters and instants) and CSV (one row per event). Written to a
  // temporary file and renamed, so a reader never sees half a file; throws mb::IoError.
  void write_chrome_trace(const std::string& path) const;
  void write_events_csv(const std::string& path) const;

  // The size a request of `bytes` occupies (before any unsplit remainder is added).
  static std::size_t round_size(std::size_t bytes);

  static constexpr std::size_t kMinBlock = 512;
  static constexpr std::size_t kSmallRequest = std::size_t{1} << 20;   // small pool: <= 1 MiB
  static constexpr std::size_t kSmallSegment = std::size_t{2} << 20;   // 2 MiB
  static constexpr std::size_t kLargeSegment = std::size_t{20} << 20;  // 20 MiB
  static constexpr std::size_t kOwnSegment = std::size_t{10} << 20;    // above: own segment
  static constexpr std::size_t kSegmentRounding = std::size_t{2} << 20;

 private:
  struct Segment;
  struct StreamPools;
  struct Block {
    char* ptr = nullptr;
    std::size_t size = 0;
    Segment* segment = nullptr;
    Block* prev = nullptr;  // address-order neighbours within the segment
    Block* next = nullptr;
    bool allocated = false;
    MemoryTag tag = MemoryTag::Other;
    std::vector<StreamHandle> other_streams;  // recorded with record_stream()
    int pending_events = 0;
  };
  struct Segment {
    int id = 0;
    char* base = nullptr;
    std::size_t size = 0;
    bool small_pool = false;
    StreamHandle stream = nullptr;
    StreamPools* pools = nullptr;  // the free sets of `stream`
    Block* first = nullptr;
  };
  // Free blocks ordered by (size, address): best fit is a lower_bound.
  struct FreeOrder {
    bool operator()(const Block* a, const Block* b) const {
      return a->size != b->size ? a->size < b->size : std::less<const char*>()(a->ptr, b->ptr);
    }
  };
  using FreeSet = std::set<Block*, FreeOrder>;
  // Blocks are reused only on the stream they were allocated on: one pair of pools per stream.
  struct StreamPools {
    StreamHandle stream = nullptr;
    FreeSet small;
    FreeSet large;
  };
  // Open addressing (linear probing, backward-shift deletion) from a block's pointer to the
  // block: the allocation fast path must not allocate a hash node.
  class LiveMap {
   public:
    void insert(void* key, Block* block);
    Block* find(void* key) const;
    Block* erase(void* key);  // nullptr if absent

   private:
    std::size_t slot_of(void* key) const;
    void grow();
    std::vector<std::pair<void*, Block*>> slots_ = std::vector<std::pair<void*, Block*>>(64);
    std::size_t count_ = 0;
  };
  struct PendingEvent {
    void* event;
    Block* block;
  };

  StreamPools& pools_for(StreamHandle stream);
  FreeSet& free_set(const Block* block) const {
    return block->segment->small_pool ? block->segment->pools->small : block->segment->pools->large;
  }
  Block* new_block();
  void recycle(Block* block);
  Block* find_free(bool small_pool, StreamHandle stream, std::size_t size);
  Block* reserve_segment(bool small_pool, StreamHandle stream, std::size_t rounded);
  bool try_reserve(std::size_t size, bool small_pool, StreamHandle stream, Block** out);
  std::size_t release_cached_segments();
  void release_segment(Segment* segment);
  void free_block(Block* block);
  void process_events();
  FreeArenaReport report_locked() const;
  std::size_t largest_free_locked() const;
  void record(PoolEventKind kind, std::size_t bytes, const Segment* segment, std::size_t offset,
              MemoryTag tag, std::string name = {});
  bool ring_disabled() const { return ring_capacity_ == 0; }
  std::vector<PoolEvent> events_locked() const;

  std::unique_ptr<MemoryResource> resource_;
  std::size_t capacity_;
  mutable std::mutex mutex_;

  std::map<int, std::unique_ptr<Segment>> segments_;  // by id
  LiveMap live_;                                      // allocated blocks by pointer
  std::vector<std::unique_ptr<StreamPools>> stream_pools_;
  std::vector<Block*> spare_blocks_;  // recycled Block records
  std::vector<PendingEvent> pending_;
  int next_segment_id_ = 0;

  PoolStats stats_;
  std::array<std::size_t, kNumMemoryTags> by_tag_{};

  // Trace ring buffer.
  std::vector<PoolEvent> ring_;  // grows to ring_capacity_, then wraps
  std::size_t ring_capacity_ = 0;
  std::size_t ring_next_ = 0;  // where the next event goes once the ring is full
  // Per-tag allocated bytes just before the oldest event held, so exported counters are
  // exact even after the ring has wrapped.
  std::array<std::size_t, kNumMemoryTags> ring_base_by_tag_{};
  // Note: events are stamped with a cycle counter (rdtsc on x86-64, a few ns; the kvm clock
  // behind steady_clock can cost ~100 ns) and converted to ns when read, calibrated against
  // steady_clock over the allocator's lifetime. Elsewhere ticks are steady_clock ns.
  std::uint64_t start_ticks_ = 0;
  std::int64_t start_steady_ns_ = 0;
  int micro_batch_ = -1;
};

}  // namespace mb
