// PoolAllocator's trace export: the event ring as Chrome-trace JSON (open in Perfetto or
// chrome://tracing) and as CSV. Both are written to a temporary file and renamed.
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "allocator/pool_allocator.h"
#include "runtime/error.h"

namespace mb {
namespace {

// Writes `text` to `path` via `path`.tmp and a rename, so readers never see a partial file.
void write_atomically(const std::string& path, const std::string& text) {
  std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) {
      MB_THROW(IoError, "cannot open '", temporary,
               "' for writing. Fix: check that the directory exists and is writable");
    }
    out << text;
    out.flush();
    if (!out) {
      std::remove(temporary.c_str());
      MB_THROW(IoError, "writing '", temporary,
               "' failed (disk full?). Fix: free space or "
               "choose another path");
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    MB_THROW(IoError, "cannot rename '", temporary, "' to '", path,
             "'. Fix: check that the target is a writable file path");
  }
}

double to_microseconds(std::int64_t ns) {
  return static_cast<double>(ns) / 1000.0;
}

}  // namespace

void PoolAllocator::write_chrome_trace(const std::string& path) const {
  std::vector<PoolEvent> events;
  std::array<std::size_t, kNumMemoryTags> by_tag{};
  std::string resource_name = resource_->name();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    events = events_locked();
    by_tag = ring_base_by_tag_;
  }
  nlohmann::json trace_events = nlohmann::json::array();
  const std::string process = "PoolAllocator(" + resource_name + ")";
  trace_events.push_back({{"name", "process_name"},
                          {"ph", "M"},
                          {"pid", 0},
                          {"tid", 0},
                          {"args", {{"name", process}}}});
  auto counter = [&](const char* name, double ts, nlohmann::json args) {
    trace_events.push_back(
        {{"name", name}, {"ph", "C"}, {"ts", ts}, {"pid", 0}, {"tid", 0}, {"args", args}});
  };
  for (const PoolEvent& event : events) {
    double ts = to_microseconds(event.time_ns);
    if (event.kind == PoolEventKind::Alloc || event.kind == PoolEventKind::Free) {
      by_tag[static_cast<int>(event.tag)] = event.tag_allocated;
    }
    if (event.kind == PoolEventKind::Mark || event.kind == PoolEventKind::Oom) {
      nlohmann::json args = {{"micro_batch", event.micro_batch},
                             {"allocated", event.allocated},
                             {"reserved", event.reserved}};
      std::string name = event.name;
      if (event.kind == PoolEventKind::Oom) {
        name = "OOM " + format_bytes(event.bytes);
        args["requested"] = event.bytes;
        args["tag"] = memory_tag_name(event.tag);
      }
      trace_events.push_back({{"name", name},
                              {"ph", "i"},
                              {"s", "g"},
                              {"ts", ts},
                              {"pid", 0},
                              {"tid", 0},
                              {"args", args}});
      continue;
    }
    nlohmann::json tags = nlohmann::json::object();
    for (int tag = 0; tag < kNumMemoryTags; ++tag) {
      tags[memory_tag_name(static_cast<MemoryTag>(tag))] = by_tag[tag];
    }
    counter("allocated by tag", ts, tags);
    counter("reserved", ts, {{"bytes", event.reserved}});
    counter("free in arena", ts, {{"bytes", event.reserved - event.allocated}});
    counter("largest free block", ts, {{"bytes", event.largest_free_block}});
  }
  nlohmann::json document = {{"traceEvents", trace_events}, {"displayTimeUnit", "ms"}};
  write_atomically(path, document.dump());
}

void PoolAllocator::write_events_csv(const std::string& path) const {
  std::vector<PoolEvent> events = this->events();
  std::ostringstream out;
  out << "time_ns,kind,tag,bytes,segment,offset,micro_batch,allocated,reserved,free_in_arena,"
         "largest_free_block,name\n";
  for (const PoolEvent& event : events) {
    std::string name = event.name;
    // CSV quoting: double the quotes inside a quoted field.
    std::string quoted = "\"";
    for (char c : name) quoted += (c == '"') ? std::string("\"\"") : std::string(1, c);
    quoted += "\"";
    out << event.time_ns << ',' << pool_event_kind_name(event.kind) << ','
        << memory_tag_name(event.tag) << ',' << event.bytes << ',' << event.segment_id << ','
        << event.offset << ',' << event.micro_batch << ',' << event.allocated << ','
        << event.reserved << ',' << (event.reserved - event.allocated) << ','
        << event.largest_free_block << ',' << quoted << '\n';
  }
  write_atomically(path, out.str());
}

}  // namespace mb
