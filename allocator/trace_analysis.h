// What a PoolAllocator's event trace says, read back from the events alone: the segment map
// after any prefix of the trace (a replay of Reserve/Release/Alloc/Free), the peak in a
// window of it with the bytes per tag at that instant, and the free blocks of a segment map.
//
// Note: the segment map at the peak is reconstructed by replaying the trace, not sampled with
// PoolAllocator::snapshot(): a sample taken at a mark can miss the true peak, which falls
// between marks (inside backward). The replay is checked against the allocated/reserved
// counters every event carries, so a trace that is incomplete (a wrapped ring) is refused
// rather than read wrong.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"

namespace mb {

// The segment map after events[0 .. count) of a trace that starts at the allocator's
// construction (its ring never wrapped): Reserve/Release create and remove segments,
// Alloc/Free mark blocks; the gaps between allocated blocks are the free blocks (the pool
// coalesces free neighbours, so each gap is one block). Segments by id, blocks in address
// order. Throws mb::Error when the trace is incomplete (the replayed counters differ from
// the recorded ones, or an event refers to an unknown segment or block).
std::vector<SegmentSnapshot> replay_segments(const std::vector<PoolEvent>& events,
                                             std::size_t count);

// Everything a summary of the trace needs, from one pass over the events.
struct TraceAnalysis {
  std::size_t window_begin = 0;  // index of the first event the peak is sought in
  std::size_t peak_index = 0;    // first event at which `allocated` is largest in the window
  std::size_t peak_allocated = 0;
  std::array<std::size_t, kNumMemoryTags> tag_peak{};        // in the window
  std::array<std::size_t, kNumMemoryTags> tag_cumulative{};  // whole trace
  std::array<std::size_t, kNumMemoryTags> tag_at_peak{};
  std::size_t peak_reserved = 0;                     // in the window
  std::size_t reserves = 0, releases = 0, ooms = 0;  // whole trace
  std::size_t replans = 0;                           // "re-plan" marks in the window
  std::int64_t micro_batches = 0;                    // "micro-batch N start" marks in the window
};

// The window is the events from the last mark named `window_mark` on; empty or absent: the
// whole trace.
TraceAnalysis analyse_trace(const std::vector<PoolEvent>& events, const std::string& window_mark);

// The free (not allocated) blocks of a segment map.
struct FreeBlockStats {
  std::size_t free_bytes = 0;
  std::size_t free_blocks = 0;
  std::size_t largest = 0;
  // 1 - largest / free_bytes; 0 when nothing is free.
  double fragmentation() const {
    return free_bytes == 0 ? 0.0
                           : 1.0 - static_cast<double>(largest) / static_cast<double>(free_bytes);
  }
};

FreeBlockStats free_block_stats(const std::vector<SegmentSnapshot>& segments);

}  // namespace mb
