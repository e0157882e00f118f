// summary.txt of `microbatch memprofile`. See tools/memory_summary.h.
#include "tools/memory_summary.h"

#include <iomanip>
#include <sstream>

#include "runtime/memory_report.h"
#include "tools/format.h"

namespace mb {
namespace {

// `text` right-aligned (or left-aligned) in a field of `width` characters.
std::string pad(const std::string& text, int width, bool left = false) {
  std::ostringstream s;
  s << (left ? std::left : std::right) << std::setw(width) << text;
  return s.str();
}

}  // namespace

std::string memory_summary_text(const PoolAllocator& pool, const std::vector<PoolEvent>& events,
                                const TraceAnalysis& analysis,
                                const std::vector<SegmentSnapshot>& at_peak,
                                const std::string& title, const std::vector<std::string>& planner) {
  const PoolStats stats = pool.stats();
  const FreeArenaReport report = pool.report();
  const FreeBlockStats free_at_peak = free_block_stats(at_peak);
  const PoolEvent& peak_event = events[analysis.peak_index];
  std::ostringstream s;
  const std::string rule(78, '=');
  s << rule << "\n microbatch memprofile: " << title << "\n" << rule << "\n";
  s << pad("allocated by tag", 20, true) << pad("current", 14) << pad("peak", 14)
    << pad("at peak", 14) << pad("cumulative", 16) << "\n";
  s << std::string(78, '-') << "\n";
  std::size_t cumulative_total = 0;
  for (int t = 0; t < kNumMemoryTags; ++t) {
    const MemoryTag tag = static_cast<MemoryTag>(t);
    cumulative_total += analysis.tag_cumulative[t];
    s << pad(memory_tag_name(tag), 20, true) << pad(format_bytes(report.tag_bytes(tag)), 14)
      << pad(format_bytes(analysis.tag_peak[t]), 14)
      << pad(format_bytes(analysis.tag_at_peak[t]), 14)
      << pad(format_bytes(analysis.tag_cumulative[t]), 16) << "\n";
  }
  s << std::string(78, '-') << "\n";
  s << pad("total allocated", 20, true) << pad(format_bytes(stats.allocated_bytes), 14)
    << pad(format_bytes(analysis.peak_allocated), 14)
    << pad(format_bytes(analysis.peak_allocated), 14) << pad(format_bytes(cumulative_total), 16)
    << "\n";
  s << pad("reserved", 20, true) << pad(format_bytes(stats.reserved_bytes), 14)
    << pad(format_bytes(analysis.peak_reserved), 14) << pad(format_bytes(peak_event.reserved), 14)
    << pad(format_bytes(stats.cumulative_reserved_bytes), 16) << "\n";
  s << pad("cap", 20, true) << pad(format_bytes(pool.capacity()), 14) << "\n\n";

  const double hit_rate = stats.allocations == 0 ? 0.0
                                                 : static_cast<double>(stats.cache_hits) /
                                                       static_cast<double>(stats.allocations);
  s << "peak allocated during the steps: " << format_bytes(analysis.peak_allocated) << " ("
    << analysis.peak_allocated << " bytes) at " << fixed(peak_event.time_ns / 1e6, 3)
    << " ms, event #" << analysis.peak_index << ", micro-batch " << peak_event.micro_batch << "\n";
  s << "allocator's own peak counter:    " << format_bytes(stats.peak_allocated_bytes) << " ("
    << stats.peak_allocated_bytes << " bytes; reset after planning)\n";
  s << "allocations: " << stats.allocations << ", cache hits: " << stats.cache_hits << " ("
    << fixed(100.0 * hit_rate, 1) << "%), segments reserved: " << analysis.reserves
    << ", released: " << analysis.releases << ", OOMs: " << stats.ooms
    << ", re-plans: " << analysis.replans << ", micro-batches run: " << analysis.micro_batches
    << "\n";
  s << "segments now: " << stats.segments << " holding " << format_bytes(stats.reserved_bytes)
    << "; at the peak: " << at_peak.size() << " holding " << format_bytes(peak_event.reserved)
    << "\n";
  s << "fragmentation at peak: " << fixed(free_at_peak.fragmentation(), 4)
    << " (1 - largest free block " << format_bytes(free_at_peak.largest) << " / free in arena "
    << format_bytes(free_at_peak.free_bytes) << " in " << free_at_peak.free_blocks
    << " blocks)\n\n";

  s << "planner:\n";
  for (const std::string& line : planner) s << "  " << line << "\n";
  s << "\nsegment map at the peak (address order; A = allocated, tag; F = free):\n";
  for (const SegmentSnapshot& segment : at_peak) {
    std::size_t used = 0;
    for (const BlockSnapshot& block : segment.blocks) used += block.allocated ? block.size : 0;
    s << "  segment #" << segment.id << " (" << (segment.small_pool ? "small" : "large") << ", "
      << format_bytes(segment.size) << ", " << format_bytes(used) << " allocated):";
    // Runs of identical blocks are shown once with a count.
    int shown = 0;
    for (std::size_t b = 0; b < segment.blocks.size();) {
      const BlockSnapshot& block = segment.blocks[b];
      std::size_t run = 1;
      while (b + run < segment.blocks.size() &&
             segment.blocks[b + run].allocated == block.allocated &&
             segment.blocks[b + run].size == block.size &&
             (!block.allocated || segment.blocks[b + run].tag == block.tag)) {
        ++run;
      }
      if (++shown > 32) {
        s << " ... " << (segment.blocks.size() - b) << " more blocks";
        break;
      }
      s << " [" << (block.allocated ? std::string("A ") + memory_tag_name(block.tag) : "F") << " "
        << format_bytes(block.size) << (run > 1 ? " x" + std::to_string(run) : "") << "]";
      b += run;
    }
    s << "\n";
  }
  return s.str();
}

}  // namespace mb
