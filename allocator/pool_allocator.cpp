// PoolAllocator: policy (rounding, best fit, split, coalesce, cap), bookkeeping (stats,
// per-tag bytes) and the event ring. Trace export lives in pool_trace.cpp.
#include "allocator/pool_allocator.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <limits>
#include <utility>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "runtime/error.h"

namespace mb {
namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

std::size_t round_up(std::size_t value, std::size_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

std::size_t round_down(std::size_t value, std::size_t multiple) {
  return value / multiple * multiple;
}

// Note: a large request placed in a large segment keeps a remainder of <= 1 MiB attached
// (handed out whole): cutting small slivers off large segments is what fragments them (the
// same rule as PyTorch's caching allocator). Everything else is split at 512 B granularity:
// small-pool blocks, and any block lent across pools, where a sliver kept attached would be
// waste in exactly the situation (the arena cannot grow) that made the pool lend it.
bool should_split(bool fine_split, std::size_t block_size, std::size_t request) {
  std::size_t remainder = block_size - request;
  return fine_split ? remainder >= PoolAllocator::kMinBlock : remainder > kMiB;
}

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::uint64_t clock_ticks() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(steady_ns());
#endif
}

}  // namespace

const char* pool_event_kind_name(PoolEventKind kind) {
  switch (kind) {
    case PoolEventKind::Alloc: return "alloc";
    case PoolEventKind::Free: return "free";
    case PoolEventKind::Reserve: return "reserve";
    case PoolEventKind::Release: return "release";
    case PoolEventKind::Mark: return "mark";
    case PoolEventKind::Oom: return "oom";
  }
  return "unknown";
}

std::size_t default_pool_capacity(const MemoryResource& resource) {
  std::size_t free_bytes = resource.device_free_bytes();
  // A resource that cannot say how much is free gets no cap rather than a made-up one.
  if (free_bytes == std::numeric_limits<std::size_t>::max()) return 0;
  std::size_t margin = std::max<std::size_t>(256 * kMiB, free_bytes / 20);
  // A device with less free memory than the margin still gets half of what is free rather
  // than a cap of zero, which would fail every allocation.
  return free_bytes > margin ? free_bytes - margin : free_bytes / 2;
}

std::size_t PoolAllocator::round_size(std::size_t bytes) {
  if (bytes <= kSmallRequest) return std::max(kMinBlock, round_up(bytes, kMinBlock));
  // Large: eight size classes per power of two, at most 2 MiB apart, so micro-batches of
  // slightly different sizes land on the same class while the waste stays <= 12.5% and
  // <= 2 MiB.
  int log2 = 0;
  while ((std::size_t{2} << log2) <= bytes) ++log2;
  std::size_t step = std::min(kSegmentRounding, std::size_t{1} << (log2 - 3));
  return round_up(bytes, std::max(step, kMinBlock));
}

PoolAllocator::PoolAllocator(std::unique_ptr<MemoryResource> resource, PoolOptions options)
    : resource_(std::move(resource)), capacity_(0) {
  MB_CHECK(resource_ != nullptr, "PoolAllocator needs a memory resource");
  std::size_t capacity =
      options.capacity != 0 ? options.capacity : default_pool_capacity(*resource_);
  capacity_ = capacity != 0 ? capacity : std::numeric_limits<std::size_t>::max();
  ring_.reserve(std::min<std::size_t>(options.trace_events, 1024));
  ring_capacity_ = options.trace_events;
  start_ticks_ = clock_ticks();
  start_steady_ns_ = steady_ns();
}

PoolAllocator::~PoolAllocator() {
  for (PendingEvent& pending : pending_) resource_->destroy_event(pending.event);
  for (auto& [id, segment] : segments_) {
    Block* block = segment->first;
    while (block != nullptr) {
      Block* next = block->next;
      delete block;
      block = next;
    }
    resource_->release(segment->base, segment->size);
  }
  for (Block* block : spare_blocks_) delete block;
}

// --- LiveMap -----------------------------------------------------------------------------

std::size_t PoolAllocator::LiveMap::slot_of(void* key) const {
  // Blocks are 512 B aligned: drop the zero bits, then multiply by 2^64 / golden ratio.
  auto bits = reinterpret_cast<std::uintptr_t>(key) >> 9;
  return static_cast<std::size_t>((bits * 0x9E3779B97F4A7C15ull) >> 20) & (slots_.size() - 1);
}

void PoolAllocator::LiveMap::grow() {
  std::vector<std::pair<void*, Block*>> old(slots_.size() * 2);
  old.swap(slots_);
  count_ = 0;
  for (auto& [key, block] : old) {
    if (key != nullptr) insert(key, block);
  }
}

void PoolAllocator::LiveMap::insert(void* key, Block* block) {
  if (2 * (count_ + 1) > slots_.size()) grow();
  std::size_t mask = slots_.size() - 1;
  std::size_t slot = slot_of(key);
  while (slots_[slot].first != nullptr) slot = (slot + 1) & mask;
  slots_[slot] = {key, block};
  ++count_;
}

PoolAllocator::Block* PoolAllocator::LiveMap::find(void* key) const {
  std::size_t mask = slots_.size() - 1;
  for (std::size_t slot = slot_of(key); slots_[slot].first != nullptr; slot = (slot + 1) & mask) {
    if (slots_[slot].first == key) return slots_[slot].second;
  }
  return nullptr;
}

PoolAllocator::Block* PoolAllocator::LiveMap::erase(void* key) {
  std::size_t mask = slots_.size() - 1;
  std::size_t slot = slot_of(key);
  while (slots_[slot].first != key) {
    if (slots_[slot].first == nullptr) return nullptr;
    slot = (slot + 1) & mask;
  }
  Block* block = slots_[slot].second;
  // Backward-shift deletion: move later entries of the probe run into the hole so lookups
  // never stop early at it.
  std::size_t hole = slot;
  for (std::size_t next = (hole + 1) & mask; slots_[next].first != nullptr;
       next = (next + 1) & mask) {
    std::size_t home = slot_of(slots_[next].first);
    // Movable iff its home is not in the cyclic range (hole, next].
    bool home_after_hole =
        hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
    if (!home_after_hole) {
      slots_[hole] = slots_[next];
      hole = next;
    }
  }
  slots_[hole] = {nullptr, nullptr};
  --count_;
  return block;
}

// --- Pools ---------------------------------------------------------------------------------

PoolAllocator::StreamPools& PoolAllocator::pools_for(StreamHandle stream) {
  for (auto& pools : stream_pools_) {
    if (pools->stream == stream) return *pools;
  }
  stream_pools_.push_back(std::make_unique<StreamPools>());
  stream_pools_.back()->stream = stream;
  return *stream_pools_.back();
}

PoolAllocator::Block* PoolAllocator::new_block() {
  if (spare_blocks_.empty()) return new Block();
  Block* block = spare_blocks_.back();
  spare_blocks_.pop_back();
  return block;
}

void PoolAllocator::recycle(Block* block) {
  *block = Block();
  spare_blocks_.push_back(block);
}

std::size_t PoolAllocator::largest_free_locked() const {
  std::size_t largest = 0;
  for (const auto& pools : stream_pools_) {
    if (!pools->small.empty()) largest = std::max(largest, (*pools->small.rbegin())->size);
    if (!pools->large.empty()) largest = std::max(largest, (*pools->large.rbegin())->size);
  }
  return largest;
}

PoolAllocator::Block* PoolAllocator::find_free(bool small_pool, StreamHandle stream,
                                               std::size_t size) {
  StreamPools& pools = pools_for(stream);
  FreeSet& pool = small_pool ? pools.small : pools.large;
  Block probe;  // ordered by (size, address): the lowest address of that size
  probe.size = size;
  probe.ptr = nullptr;
  auto it = pool.lower_bound(&probe);
  return it == pool.end() ? nullptr : *it;
}

bool PoolAllocator::try_reserve(std::size_t size, bool small_pool, StreamHandle stream,
                                Block** out) {
  if (size > capacity_ - stats_.reserved_bytes) return false;
  void* ptr = resource_->reserve(size);
  if (ptr == nullptr) return false;
  auto segment = std::make_unique<Segment>();
  segment->id = next_segment_id_++;
  segment->base = static_cast<char*>(ptr);
  segment->size = size;
  segment->small_pool = small_pool;
  segment->stream = stream;
  segment->pools = &pools_for(stream);
  Block* block = new_block();
  block->ptr = segment->base;
  block->size = size;
  block->segment = segment.get();
  segment->first = block;

  stats_.reserved_bytes += size;
  stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
  stats_.cumulative_reserved_bytes += size;
  stats_.segments += 1;
  Segment* raw = segment.get();
  segments_.emplace(raw->id, std::move(segment));
  free_set(block).insert(block);
  record(PoolEventKind::Reserve, size, raw, 0, MemoryTag::Other);
  *out = block;
  return true;
}

PoolAllocator::Block* PoolAllocator::reserve_segment(bool small_pool, StreamHandle stream,
                                                     std::size_t rounded) {
  // Preferred size first, then tighter ones, so that a cap close to the working set still
  // admits the request.
  std::vector<std::size_t> sizes;
  if (small_pool) {
    // Under a cap that cannot take a full small segment, the largest one that fits (rounded
    // down to 512 B) still gives later small requests room to share.
    std::size_t headroom = round_down(capacity_ - stats_.reserved_bytes, kMinBlock);
    sizes = {kSmallSegment, std::max(rounded, std::min(kSmallSegment, headroom)), rounded};
  } else if (rounded <= kOwnSegment) {
    sizes = {kLargeSegment, round_up(rounded, kSegmentRounding), rounded};
  } else {
    sizes = {round_up(rounded, kSegmentRounding), rounded};
  }
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  Block* block = nullptr;
  for (std::size_t size : sizes) {
    if (try_reserve(size, small_pool, stream, &block)) return block;
  }
  // Over the cap or the device is full: give back whole cached segments and retry.
  if (release_cached_segments() > 0) {
    for (std::size_t size : sizes) {
      if (try_reserve(size, small_pool, stream, &block)) return block;
    }
  }
  return nullptr;
}

void* PoolAllocator::allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!pending_.empty()) process_events();
  // Sizes beyond 2^62 bytes would overflow the rounding; no device has them anyway.
  bool absurd = bytes > (std::size_t{1} << 62);
  std::size_t rounded = absurd ? 0 : round_size(bytes);
  bool small_pool = rounded <= kSmallRequest;
  Block* block = absurd ? nullptr : find_free(small_pool, stream, rounded);
  // Note: before the arena grows, a request may take a free block of the other pool (best
  // fit). Free memory that cannot serve a request is memory the cap or the device is
  // missing: mixed micro-batch sizes move ~1 MiB tensors across the small/large threshold,
  // and without lending each pool would keep its own cache of the same bytes. A pool's own
  // blocks are still preferred, so a steady state keeps the two apart.
  if (block == nullptr && !absurd) {
    block = find_free(!small_pool, stream, rounded);
    if (block != nullptr) stats_.lent_blocks += 1;
  }
  if (block != nullptr) {
    stats_.cache_hits += 1;
  } else {
    if (!absurd) block = reserve_segment(small_pool, stream, rounded);
    if (block == nullptr) {
      stats_.ooms += 1;
      record(PoolEventKind::Oom, bytes, nullptr, 0, tag);
      throw OutOfMemory(bytes, report_locked(), "PoolAllocator(" + resource_->name() + ")",
                        __FILE__, __LINE__);
    }
  }
  FreeSet& pool = free_set(block);
  // The set node is reused for the remainder: no allocation on the cached path.
  FreeSet::node_type node = pool.extract(block);
  bool fine_split = small_pool || block->segment->small_pool;
  if (should_split(fine_split, block->size, rounded)) {
    Block* rest = new_block();
    rest->ptr = block->ptr + rounded;
    rest->size = block->size - rounded;
    rest->segment = block->segment;
    rest->prev = block;
    rest->next = block->next;
    if (block->next != nullptr) block->next->prev = rest;
    block->next = rest;
    block->size = rounded;
    node.value() = rest;
    pool.insert(std::move(node));
  }
  block->allocated = true;
  block->tag = tag;
  live_.insert(block->ptr, block);

  stats_.allocated_bytes += block->size;
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  stats_.cumulative_allocated_bytes += block->size;
  stats_.active_blocks += 1;
  stats_.allocations += 1;
  by_tag_[static_cast<int>(tag)] += block->size;
  record(PoolEventKind::Alloc, block->size, block->segment,
         static_cast<std::size_t>(block->ptr - block->segment->base), tag);
  return block->ptr;
}

void PoolAllocator::record_stream(void* ptr, StreamHandle stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  Block* block = live_.find(ptr);
  MB_CHECK(block != nullptr, "record_stream: ", ptr,
           " is not a live block of this allocator. Fix: pass a pointer returned by allocate() "
           "and not yet freed");
  if (stream == block->segment->stream) return;
  auto& streams = block->other_streams;
  if (std::find(streams.begin(), streams.end(), stream) == streams.end()) {
    streams.push_back(stream);
  }
}

void PoolAllocator::deallocate(void* ptr) noexcept {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  Block* block = live_.erase(ptr);
  if (block == nullptr) {
    // Not ours: a bug in the caller. Ignoring it beats corrupting the books in release.
    assert(!"PoolAllocator::deallocate: pointer not allocated by this pool (or freed twice)");
    ++stats_.unknown_frees;
    return;
  }
  // Note: a block another stream may still read stays allocated (and counted) until that
  // stream's event completes; then process_events() frees it.
  for (StreamHandle stream : block->other_streams) {
    void* event = resource_->record_event(stream);
    if (event == nullptr) continue;  // no event: nothing to wait for (host)
    pending_.push_back(PendingEvent{event, block});
    block->pending_events += 1;
  }
  block->other_streams.clear();
  if (block->pending_events == 0) free_block(block);
}

void PoolAllocator::process_events() {
  auto keep = pending_.begin();
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (resource_->event_completed(it->event)) {
      resource_->destroy_event(it->event);
      if (--it->block->pending_events == 0) free_block(it->block);
    } else {
      *keep++ = *it;
    }
  }
  pending_.erase(keep, pending_.end());
}

void PoolAllocator::free_block(Block* block) {
  MemoryTag tag = block->tag;
  std::size_t size = block->size;
  stats_.allocated_bytes -= size;
  stats_.active_blocks -= 1;
  by_tag_[static_cast<int>(tag)] -= size;
  block->allocated = false;
  block->tag = MemoryTag::Other;
  std::size_t offset = static_cast<std::size_t>(block->ptr - block->segment->base);
  Segment* segment = block->segment;

  // Coalesce with free neighbours in the same segment, reusing a neighbour's set node.
  FreeSet& pool = free_set(block);
  FreeSet::node_type node;
  if (block->prev != nullptr && !block->prev->allocated) {
    Block* prev = block->prev;
    node = pool.extract(prev);
    prev->size += block->size;
    prev->next = block->next;
    if (block->next != nullptr) block->next->prev = prev;
    recycle(block);
    block = prev;
  }
  if (block->next != nullptr && !block->next->allocated) {
    Block* next = block->next;
    FreeSet::node_type next_node = pool.extract(next);
    block->size += next->size;
    block->next = next->next;
    if (next->next != nullptr) next->next->prev = block;
    recycle(next);
    if (node.empty()) node = std::move(next_node);
  }
  if (node.empty()) {
    pool.insert(block);
  } else {
    node.value() = block;
    pool.insert(std::move(node));
  }

  // The event carries the freed block's own offset and size, not the merged block's.
  record(PoolEventKind::Free, size, segment, offset, tag);
}

std::size_t PoolAllocator::release_cached_segments() {
  std::vector<Segment*> whole_free;
  for (auto& [id, segment] : segments_) {
    Block* first = segment->first;
    if (first->next == nullptr && !first->allocated) {
      whole_free.push_back(segment.get());
    }
  }
  std::size_t released = 0;
  for (Segment* segment : whole_free) {
    released += segment->size;
    release_segment(segment);
  }
  return released;
}

void PoolAllocator::release_segment(Segment* segment) {
  Block* block = segment->first;
  free_set(block).erase(block);
  recycle(block);
  std::size_t size = segment->size;
  resource_->release(segment->base, size);
  stats_.reserved_bytes -= size;
  stats_.segments -= 1;
  stats_.releases += 1;
  int id = segment->id;
  record(PoolEventKind::Release, size, segment, 0, MemoryTag::Other);
  segments_.erase(id);
}

void PoolAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!pending_.empty()) process_events();
  release_cached_segments();
}

FreeArenaReport PoolAllocator::report_locked() const {
  FreeArenaReport report;
  report.capacity = capacity_;
  report.reserved = stats_.reserved_bytes;
  report.allocated = stats_.allocated_bytes;
  // Blocks waiting for another stream's event stay allocated, so everything reserved and
  // not allocated sits in free blocks.
  report.free_in_arena = stats_.reserved_bytes - stats_.allocated_bytes;
  report.headroom = std::min(capacity_ - stats_.reserved_bytes, resource_->device_free_bytes());
  report.largest_free_block = largest_free_locked();
  report.fragmentation = report.free_in_arena == 0
                             ? 0.0
                             : 1.0 - static_cast<double>(report.largest_free_block) /
                                         static_cast<double>(report.free_in_arena);
  report.allocated_by_tag = by_tag_;
  return report;
}

FreeArenaReport PoolAllocator::report() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return report_locked();
}

MemoryUsage PoolAllocator::usage() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return MemoryUsage{capacity_, stats_.reserved_bytes, stats_.allocated_bytes};
}

PoolStats PoolAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::size_t PoolAllocator::unknown_frees() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_.unknown_frees;
}

std::size_t PoolAllocator::peak_allocated() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_.peak_allocated_bytes;
}

std::size_t PoolAllocator::peak_reserved() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_.peak_reserved_bytes;
}

void PoolAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

void PoolAllocator::set_micro_batch(int index) {
  std::lock_guard<std::mutex> lock(mutex_);
  micro_batch_ = index;
}

void PoolAllocator::mark(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  record(PoolEventKind::Mark, 0, nullptr, 0, MemoryTag::Other, name);
}

std::vector<SegmentSnapshot> PoolAllocator::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<SegmentSnapshot> result;
  result.reserve(segments_.size());
  for (const auto& [id, segment] : segments_) {
    SegmentSnapshot snap;
    snap.id = id;
    snap.base = reinterpret_cast<std::uintptr_t>(segment->base);
    snap.size = segment->size;
    snap.small_pool = segment->small_pool;
    snap.stream = segment->stream;
    for (const Block* block = segment->first; block != nullptr; block = block->next) {
      BlockSnapshot b;
      b.offset = static_cast<std::size_t>(block->ptr - segment->base);
      b.size = block->size;
      b.allocated = block->allocated;
      b.tag = block->tag;
      snap.blocks.push_back(b);
    }
    result.push_back(std::move(snap));
  }
  return result;
}

void PoolAllocator::record(PoolEventKind kind, std::size_t bytes, const Segment* segment,
                           std::size_t offset, MemoryTag tag, std::string name) {
  if (ring_disabled()) return;
  PoolEvent* event = nullptr;
  if (ring_.size() < ring_capacity_) {
    ring_.emplace_back();
    event = &ring_.back();
  } else {
    // Overwriting the oldest event: fold it into the per-tag baseline first.
    PoolEvent& oldest = ring_[ring_next_];
    if (oldest.kind == PoolEventKind::Alloc || oldest.kind == PoolEventKind::Free) {
      ring_base_by_tag_[static_cast<int>(oldest.tag)] = oldest.tag_allocated;
    }
    event = &oldest;
  }
  ring_next_ = (ring_next_ + 1) % ring_capacity_;
  event->kind = kind;
  event->tag = tag;
  event->micro_batch = micro_batch_;
  event->segment_id = segment != nullptr ? segment->id : -1;
  event->time_ns = static_cast<std::int64_t>(clock_ticks() - start_ticks_);  // ticks for now
  event->bytes = bytes;
  event->offset = offset;
  event->allocated = stats_.allocated_bytes;
  event->reserved = stats_.reserved_bytes;
  event->largest_free_block = largest_free_locked();
  event->tag_allocated = by_tag_[static_cast<int>(tag)];
  event->name = std::move(name);
}

std::vector<PoolEvent> PoolAllocator::events() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return events_locked();
}

std::vector<PoolEvent> PoolAllocator::events_locked() const {
  std::vector<PoolEvent> result;
  result.reserve(ring_.size());
  std::size_t start = ring_.size() < ring_capacity_ ? 0 : ring_next_;
  for (std::size_t i = 0; i < ring_.size(); ++i) {
    result.push_back(ring_[(start + i) % ring_.size()]);
  }
#if defined(__x86_64__)
  // Calibrate ticks against steady_clock over at least 1 ms of this allocator's life.
  std::int64_t elapsed_ns = steady_ns() - start_steady_ns_;
  while (elapsed_ns < 1000000) elapsed_ns = steady_ns() - start_steady_ns_;
  double ns_per_tick =
      static_cast<double>(elapsed_ns) / static_cast<double>(clock_ticks() - start_ticks_);
  for (PoolEvent& event : result) {
    event.time_ns = static_cast<std::int64_t>(static_cast<double>(event.time_ns) * ns_per_tick);
  }
#endif
  return result;
}

}  // namespace mb
