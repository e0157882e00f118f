// The memory pictures, drawn by gnuplot: the timeline (allocated bytes stacked by tag over
// time, reserved, the cap, marks) and the segment map at the peak. This unit writes the
// gnuplot data and scripts as text and runs gnuplot on a script; the caller chooses the
// files. gnuplot is found on PATH, or at $MB_GNUPLOT when that is set.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"

namespace mb {

// gnuplot from $MB_GNUPLOT, else the first on PATH. Throws mb::IoError naming
// `apt-get install gnuplot-nox` when there is none.
std::string find_gnuplot();

// Runs `gnuplot script` with its output in `log`; throws mb::IoError with the log's tail when
// gnuplot cannot start or fails.
void run_gnuplot(const std::string& gnuplot, const std::filesystem::path& script,
                 const std::filesystem::path& log);

// The timeline's data: one step-shaped row pair per counter event; columns are time (ms), the
// allocated bytes of tags 0..i stacked (one column per tag), reserved, allocated.
std::string timeline_data(const std::vector<PoolEvent>& events);

// The script that draws `data` (timeline_data's text) as out_dir/timeline.png and
// out_dir/timeline.svg, with the cap as a line (when there is one) and the marks as arrows.
std::string timeline_script(const std::vector<PoolEvent>& events, const std::string& title,
                            std::size_t capacity, const std::filesystem::path& data,
                            const std::filesystem::path& out_dir);

// The segment map's data: one box per block, one row per segment.
std::string segment_data(const std::vector<SegmentSnapshot>& segments);

// The script that draws `data` (segment_data's text) as out_dir/segments.png; its subtitle
// gives the peak's allocated and reserved bytes and the map's free blocks.
std::string segments_script(const std::vector<SegmentSnapshot>& segments, const std::string& title,
                            std::size_t peak_allocated, std::size_t peak_reserved,
                            const std::filesystem::path& data,
                            const std::filesystem::path& out_dir);

}  // namespace mb
