// The trace read back from its events: the segment-map replay, the peak-window analysis and
// free-block statistics. See allocator/trace_analysis.h.
#include "allocator/trace_analysis.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <utility>

#include "runtime/error.h"

namespace mb {

std::vector<SegmentSnapshot> replay_segments(const std::vector<PoolEvent>& events,
                                             std::size_t count) {
  MB_CHECK(count <= events.size(), "replay_segments: count ", count, " exceeds the ", events.size(),
           " events");
  struct Live {
    std::size_t size;
    MemoryTag tag;
  };
  struct Segment {
    std::size_t size = 0;
    std::map<std::size_t, Live> blocks;  // allocated, by offset
  };
  std::map<int, Segment> segments;
  std::size_t allocated = 0, reserved = 0;
  // The fix names memprofile's flags as well: it is the command that replays whole runs.
  auto incomplete = [&](std::size_t i, const std::string& what) {
    MB_THROW(Error, "the allocator trace is incomplete at event #", i, " (", what,
             "): it must start at the allocator's construction. Fix: a larger "
             "PoolOptions::trace_events, or fewer --steps / a smaller --batch-size");
  };
  for (std::size_t i = 0; i < count; ++i) {
    const PoolEvent& e = events[i];
    switch (e.kind) {
      case PoolEventKind::Reserve:
        if (segments.count(e.segment_id) != 0) incomplete(i, "segment reserved twice");
        segments[e.segment_id].size = e.bytes;
        reserved += e.bytes;
        break;
      case PoolEventKind::Release: {
        auto it = segments.find(e.segment_id);
        if (it == segments.end() || !it->second.blocks.empty()) {
          incomplete(i, "release of an unknown or busy segment");
        }
        reserved -= it->second.size;
        segments.erase(it);
        break;
      }
      case PoolEventKind::Alloc: {
        auto it = segments.find(e.segment_id);
        if (it == segments.end() || e.offset + e.bytes > it->second.size) {
          incomplete(i, "allocation outside the known segments");
        }
        auto& blocks = it->second.blocks;
        auto next = blocks.lower_bound(e.offset);
        const bool overlaps_next = next != blocks.end() && next->first < e.offset + e.bytes;
        const bool overlaps_prev = next != blocks.begin() &&
                                   std::prev(next)->first + std::prev(next)->second.size > e.offset;
        if (overlaps_next || overlaps_prev) incomplete(i, "allocation over a live block");
        blocks[e.offset] = Live{e.bytes, e.tag};
        allocated += e.bytes;
        break;
      }
      case PoolEventKind::Free: {
        auto it = segments.find(e.segment_id);
        if (it == segments.end()) incomplete(i, "free in an unknown segment");
        auto block = it->second.blocks.find(e.offset);
        if (block == it->second.blocks.end() || block->second.size != e.bytes) {
          incomplete(i, "free of an unknown block");
        }
        it->second.blocks.erase(block);
        allocated -= e.bytes;
        break;
      }
      case PoolEventKind::Mark:
      case PoolEventKind::Oom: break;
    }
    if (allocated != e.allocated || reserved != e.reserved) {
      incomplete(i, "replayed counters differ from the recorded ones");
    }
  }
  std::vector<SegmentSnapshot> result;
  for (const auto& [id, segment] : segments) {
    SegmentSnapshot snapshot;
    snapshot.id = id;
    snapshot.size = segment.size;
    snapshot.small_pool = segment.size == PoolAllocator::kSmallSegment;
    std::size_t cursor = 0;
    for (const auto& [offset, live] : segment.blocks) {
      if (offset > cursor) snapshot.blocks.push_back({cursor, offset - cursor, false});
      snapshot.blocks.push_back({offset, live.size, true, live.tag});
      cursor = offset + live.size;
    }
    if (cursor < segment.size) snapshot.blocks.push_back({cursor, segment.size - cursor, false});
    result.push_back(std::move(snapshot));
  }
  return result;
}

TraceAnalysis analyse_trace(const std::vector<PoolEvent>& events, const std::string& window_mark) {
  TraceAnalysis analysis;
  if (!window_mark.empty()) {
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (events[i].kind == PoolEventKind::Mark && events[i].name == window_mark) {
        analysis.window_begin = i;
      }
    }
  }
  std::array<std::size_t, kNumMemoryTags> by_tag{};
  bool found_peak = false;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const PoolEvent& event = events[i];
    const int tag = static_cast<int>(event.tag);
    switch (event.kind) {
      case PoolEventKind::Alloc:
        analysis.tag_cumulative[tag] += event.bytes;
        by_tag[tag] = event.tag_allocated;
        break;
      case PoolEventKind::Free: by_tag[tag] = event.tag_allocated; break;
      case PoolEventKind::Reserve: ++analysis.reserves; break;
      case PoolEventKind::Release: ++analysis.releases; break;
      case PoolEventKind::Oom: ++analysis.ooms; break;
      case PoolEventKind::Mark:
        if (i >= analysis.window_begin && event.name == "re-plan") ++analysis.replans;
        if (i >= analysis.window_begin && event.name.rfind("micro-batch ", 0) == 0 &&
            event.name.find(" start") != std::string::npos) {
          ++analysis.micro_batches;
        }
        break;
    }
    if (i < analysis.window_begin) continue;
    for (int t = 0; t < kNumMemoryTags; ++t)
      analysis.tag_peak[t] = std::max(analysis.tag_peak[t], by_tag[t]);
    analysis.peak_reserved = std::max(analysis.peak_reserved, event.reserved);
    if (!found_peak || event.allocated > analysis.peak_allocated) {
      found_peak = true;
      analysis.peak_allocated = event.allocated;
      analysis.peak_index = i;
      analysis.tag_at_peak = by_tag;
    }
  }
  return analysis;
}

FreeBlockStats free_block_stats(const std::vector<SegmentSnapshot>& segments) {
  FreeBlockStats stats;
  for (const SegmentSnapshot& segment : segments) {
    for (const BlockSnapshot& block : segment.blocks) {
      if (block.allocated) continue;
      stats.free_bytes += block.size;
      stats.free_blocks += 1;
      stats.largest = std::max(stats.largest, block.size);
    }
  }
  return stats;
}

}  // namespace mb
