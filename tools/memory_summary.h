// summary.txt of `microbatch memprofile`: a memory_summary-style table (bytes per tag: current,
// peak, at the peak, cumulative), the peak and the allocator's counters, fragmentation at the
// peak, the planner's numbers and the segment map at the peak as text.
#pragma once

#include <string>
#include <vector>

#include "allocator/pool_allocator.h"
#include "allocator/trace_analysis.h"

namespace mb {

// `events` is `pool`'s trace, `analysis` its analyse_trace() and `at_peak` its replayed
// segment map at analysis.peak_index; `title` heads the text, `planner` lines are listed as
// they are.
std::string memory_summary_text(const PoolAllocator& pool, const std::vector<PoolEvent>& events,
                                const TraceAnalysis& analysis,
                                const std::vector<SegmentSnapshot>& at_peak,
                                const std::string& title, const std::vector<std::string>& planner);

}  // namespace mb
