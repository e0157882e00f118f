// `microbatch memprofile`: runs a few training steps with the allocator's event trace on and
// writes what memory did into a folder: trace.json (Perfetto), events.csv (raw events),
// timeline.png/.svg (allocated bytes stacked by tag over time), segments.png (the segment
// map at the peak) and summary.txt (a memory_summary-style table and the planner's numbers).
//
// The folder appears complete or not at all: everything is written into DIR.tmp-XXXXXX,
// which is renamed to DIR at the end and removed on any failure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"

namespace CLI {
class App;
}

namespace mb {

struct MemprofileArgs {
  std::string model = "lenet5";
  std::int64_t batch_size = 256;
  std::string micro_batch = "auto";
  std::string memory_limit;
  std::string device = "auto";
  int steps = 2;
  std::string out_dir;
  std::int64_t image_size = 0;
  std::uint64_t seed = 0;
  bool json = false;
};

// Runs S training steps of the model on synthetic data with the allocator trace on and
// writes trace.json, events.csv, timeline.png, timeline.svg, segments.png, summary.txt into
// out_dir. Returns 0; throws mb::InvalidArgument / mb::Error on bad input.
// gnuplot draws the pictures: found on PATH, or at $MB_GNUPLOT when that is set.
int run_memprofile(const MemprofileArgs& args, std::ostream& out);
// Adds the `memprofile` subcommand's flags to `cmd`, bound to `args`.
void add_memprofile_flags(CLI::App& cmd, MemprofileArgs& args);

// ---- The pieces run_memprofile is made of (tests drive them on a hand-made allocator). ----

// What the pictures and the summary say about the run besides the trace itself.
struct MemoryProfileInfo {
  std::string title;  // e.g. "lenet5 [1, 28, 28], batch 16 = 2 x 6 + 1 x 4 (fixed), cpu, ..."
  std::vector<std::string> planner;  // the planner's numbers, one line each
  // The peak (and its segment map) is sought in the events after the last mark with this
  // name; empty or absent: the whole trace.
  std::string window_mark;
};

// Writes the six files from `pool`'s trace into the existing folder `dir` (the segment map at
// the peak is replayed from the trace: allocator/trace_analysis.h). Throws mb::Error when the
// ring has wrapped (the replay would be wrong) and mb::IoError on write failures or when
// gnuplot is missing or fails (naming `apt-get install gnuplot-nox`).
void write_memory_profile(const PoolAllocator& pool, const MemoryProfileInfo& info,
                          const std::string& dir);

}  // namespace mb
