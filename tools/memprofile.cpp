// `microbatch memprofile`: a few training steps under a traced, capped PoolAllocator, then the
// trace as files (trace.json, events.csv), pictures drawn by gnuplot (timeline.png/.svg,
// segments.png) and a memory_summary-style table (summary.txt). See tools/memprofile.h.
//
// Note: the segment map at the peak is reconstructed by replaying the event trace (Reserve,
// Release, Alloc, Free carry segment, offset and size), not sampled with snapshot(): a sample
// taken at a mark can miss the true peak, which falls between marks (inside backward). The
// replay is checked against the allocated/reserved counters every event carries, so a trace
// that is incomplete (a wrapped ring) is refused rather than drawn wrong.
#include "tools/memprofile.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "allocator/byte_size.h"
#include "data/dataset.h"
#include "engine/session.h"
#include "engine/trainer.h"
#include "models/zoo.h"
#include "runtime/allocator_registry.h"
#include "runtime/error.h"
#include "runtime/memory_resource.h"
#include "tools/format.h"

extern char** environ;

namespace mb {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStepsMark = "memprofile: training steps";
// Events the trace can hold. The ring grows as events arrive, so a short run costs little.
constexpr std::size_t kTraceEvents = std::size_t{1} << 21;
constexpr double kMiB = 1024.0 * 1024.0;

// One colour per MemoryTag, in enum order (param, grad, optimizer, activation, workspace,
// data, other).
constexpr std::array<const char*, kNumMemoryTags> kTagColours = {
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"};
constexpr std::array<std::uint32_t, kNumMemoryTags> kTagRgb = {
    0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0x7f7f7f};
constexpr std::uint32_t kFreeRgb = 0xe8e8e8;

// A gnuplot single-quoted string (only the quote itself needs doubling).
std::string gp_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("''") : std::string(1, c);
  return quoted + "'";
}

// A gnuplot double-quoted string, where "\n" breaks the line.
std::string gp_double_quote(const std::string& text) {
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "\"";
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) {
    MB_THROW(IoError, "cannot open '", path.string(),
             "' for writing. Fix: check that the folder is writable");
  }
  file << text;
  file.flush();
  if (!file) {
    MB_THROW(IoError, "writing '", path.string(), "' failed (disk full?). Fix: free space");
  }
}

bool executable(const std::string& path) {
  return !path.empty() && access(path.c_str(), X_OK) == 0 && !fs::is_directory(path);
}

// gnuplot from $MB_GNUPLOT, else the first on PATH.
std::string find_gnuplot() {
  const char* fix = "Fix: apt-get install gnuplot-nox (or point MB_GNUPLOT at a gnuplot binary)";
  if (const char* override_path = std::getenv("MB_GNUPLOT")) {
    if (executable(override_path)) return override_path;
    MB_THROW(IoError, "MB_GNUPLOT='", override_path,
             "' is not an executable file; memprofile draws its pictures with gnuplot. ", fix);
  }
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/gnuplot";
    if (executable(candidate)) return candidate;
  }
  MB_THROW(IoError, "gnuplot was not found on PATH; memprofile draws its pictures with it. ", fix);
}

// Runs `gnuplot script` with its output in `log`; throws mb::IoError with the log's tail.
void run_gnuplot(const std::string& gnuplot, const fs::path& script, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::string script_path = script.string();
  std::vector<char*> argv = {const_cast<char*>(gnuplot.c_str()),
                             const_cast<char*>(script_path.c_str()), nullptr};
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, gnuplot.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    MB_THROW(IoError, "cannot start '", gnuplot, "' (", std::strerror(spawned),
             "). Fix: apt-get install gnuplot-nox");
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) MB_THROW(IoError, "waiting for gnuplot failed: ", std::strerror(errno));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ifstream file(log);
    std::stringstream text;
    text << file.rdbuf();
    std::string tail = text.str();
    if (tail.size() > 1500) tail = "..." + tail.substr(tail.size() - 1500);
    MB_THROW(IoError, "gnuplot failed on '", script.string(), "': ", tail,
             " Fix: check that gnuplot has the pngcairo and svg terminals (gnuplot-nox)");
  }
}

// Everything the summary and the pictures need, from one pass over the events.
struct TraceAnalysis {
  std::size_t window_begin = 0;  // index of the first event the peak is sought in
  std::size_t peak_index = 0;    // first event at which `allocated` is largest in the window
  std::size_t peak_allocated = 0;
  std::array<std::size_t, kNumMemoryTags> tag_peak{};        // in the window
  std::array<std::size_t, kNumMemoryTags> tag_cumulative{};  // whole trace
  std::array<std::size_t, kNumMemoryTags> tag_at_peak{};
  std::size_t peak_reserved = 0;  // in the window
  std::size_t reserves = 0, releases = 0, ooms = 0, replans = 0;
  std::int64_t micro_batches = 0;
};

TraceAnalysis analyse(const std::vector<PoolEvent>& events, const std::string& window_mark) {
  TraceAnalysis a;
  if (!window_mark.empty()) {
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (events[i].kind == PoolEventKind::Mark && events[i].name == window_mark) {
        a.window_begin = i;
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
        a.tag_cumulative[tag] += event.bytes;
        by_tag[tag] = event.tag_allocated;
        break;
      case PoolEventKind::Free: by_tag[tag] = event.tag_allocated; break;
      case PoolEventKind::Reserve: ++a.reserves; break;
      case PoolEventKind::Release: ++a.releases; break;
      case PoolEventKind::Oom: ++a.ooms; break;
      case PoolEventKind::Mark:
        if (i >= a.window_begin && event.name == "re-plan") ++a.replans;
        if (i >= a.window_begin && event.name.rfind("micro-batch ", 0) == 0 &&
            event.name.find(" start") != std::string::npos) {
          ++a.micro_batches;
        }
        break;
    }
    if (i < a.window_begin) continue;
    for (int t = 0; t < kNumMemoryTags; ++t) a.tag_peak[t] = std::max(a.tag_peak[t], by_tag[t]);
    a.peak_reserved = std::max(a.peak_reserved, event.reserved);
    if (!found_peak || event.allocated > a.peak_allocated) {
      found_peak = true;
      a.peak_allocated = event.allocated;
      a.peak_index = i;
      a.tag_at_peak = by_tag;
    }
  }
  return a;
}

struct FreeBlockStats {
  std::size_t free_bytes = 0;
  std::size_t free_blocks = 0;
  std::size_t largest = 0;
  double fragmentation() const {
    return free_bytes == 0 ? 0.0
                           : 1.0 - static_cast<double>(largest) / static_cast<double>(free_bytes);
  }
};

FreeBlockStats free_block_stats(const std::vector<SegmentSnapshot>& segments) {
  FreeBlockStats s;
  for (const SegmentSnapshot& segment : segments) {
    for (const BlockSnapshot& block : segment.blocks) {
      if (block.allocated) continue;
      s.free_bytes += block.size;
      s.free_blocks += 1;
      s.largest = std::max(s.largest, block.size);
    }
  }
  return s;
}

// The timeline: one step-shaped row pair per counter event; columns are time (ms), the
// allocated bytes of tags 0..i stacked (one column per tag), reserved, allocated.
void write_timeline_data(const std::vector<PoolEvent>& events, const fs::path& path) {
  std::ostringstream out;
  out << "# time_ms";
  for (int t = 0; t < kNumMemoryTags; ++t) {
    out << " stack_to_" << memory_tag_name(static_cast<MemoryTag>(t));
  }
  out << " reserved allocated\n";
  std::array<std::size_t, kNumMemoryTags> by_tag{};
  std::size_t reserved = 0, allocated = 0;
  auto row = [&](double ms) {
    out << fixed(ms, 6);
    std::size_t stacked = 0;
    for (int t = 0; t < kNumMemoryTags; ++t) {
      stacked += by_tag[t];
      out << ' ' << stacked;
    }
    out << ' ' << reserved << ' ' << allocated << '\n';
  };
  bool first = true;
  for (const PoolEvent& event : events) {
    if (event.kind == PoolEventKind::Mark || event.kind == PoolEventKind::Oom) continue;
    const double ms = static_cast<double>(event.time_ns) / 1e6;
    if (!first) row(ms);  // hold the previous values up to this instant
    first = false;
    if (event.kind == PoolEventKind::Alloc || event.kind == PoolEventKind::Free) {
      by_tag[static_cast<int>(event.tag)] = event.tag_allocated;
    }
    reserved = event.reserved;
    allocated = event.allocated;
    row(ms);
  }
  if (first) row(0.0);
  write_text(path, out.str());
}

std::string timeline_script(const std::vector<PoolEvent>& events, const MemoryProfileInfo& info,
                            std::size_t capacity, const fs::path& data, const fs::path& dir) {
  std::array<bool, kNumMemoryTags> used{};
  double end_ms = 0.0;
  for (const PoolEvent& event : events) {
    if (event.kind == PoolEventKind::Alloc) used[static_cast<int>(event.tag)] = true;
    end_ms = std::max(end_ms, static_cast<double>(event.time_ns) / 1e6);
  }
  std::ostringstream s;
  s << "set title " << gp_quote(info.title) << " noenhanced\n"
    << "set xlabel 'time (ms)'\nset ylabel 'MiB'\nset grid\nset key outside right top\n"
    << "set xrange [0:" << fixed(std::max(end_ms * 1.01, 1e-3), 6)
    << "]\nset yrange [0:*]\nset tmargin 4\n"
    << "set style fill solid 0.85 noborder\n";
  // Marks: micro-batch starts (grey), optimizer updates (green), probes (orange),
  // re-plans and OOMs (red), our step marks (black).
  int arrows = 0;
  for (const PoolEvent& event : events) {
    std::string colour;
    if (event.kind == PoolEventKind::Oom || event.name == "re-plan") {
      colour = "#e00000";
    } else if (event.kind != PoolEventKind::Mark) {
      continue;
    } else if (event.name.rfind("micro-batch ", 0) == 0) {
      if (event.name.find(" start") == std::string::npos) continue;
      colour = "#909090";
    } else if (event.name == "optimizer update") {
      colour = "#008000";
    } else if (event.name == "probe") {
      colour = "#ff8c00";
    } else {
      colour = "#000000";
    }
    if (++arrows > 400) break;  // beyond this the lines are a grey wall anyway
    const double ms = static_cast<double>(event.time_ns) / 1e6;
    if (event.kind == PoolEventKind::Mark &&
        (event.name == "probe" || event.name.rfind("step ", 0) == 0)) {
      s << "set label " << gp_quote(event.name) << " at " << fixed(ms, 6)
        << ", graph 1.02 center font 'sans,8' noenhanced\n";
    }
    s << "set arrow from " << fixed(ms, 6) << ", graph 0 to " << fixed(ms, 6)
      << ", graph 1 nohead dt 2 lw 1 lc rgb '" << colour << "' back\n";
  }
  std::ostringstream plot;
  plot << "plot ";
  for (int t = kNumMemoryTags - 1; t >= 0; --t) {
    if (!used[t]) continue;
    plot << gp_quote(data.string()) << " using 1:($" << (t + 2) << "/" << kMiB
         << ") with filledcurves x1 lc rgb '" << kTagColours[t] << "' title '"
         << memory_tag_name(static_cast<MemoryTag>(t)) << "', ";
  }
  plot << gp_quote(data.string()) << " using 1:($" << (kNumMemoryTags + 2) << "/" << kMiB
       << ") with lines lw 2 lc rgb 'black' title 'reserved'";
  if (capacity > 0 && capacity < (std::size_t{1} << 60)) {
    plot << ", " << fixed(static_cast<double>(capacity) / kMiB, 6)
         << " with lines dt 2 lw 2 lc rgb '#e00000' title 'cap " << format_bytes(capacity) << "'";
  }
  // Legend entries for the mark colours.
  plot << ", NaN with lines dt 2 lc rgb '#909090' title 'micro-batch start'"
       << ", NaN with lines dt 2 lc rgb '#008000' title 'optimizer update'"
       << ", NaN with lines dt 2 lc rgb '#ff8c00' title 'probe'"
       << ", NaN with lines dt 2 lc rgb '#e00000' title 're-plan / OOM'\n";
  s << "set terminal pngcairo size 1100,520 font 'sans,9'\n"
    << "set output " << gp_quote((dir / "timeline.png").string()) << "\n"
    << plot.str() << "set terminal svg size 1100,520 font 'sans,9' dynamic\n"
    << "set output " << gp_quote((dir / "timeline.svg").string()) << "\n"
    << plot.str() << "unset output\n";
  return s.str();
}

void write_segment_data(const std::vector<SegmentSnapshot>& segments, const fs::path& path) {
  std::ostringstream out;
  out << "# x_center_MiB row half_width_MiB half_height rgb allocated tag\n";
  for (std::size_t row = 0; row < segments.size(); ++row) {
    for (const BlockSnapshot& block : segments[row].blocks) {
      const double start = static_cast<double>(block.offset) / kMiB;
      const double width = static_cast<double>(block.size) / kMiB;
      const std::uint32_t rgb = block.allocated ? kTagRgb[static_cast<int>(block.tag)] : kFreeRgb;
      out << fixed(start + width / 2, 6) << ' ' << row << ' ' << fixed(width / 2, 6) << " 0.38 "
          << rgb << ' ' << (block.allocated ? 1 : 0) << ' '
          << (block.allocated ? memory_tag_name(block.tag) : "free") << '\n';
    }
  }
  if (segments.empty()) out << "0 0 0 0.38 " << kFreeRgb << " 0 free\n";
  write_text(path, out.str());
}

std::string segments_script(const std::vector<SegmentSnapshot>& segments,
                            const std::string& subtitle, const MemoryProfileInfo& info,
                            const fs::path& data, const fs::path& dir) {
  const std::size_t rows = std::max<std::size_t>(segments.size(), 1);
  const int height = static_cast<int>(std::min<std::size_t>(200 + 22 * rows, 2400));
  std::ostringstream s;
  s << "set terminal pngcairo size 1100," << height << " font 'sans,9'\n"
    << "set output " << gp_quote((dir / "segments.png").string()) << "\n"
    << "set title " << gp_double_quote("segment map at the peak: " + info.title) << " . \"\\n\" . "
    << gp_double_quote(subtitle) << " noenhanced\n"
    << "set xlabel 'offset in segment (MiB)'\nset yrange [" << rows << "-0.5:-0.5]\n"
    << "set xrange [0:*]\nset style fill solid 1.0 border lc rgb '#404040'\n"
    << "set key outside right top\nset grid x\n";
  s << "set ytics (";
  const std::size_t every = std::max<std::size_t>(1, rows / 60);
  bool first = true;
  for (std::size_t row = 0; row < segments.size(); row += every) {
    s << (first ? "" : ", ")
      << gp_quote("#" + std::to_string(segments[row].id) + " " + format_bytes(segments[row].size))
      << " " << row;
    first = false;
  }
  if (segments.empty()) s << "'none' 0";
  s << ") font 'sans,8'\n";
  s << "plot " << gp_quote(data.string())
    << " using 1:2:3:4:5 with boxxyerror lc rgb variable notitle";
  for (int t = 0; t < kNumMemoryTags; ++t) {
    s << ", NaN with boxes lc rgb '" << kTagColours[t] << "' title '"
      << memory_tag_name(static_cast<MemoryTag>(t)) << "'";
  }
  s << ", NaN with boxes lc rgb '#e8e8e8' title 'free'\nunset output\n";
  return s.str();
}

std::string pad(const std::string& text, int width, bool left = false) {
  std::ostringstream s;
  s << (left ? std::left : std::right) << std::setw(width) << text;
  return s.str();
}

std::string summary_text(const PoolAllocator& pool, const std::vector<PoolEvent>& events,
                         const TraceAnalysis& a, const std::vector<SegmentSnapshot>& at_peak,
                         const MemoryProfileInfo& info) {
  const PoolStats stats = pool.stats();
  const FreeArenaReport report = pool.report();
  const FreeBlockStats free_at_peak = free_block_stats(at_peak);
  const PoolEvent& peak_event = events[a.peak_index];
  std::ostringstream s;
  const std::string rule(78, '=');
  s << rule << "\n microbatch memprofile: " << info.title << "\n" << rule << "\n";
  s << pad("allocated by tag", 20, true) << pad("current", 14) << pad("peak", 14)
    << pad("at peak", 14) << pad("cumulative", 16) << "\n";
  s << std::string(78, '-') << "\n";
  std::size_t cumulative_total = 0;
  for (int t = 0; t < kNumMemoryTags; ++t) {
    const MemoryTag tag = static_cast<MemoryTag>(t);
    cumulative_total += a.tag_cumulative[t];
    s << pad(memory_tag_name(tag), 20, true) << pad(format_bytes(report.tag_bytes(tag)), 14)
      << pad(format_bytes(a.tag_peak[t]), 14) << pad(format_bytes(a.tag_at_peak[t]), 14)
      << pad(format_bytes(a.tag_cumulative[t]), 16) << "\n";
  }
  s << std::string(78, '-') << "\n";
  s << pad("total allocated", 20, true) << pad(format_bytes(stats.allocated_bytes), 14)
    << pad(format_bytes(a.peak_allocated), 14) << pad(format_bytes(a.peak_allocated), 14)
    << pad(format_bytes(cumulative_total), 16) << "\n";
  s << pad("reserved", 20, true) << pad(format_bytes(stats.reserved_bytes), 14)
    << pad(format_bytes(a.peak_reserved), 14) << pad(format_bytes(peak_event.reserved), 14)
    << pad(format_bytes(stats.cumulative_reserved_bytes), 16) << "\n";
  s << pad("cap", 20, true) << pad(format_bytes(pool.capacity()), 14) << "\n\n";

  const double hit_rate = stats.allocations == 0 ? 0.0
                                                 : static_cast<double>(stats.cache_hits) /
                                                       static_cast<double>(stats.allocations);
  s << "peak allocated during the steps: " << format_bytes(a.peak_allocated) << " ("
    << a.peak_allocated << " bytes) at " << fixed(peak_event.time_ns / 1e6, 3) << " ms, event #"
    << a.peak_index << ", micro-batch " << peak_event.micro_batch << "\n";
  s << "allocator's own peak counter:    " << format_bytes(stats.peak_allocated_bytes) << " ("
    << stats.peak_allocated_bytes << " bytes; reset after planning)\n";
  s << "allocations: " << stats.allocations << ", cache hits: " << stats.cache_hits << " ("
    << fixed(100.0 * hit_rate, 1) << "%), segments reserved: " << a.reserves
    << ", released: " << a.releases << ", OOMs: " << stats.ooms << ", re-plans: " << a.replans
    << ", micro-batches run: " << a.micro_batches << "\n";
  s << "segments now: " << stats.segments << " holding " << format_bytes(stats.reserved_bytes)
    << "; at the peak: " << at_peak.size() << " holding " << format_bytes(peak_event.reserved)
    << "\n";
  s << "fragmentation at peak: " << fixed(free_at_peak.fragmentation(), 4)
    << " (1 - largest free block " << format_bytes(free_at_peak.largest) << " / free in arena "
    << format_bytes(free_at_peak.free_bytes) << " in " << free_at_peak.free_blocks
    << " blocks)\n\n";

  s << "planner:\n";
  for (const std::string& line : info.planner) s << "  " << line << "\n";
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

void remove_quietly(const fs::path& path) {
  std::error_code ignored;
  fs::remove_all(path, ignored);
}

}  // namespace

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

void write_memory_profile(const PoolAllocator& pool, const MemoryProfileInfo& info,
                          const std::string& dir_text) {
  const fs::path dir(dir_text);
  MB_CHECK(fs::is_directory(dir), "write_memory_profile: '", dir_text,
           "' is not a folder. Fix: create it first");
  const std::string gnuplot = find_gnuplot();
  const std::vector<PoolEvent> events = pool.events();
  MB_CHECK(!events.empty(),
           "the allocator recorded no events. Fix: enable the trace (PoolOptions::trace_events)");
  // Validates the whole trace (throws when it is incomplete) and gives the map at the peak.
  replay_segments(events, events.size());
  const TraceAnalysis analysis = analyse(events, info.window_mark);
  const std::vector<SegmentSnapshot> at_peak = replay_segments(events, analysis.peak_index + 1);

  pool.write_chrome_trace((dir / "trace.json").string());
  pool.write_events_csv((dir / "events.csv").string());
  write_text(dir / "summary.txt", summary_text(pool, events, analysis, at_peak, info));

  const fs::path plot_dir = dir / "plot";
  fs::create_directories(plot_dir);
  write_timeline_data(events, plot_dir / "timeline.dat");
  write_text(plot_dir / "timeline.gp",
             timeline_script(events, info, pool.capacity(), plot_dir / "timeline.dat", dir));
  write_segment_data(at_peak, plot_dir / "segments.dat");
  const FreeBlockStats free_at_peak = free_block_stats(at_peak);
  const std::string subtitle = "allocated " + format_bytes(analysis.peak_allocated) +
                               ", reserved " + format_bytes(events[analysis.peak_index].reserved) +
                               ", free " + format_bytes(free_at_peak.free_bytes) + " in " +
                               std::to_string(free_at_peak.free_blocks) + " blocks, largest free " +
                               format_bytes(free_at_peak.largest) + ", fragmentation " +
                               fixed(free_at_peak.fragmentation(), 3);
  write_text(plot_dir / "segments.gp",
             segments_script(at_peak, subtitle, info, plot_dir / "segments.dat", dir));
  run_gnuplot(gnuplot, plot_dir / "timeline.gp", plot_dir / "gnuplot.log");
  run_gnuplot(gnuplot, plot_dir / "segments.gp", plot_dir / "gnuplot.log");
  for (const char* name : {"timeline.png", "timeline.svg", "segments.png"}) {
    std::error_code error;
    if (fs::file_size(dir / name, error) == 0 || error) {
      MB_THROW(IoError, "gnuplot wrote no ", name, " in '", dir_text,
               "'. Fix: check that gnuplot has the pngcairo and svg terminals (gnuplot-nox)");
    }
  }
}

void add_memprofile_flags(CLI::App& cmd, MemprofileArgs& a) {
  cmd.add_option("--model", a.model, "zoo model (see `microbatch models`)");
  cmd.add_option("--batch-size", a.batch_size, "samples per optimizer step (the full batch)")
      ->check(CLI::PositiveNumber);
  cmd.add_option("--micro-batch", a.micro_batch, "auto (planned from free memory) or N");
  cmd.add_option("--memory-limit", a.memory_limit,
                 "cap on the device arena, e.g. 6GiB, 512MiB (default: device free memory)");
  cmd.add_option("--device", a.device, "auto | cpu | cuda | cuda:N");
  cmd.add_option("--steps", a.steps, "training steps to trace")->check(CLI::PositiveNumber);
  cmd.add_option("--out", a.out_dir, "output folder (created; replaced if it holds a profile)")
      ->required();
  cmd.add_option("--image-size", a.image_size, "input size for synthetic data (default: model's)");
  cmd.add_option("--seed", a.seed, "seed for data and initialization");
  cmd.add_flag("--json", a.json, "one JSON object instead of text");
}

int run_memprofile(const MemprofileArgs& a, std::ostream& out) {
  // Everything that can be checked without training is checked before any folder exists.
  if (a.out_dir.empty()) {
    MB_THROW(InvalidArgument, "memprofile needs an output folder. Fix: pass --out DIR");
  }
  if (a.steps < 1) {
    MB_THROW(InvalidArgument, "--steps ", a.steps, " is not valid. Fix: use 1 or more");
  }
  if (a.batch_size < 1) {
    MB_THROW(InvalidArgument, "--batch-size ", a.batch_size,
             " is not valid. Fix: use a positive integer");
  }
  if (a.image_size < 0) {
    MB_THROW(InvalidArgument, "--image-size ", a.image_size,
             " is not valid. Fix: use a positive size, or 0 for the model's");
  }
  const ModelInfo& model_info = find_model(a.model);
  const std::int64_t micro_batch = parse_micro_batch(a.micro_batch);
  const std::size_t capacity = a.memory_limit.empty() ? 0 : parse_byte_size(a.memory_limit);
  const Device device = Device::parse(a.device);
  require_device(device);
  const fs::path target = fs::absolute(fs::path(a.out_dir)).lexically_normal();
  const fs::path target_dir = target.filename().empty() ? target.parent_path() : target;
  bool replace = false;
  if (fs::exists(target_dir)) {
    const bool empty_dir = fs::is_directory(target_dir) && fs::is_empty(target_dir);
    replace = fs::is_directory(target_dir) && fs::exists(target_dir / "summary.txt") &&
              fs::exists(target_dir / "trace.json");
    if (!empty_dir && !replace) {
      MB_THROW(InvalidArgument, "--out '", a.out_dir,
               "' exists and is not an earlier memprofile folder. Fix: choose a new folder or "
               "remove it");
    }
  }
  find_gnuplot();  // fail before training, not after

  // Data first, outside the capped arena (as `train` does).
  SyntheticOptions synthetic;
  synthetic.samples = a.batch_size;
  synthetic.channels = model_info.in_channels;
  synthetic.height = synthetic.width = a.image_size > 0 ? a.image_size : model_info.image_size;
  synthetic.num_classes = std::min<std::int64_t>(model_info.num_classes, 10);
  synthetic.segmentation = model_info.segmentation;
  synthetic.seed = a.seed;
  const Dataset data = make_synthetic(synthetic);

  PoolOptions pool_options;
  pool_options.capacity = capacity;
  pool_options.trace_events = kTraceEvents;
  auto pool = std::make_shared<PoolAllocator>(
      device.is_cpu() ? make_host_memory_resource() : make_cuda_memory_resource(device.index()),
      pool_options);

  fs::create_directories(target_dir.parent_path());
  std::string pattern = target_dir.string() + ".tmp-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    MB_THROW(IoError, "cannot create a folder next to '", target_dir.string(), "' (",
             std::strerror(errno), "). Fix: choose a writable --out");
  }
  const fs::path temporary(pattern);
  try {
    MemoryProfileInfo info;
    info.window_mark = kStepsMark;
    std::vector<std::string> log;
    std::vector<StepResult> results;
    {
      ModelConfig config;
      config.in_channels = synthetic.channels;
      config.image_size = synthetic.height;
      config.num_classes = synthetic.num_classes;
      config.seed = a.seed;
      SessionOptions session_options;
      session_options.device = device;
      session_options.allocator = pool;
      Session session(session_options, [&] { return build_model(a.model, config); });
      TrainerOptions options;
      options.micro_batch = micro_batch;
      options.seed = a.seed;
      options.log = [&](const std::string& message) { log.push_back(message); };
      Trainer& trainer = session.make_trainer(options);
      const Shape sample = data.sample_shape();
      const Shape label = model_info.segmentation ? Shape{sample[1], sample[2]} : Shape{};
      const Plan& plan = trainer.plan(a.batch_size, sample, label);
      pool->reset_peak();
      pool->mark(kStepsMark);
      for (int step = 0; step < a.steps; ++step) {
        pool->mark("step " + std::to_string(step + 1));
        results.push_back(trainer.step(data.images, data.labels, 0.01f));
      }
      const Plan& final_plan = trainer.current_plan();
      std::ostringstream title;
      title << a.model << " " << sample.to_string() << ", batch " << a.batch_size << " = ";
      std::map<std::int64_t, int> sizes;
      for (std::int64_t size : final_plan.sizes()) sizes[size] += 1;
      bool first = true;
      for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
        title << (first ? "" : " + ") << it->second << " x " << it->first;
        first = false;
      }
      title << " (" << (final_plan.automatic ? "auto" : "fixed") << "), " << device.str()
            << ", cap " << format_bytes(pool->capacity()) << ", " << a.steps << " step"
            << (a.steps == 1 ? "" : "s");
      info.title = title.str();
      info.planner.push_back("micro-batch " + std::to_string(plan.micro_batch) + " x " +
                             std::to_string(plan.count()) + " for batch " +
                             std::to_string(plan.batch_size) +
                             (plan.automatic ? " (automatic)" : " (fixed)"));
      info.planner.push_back("available " + format_bytes(plan.available_bytes) + ", margin " +
                             format_bytes(plan.margin_bytes) + ", fixed " +
                             format_bytes(plan.profile.fixed_bytes) + ", bytes/sample " +
                             format_bytes(plan.profile.bytes_per_sample) + " measured, " +
                             format_bytes(plan.profile.analytic_bytes_per_sample) + " analytic");
      if (!plan.explanation.empty()) info.planner.push_back(plan.explanation);
      for (std::size_t i = 0; i < results.size(); ++i) {
        std::ostringstream line;
        line << "step " << (i + 1) << ": loss " << fixed(results[i].loss, 4) << ", "
             << results[i].micro_batches.size() << " micro-batches, " << results[i].replans
             << " re-plans, " << fixed(results[i].seconds * 1e3, 1) << " ms";
        info.planner.push_back(line.str());
      }
      for (const std::string& message : log) info.planner.push_back("log: " + message);
      write_memory_profile(*pool, info, temporary.string());
      trainer.model().clear_cache();
    }
    // Into place: an earlier profile is moved aside first and removed after.
    fs::path aside;
    if (replace) {
      aside = target_dir.string() + ".old-" + temporary.string().substr(pattern.size() - 6);
      fs::rename(target_dir, aside);
    } else if (fs::exists(target_dir)) {
      fs::remove(target_dir);  // empty
    }
    fs::rename(temporary, target_dir);
    if (!aside.empty()) remove_quietly(aside);

    const PoolStats stats = pool->stats();
    if (a.json) {
      out << nlohmann::json{{"event", "memprofile"},
                            {"out", target_dir.string()},
                            {"title", info.title},
                            {"peak_allocated_bytes", stats.peak_allocated_bytes},
                            {"peak_reserved_bytes", stats.peak_reserved_bytes},
                            {"capacity_bytes", pool->capacity()},
                            {"files",
                             {"trace.json", "events.csv", "timeline.png", "timeline.svg",
                              "segments.png", "summary.txt"}}}
                 .dump()
          << "\n";
    } else {
      out << "memprofile: " << info.title << "\n"
          << "peak allocated " << format_bytes(stats.peak_allocated_bytes) << ", peak reserved "
          << format_bytes(stats.peak_reserved_bytes) << "\n"
          << "wrote " << target_dir.string()
          << "/{trace.json, events.csv, timeline.png, timeline.svg, segments.png, summary.txt}"
          << " (trace.json opens at ui.perfetto.dev)\n";
    }
  } catch (...) {
    remove_quietly(temporary);
    throw;
  }
  return 0;
}

}  // namespace mb
