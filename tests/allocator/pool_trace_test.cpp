// PoolAllocator's event ring and its exports (label allocator): the Chrome trace parses and
// its last counters equal the allocator's stats, also after the ring has wrapped; the CSV
// has one row per event; IO failures throw mb::IoError naming the path.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>
#include <nlohmann/json.hpp>

#include "allocator/pool_allocator.h"
#include "runtime/error.h"

namespace mb {
namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * 1024;

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/pool_trace_" + std::to_string(getpid()) + "_" + name;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The last value of every counter series in the trace.
std::map<std::string, nlohmann::json> last_counters(const nlohmann::json& trace) {
  std::map<std::string, nlohmann::json> last;
  for (const auto& event : trace.at("traceEvents")) {
    if (event.at("ph") == "C") last[event.at("name").get<std::string>()] = event.at("args");
  }
  return last;
}

void expect_counters_match(const nlohmann::json& trace, const PoolAllocator& pool) {
  std::map<std::string, nlohmann::json> last = last_counters(trace);
  FreeArenaReport report = pool.report();
  ASSERT_EQ(last.count("reserved"), 1u);
  EXPECT_EQ(last["reserved"].at("bytes").get<std::size_t>(), pool.stats().reserved_bytes);
  EXPECT_EQ(last["free in arena"].at("bytes").get<std::size_t>(), report.free_in_arena);
  EXPECT_EQ(last["largest free block"].at("bytes").get<std::size_t>(), report.largest_free_block);
  std::size_t sum = 0;
  for (int tag = 0; tag < kNumMemoryTags; ++tag) {
    const char* name = memory_tag_name(static_cast<MemoryTag>(tag));
    std::size_t value = last["allocated by tag"].at(name).get<std::size_t>();
    EXPECT_EQ(value, report.allocated_by_tag[tag]) << name;
    sum += value;
  }
  EXPECT_EQ(sum, pool.stats().allocated_bytes);
}

TEST(PoolTrace, ChromeTraceAndCsvMatchTheStats) {
  PoolOptions options;
  options.capacity = 32 * kMiB;
  PoolAllocator pool(make_host_memory_resource(), options);
  // A small segment exists before the parameters' large one, so the activations stay in the
  // small pool (not lent the large segment's free space) and the OOM can release it.
  pool.deallocate(pool.allocate(kKiB, MemoryTag::Other));
  void* params = pool.allocate(3 * kMiB, MemoryTag::Param);
  pool.mark("micro-batch 0 start");
  pool.set_micro_batch(0);
  std::vector<void*> activations;
  for (int i = 0; i < 5; ++i)
    activations.push_back(pool.allocate((i + 1) * 100 * kKiB, MemoryTag::Activation));
  void* grads = pool.allocate(3 * kMiB, MemoryTag::Grad);
  for (auto it = activations.rbegin(); it != activations.rend(); ++it) pool.deallocate(*it);
  EXPECT_THROW(pool.allocate(64 * kMiB, MemoryTag::Workspace), OutOfMemory);
  pool.set_micro_batch(-1);
  pool.mark("optimizer \"update\", fused");

  std::vector<PoolEvent> events = pool.events();
  PoolStats stats = pool.stats();
  std::size_t allocs = 0, frees = 0, reserves = 0, marks = 0, ooms = 0;
  for (const PoolEvent& event : events) {
    allocs += event.kind == PoolEventKind::Alloc;
    frees += event.kind == PoolEventKind::Free;
    reserves += event.kind == PoolEventKind::Reserve;
    marks += event.kind == PoolEventKind::Mark;
    ooms += event.kind == PoolEventKind::Oom;
  }
  EXPECT_EQ(allocs, 8u);
  EXPECT_EQ(frees, 6u);
  EXPECT_EQ(stats.lent_blocks, 0u);
  // The OOM released the cached small segment (whole free) before giving up.
  EXPECT_EQ(stats.releases, 1u);
  EXPECT_EQ(reserves, stats.segments + stats.releases);
  EXPECT_EQ(marks, 2u);
  EXPECT_EQ(ooms, 1u);
  for (std::size_t i = 1; i < events.size(); ++i) {
    EXPECT_LE(events[i - 1].time_ns, events[i].time_ns);
  }
  // The activations carry their micro-batch; the parameters do not.
  EXPECT_EQ(events[1].kind, PoolEventKind::Alloc);
  EXPECT_EQ(events[1].micro_batch, -1);
  EXPECT_EQ(events.back().name, "optimizer \"update\", fused");
  EXPECT_EQ(events.back().allocated, stats.allocated_bytes);

  std::string json_path = temp_path("trace.json");
  pool.write_chrome_trace(json_path);
  nlohmann::json trace = read_json(json_path);
  expect_counters_match(trace, pool);
  std::vector<std::string> instants;
  for (const auto& event : trace.at("traceEvents")) {
    if (event.at("ph") == "i") instants.push_back(event.at("name").get<std::string>());
  }
  ASSERT_EQ(instants.size(), 3u);
  EXPECT_EQ(instants[0], "micro-batch 0 start");
  EXPECT_EQ(instants[1], "OOM 64.00 MiB");
  EXPECT_EQ(instants[2], "optimizer \"update\", fused");

  std::string csv_path = temp_path("events.csv");
  pool.write_events_csv(csv_path);
  std::vector<std::string> lines = read_lines(csv_path);
  ASSERT_EQ(lines.size(), events.size() + 1);
  EXPECT_EQ(lines[0].rfind("time_ns,kind,tag,bytes,segment,offset,micro_batch", 0), 0u);
  EXPECT_NE(lines[1].find(",reserve,"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find(",alloc,other,1024,"), std::string::npos) << lines[2];
  EXPECT_NE(lines[4].find(",reserve,"), std::string::npos) << lines[4];
  EXPECT_NE(lines[5].find(",alloc,param,3145728,"), std::string::npos) << lines[5];
  EXPECT_NE(lines.back().find("\"optimizer \"\"update\"\", fused\""), std::string::npos);
  std::remove(json_path.c_str());
  std::remove(csv_path.c_str());
  pool.deallocate(params);
  pool.deallocate(grads);
}

TEST(PoolTrace, WrappedRingKeepsCountersExact) {
  PoolOptions options;
  options.trace_events = 64;
  PoolAllocator pool(make_host_memory_resource(), options);
  // Allocated long before the window: its alloc event is overwritten, its bytes must not be.
  void* params = pool.allocate(5 * kKiB, MemoryTag::Param);
  void* optimizer = pool.allocate(7 * kKiB, MemoryTag::Optimizer);
  for (int i = 0; i < 1000; ++i) {
    pool.set_micro_batch(i % 4);
    pool.deallocate(pool.allocate((i % 13 + 1) * kKiB, MemoryTag::Activation));
  }
  void* kept = pool.allocate(9 * kKiB, MemoryTag::Activation);
  std::vector<PoolEvent> events = pool.events();
  ASSERT_EQ(events.size(), 64u);
  EXPECT_EQ(events.back().kind, PoolEventKind::Alloc);
  EXPECT_EQ(events.back().micro_batch, 3);
  std::string path = temp_path("wrapped.json");
  pool.write_chrome_trace(path);
  nlohmann::json trace = read_json(path);
  expect_counters_match(trace, pool);
  std::map<std::string, nlohmann::json> last = last_counters(trace);
  EXPECT_EQ(last["allocated by tag"].at("param").get<std::size_t>(), 5 * kKiB);
  EXPECT_EQ(last["allocated by tag"].at("optimizer").get<std::size_t>(), 7 * kKiB);
  std::remove(path.c_str());
  for (void* p : {params, optimizer, kept}) pool.deallocate(p);
}

TEST(PoolTrace, TracingCanBeTurnedOff) {
  PoolOptions options;
  options.trace_events = 0;
  PoolAllocator pool(make_host_memory_resource(), options);
  pool.mark("nothing");
  pool.deallocate(pool.allocate(kKiB, MemoryTag::Other));
  EXPECT_TRUE(pool.events().empty());
  EXPECT_EQ(pool.stats().allocations, 1u);
}

TEST(PoolTrace, IoFailuresNameThePath) {
  PoolAllocator pool(make_host_memory_resource());
  pool.mark("x");
  const std::string path = "/nonexistent-directory-for-microbatch/trace.json";
  try {
    pool.write_chrome_trace(path);
    FAIL() << "expected IoError";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent-directory-for-microbatch/"),
              std::string::npos);
  }
  EXPECT_THROW(pool.write_events_csv(path), IoError);
}

TEST(PoolTrace, WriteReplacesAnExistingFileWhole) {
  PoolAllocator pool(make_host_memory_resource());
  std::string path = temp_path("replace.csv");
  {
    std::ofstream old(path);
    old << std::string(100000, 'x');
  }
  pool.mark("only");
  pool.write_events_csv(path);
  std::vector<std::string> lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[1].find("\"only\""), std::string::npos);
  std::ifstream temporary(path + ".tmp");
  EXPECT_FALSE(temporary.good()) << "the temporary file must be renamed away";
  std::remove(path.c_str());
}

}  // namespace
}  // namespace mb
