// The memory pictures: gnuplot data and scripts as text, and gnuplot run via posix_spawn
// (no shell, so no quoting of paths for one). See tools/plot.h.
#include "tools/plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "allocator/trace_analysis.h"
#include "runtime/error.h"
#include "runtime/memory_report.h"
#include "tools/format.h"

extern char** environ;

namespace mb {
namespace {

namespace fs = std::filesystem;

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

bool executable(const std::string& path) {
  return !path.empty() && access(path.c_str(), X_OK) == 0 && !fs::is_directory(path);
}

}  // namespace

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

std::string timeline_data(const std::vector<PoolEvent>& events) {
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
  return out.str();
}

std::string timeline_script(const std::vector<PoolEvent>& events, const std::string& title,
                            std::size_t capacity, const fs::path& data, const fs::path& out_dir) {
  std::array<bool, kNumMemoryTags> used{};
  double end_ms = 0.0;
  for (const PoolEvent& event : events) {
    if (event.kind == PoolEventKind::Alloc) used[static_cast<int>(event.tag)] = true;
    end_ms = std::max(end_ms, static_cast<double>(event.time_ns) / 1e6);
  }
  std::ostringstream s;
  s << "set title " << gp_quote(title) << " noenhanced\n"
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
    << "set output " << gp_quote((out_dir / "timeline.png").string()) << "\n"
    << plot.str() << "set terminal svg size 1100,520 font 'sans,9' dynamic\n"
    << "set output " << gp_quote((out_dir / "timeline.svg").string()) << "\n"
    << plot.str() << "unset output\n";
  return s.str();
}

std::string segment_data(const std::vector<SegmentSnapshot>& segments) {
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
  return out.str();
}

std::string segments_script(const std::vector<SegmentSnapshot>& segments, const std::string& title,
                            std::size_t peak_allocated, std::size_t peak_reserved,
                            const fs::path& data, const fs::path& out_dir) {
  const FreeBlockStats free_blocks = free_block_stats(segments);
  const std::string subtitle = "allocated " + format_bytes(peak_allocated) + ", reserved " +
                               format_bytes(peak_reserved) + ", free " +
                               format_bytes(free_blocks.free_bytes) + " in " +
                               std::to_string(free_blocks.free_blocks) + " blocks, largest free " +
                               format_bytes(free_blocks.largest) + ", fragmentation " +
                               fixed(free_blocks.fragmentation(), 3);
  const std::size_t rows = std::max<std::size_t>(segments.size(), 1);
  const int height = static_cast<int>(std::min<std::size_t>(200 + 22 * rows, 2400));
  std::ostringstream s;
  s << "set terminal pngcairo size 1100," << height << " font 'sans,9'\n"
    << "set output " << gp_quote((out_dir / "segments.png").string()) << "\n"
    << "set title " << gp_double_quote("segment map at the peak: " + title) << " . \"\\n\" . "
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

}  // namespace mb
