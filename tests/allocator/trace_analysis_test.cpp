// allocator/trace_analysis (label allocator): the segment-map replay equals the allocator's own
// snapshot() after every operation and refuses a wrapped trace; the free-block statistics of
// the replayed map equal the allocator's report(); the peak-window analysis equals the
// allocator's peak counter, stats and per-tag report sampled during the run.
#include "allocator/trace_analysis.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "allocator/pool_allocator.h"
#include "runtime/error.h"
#include "runtime/memory_resource.h"
#include "tests/allocator/pool_exercise.h"

namespace mb {
namespace {

TEST(TraceAnalysis, ReplayedSegmentMapEqualsSnapshotAfterEveryOperation) {
  PoolOptions options;
  options.capacity = std::size_t{256} << 20;
  PoolAllocator pool(make_host_memory_resource(), options);
  std::vector<std::pair<std::size_t, std::vector<SegmentSnapshot>>> checkpoints;
  testing::exercise(pool, [&] { checkpoints.emplace_back(pool.events().size(), pool.snapshot()); });
  const std::vector<PoolEvent> events = pool.events();
  ASSERT_GT(checkpoints.size(), 30u);
  int with_holes = 0;
  for (const auto& [count, truth] : checkpoints) {
    const std::vector<SegmentSnapshot> replayed = replay_segments(events, count);
    ASSERT_EQ(replayed.size(), truth.size()) << "after " << count << " events";
    for (std::size_t s = 0; s < truth.size(); ++s) {
      EXPECT_EQ(replayed[s].id, truth[s].id);
      EXPECT_EQ(replayed[s].size, truth[s].size);
      EXPECT_EQ(replayed[s].small_pool, truth[s].small_pool);
      ASSERT_EQ(replayed[s].blocks.size(), truth[s].blocks.size())
          << "segment #" << truth[s].id << " after " << count << " events";
      for (std::size_t b = 0; b < truth[s].blocks.size(); ++b) {
        EXPECT_EQ(replayed[s].blocks[b].offset, truth[s].blocks[b].offset);
        EXPECT_EQ(replayed[s].blocks[b].size, truth[s].blocks[b].size);
        EXPECT_EQ(replayed[s].blocks[b].allocated, truth[s].blocks[b].allocated);
        if (truth[s].blocks[b].allocated) {
          EXPECT_EQ(replayed[s].blocks[b].tag, truth[s].blocks[b].tag);
        }
        with_holes += truth[s].blocks[b].allocated ? 0 : 1;
      }
    }
  }
  EXPECT_GT(with_holes, 10) << "the sequence should leave free blocks to map";
}

TEST(TraceAnalysis, ReplayRefusesAWrappedTrace) {
  PoolOptions options;
  options.trace_events = 8;  // far fewer than the sequence makes
  PoolAllocator pool(make_host_memory_resource(), options);
  testing::exercise(pool, [] {});
  const std::vector<PoolEvent> events = pool.events();
  ASSERT_EQ(events.size(), 8u);
  EXPECT_THROW(replay_segments(events, events.size()), Error);
}

TEST(TraceAnalysis, FreeBlocksOfTheReplayedMapEqualTheReport) {
  PoolOptions options;
  options.capacity = std::size_t{256} << 20;
  PoolAllocator pool(make_host_memory_resource(), options);
  std::vector<std::pair<std::size_t, FreeArenaReport>> checkpoints;
  testing::exercise(pool, [&] { checkpoints.emplace_back(pool.events().size(), pool.report()); });
  const std::vector<PoolEvent> events = pool.events();
  int with_free = 0;
  for (const auto& [count, truth] : checkpoints) {
    const FreeBlockStats free_blocks = free_block_stats(replay_segments(events, count));
    EXPECT_EQ(free_blocks.free_bytes, truth.free_in_arena) << "after " << count << " events";
    EXPECT_EQ(free_blocks.largest, truth.largest_free_block) << "after " << count << " events";
    EXPECT_DOUBLE_EQ(free_blocks.fragmentation(), truth.fragmentation)
        << "after " << count << " events";
    EXPECT_LE(free_blocks.largest, free_blocks.free_bytes);
    EXPECT_EQ(free_blocks.free_blocks == 0, free_blocks.free_bytes == 0);
    with_free += free_blocks.free_blocks > 1 ? 1 : 0;
  }
  EXPECT_GT(with_free, 10) << "the sequence should leave several free blocks at a time";
  EXPECT_EQ(free_block_stats({}).fragmentation(), 0.0);
}

TEST(TraceAnalysis, PeakWindowEqualsTheAllocatorsOwnCounters) {
  PoolOptions options;
  options.capacity = std::size_t{256} << 20;
  PoolAllocator pool(make_host_memory_resource(), options);
  // A first phase whose peak (a 40 MiB block) is larger than anything after the window mark,
  // so a window that is ignored shows.
  void* before = pool.allocate(std::size_t{40} << 20, MemoryTag::Workspace);
  pool.deallocate(before);
  pool.empty_cache();  // releases its segment
  const std::size_t first_peak = pool.stats().peak_allocated_bytes;
  ASSERT_GE(first_peak, std::size_t{40} << 20);
  pool.mark("re-plan");  // before the window: not counted
  pool.reset_peak();
  pool.mark("window");
  pool.mark("micro-batch 0 start");
  pool.mark("re-plan");
  pool.mark("micro-batch 1 start");
  pool.mark("micro-batch 1 end");
  std::array<std::size_t, kNumMemoryTags> tag_peak{};
  std::size_t peak_reserved = 0;
  testing::exercise(pool, [&] {
    const FreeArenaReport report = pool.report();
    for (int t = 0; t < kNumMemoryTags; ++t) {
      tag_peak[t] = std::max(tag_peak[t], report.allocated_by_tag[t]);
    }
    peak_reserved = std::max(peak_reserved, report.reserved);
  });
  const std::vector<PoolEvent> events = pool.events();
  const PoolStats stats = pool.stats();

  const TraceAnalysis analysis = analyse_trace(events, "window");
  ASSERT_LT(analysis.window_begin, events.size());
  EXPECT_EQ(events[analysis.window_begin].name, "window");
  EXPECT_EQ(analysis.peak_allocated, stats.peak_allocated_bytes);
  EXPECT_LT(analysis.peak_allocated, first_peak);
  ASSERT_LT(analysis.peak_index, events.size());
  EXPECT_GE(analysis.peak_index, analysis.window_begin);
  EXPECT_EQ(events[analysis.peak_index].allocated, analysis.peak_allocated);
  for (std::size_t i = analysis.window_begin; i < analysis.peak_index; ++i) {
    EXPECT_LT(events[i].allocated, analysis.peak_allocated) << "event #" << i << " is earlier";
  }
  EXPECT_EQ(analysis.peak_reserved, peak_reserved);
  std::size_t at_peak_total = 0, cumulative_total = 0;
  for (int t = 0; t < kNumMemoryTags; ++t) {
    EXPECT_EQ(analysis.tag_peak[t], tag_peak[t]) << memory_tag_name(static_cast<MemoryTag>(t));
    EXPECT_LE(analysis.tag_at_peak[t], analysis.tag_peak[t]);
    at_peak_total += analysis.tag_at_peak[t];
    cumulative_total += analysis.tag_cumulative[t];
  }
  EXPECT_EQ(at_peak_total, analysis.peak_allocated);
  EXPECT_EQ(cumulative_total, stats.cumulative_allocated_bytes);
  EXPECT_EQ(analysis.reserves, stats.segments + stats.releases);
  EXPECT_EQ(analysis.releases, stats.releases);
  EXPECT_GT(analysis.releases, 0u) << "empty_cache() released the 40 MiB segment";
  EXPECT_EQ(analysis.ooms, stats.ooms);
  EXPECT_EQ(analysis.replans, 1u);
  EXPECT_EQ(analysis.micro_batches, 2);

  // No window: the whole trace, whose peak is the 40 MiB block's.
  const TraceAnalysis whole = analyse_trace(events, "");
  EXPECT_EQ(whole.window_begin, 0u);
  EXPECT_EQ(whole.peak_allocated, first_peak);
  EXPECT_EQ(whole.tag_at_peak[static_cast<int>(MemoryTag::Workspace)], first_peak);
  EXPECT_EQ(whole.replans, 2u);
  EXPECT_EQ(whole.tag_cumulative, analysis.tag_cumulative);
  // A mark that never happened: the whole trace as well.
  EXPECT_EQ(analyse_trace(events, "no such mark").peak_index, whole.peak_index);
}

}  // namespace
}  // namespace mb
