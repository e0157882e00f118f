// `microbatch memprofile`: the Chrome-trace counters equal the allocator's stats at the same
// events, events.csv replays to the allocator's own peak, the pictures are real PNG/SVG files,
// and bad input leaves no folder behind. The segment-map replay and the peak analysis are
// tested in tests/allocator/trace_analysis_test.cpp.
#include "tools/memprofile.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/error.h"
#include "runtime/memory_resource.h"
#include "tests/allocator/pool_exercise.h"

namespace mb {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// A fresh, empty scratch folder per test.
fs::path scratch(const std::string& name) {
  fs::path dir =
      fs::temp_directory_path() / ("mb_memprofile_test_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Folders in `parent` (to find leftovers such as out.tmp-XXXXXX).
std::vector<std::string> entries(const fs::path& parent) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(parent)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

void expect_png(const fs::path& path) {
  const std::string bytes = read_file(path);
  ASSERT_GE(bytes.size(), 24u) << path;
  const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(static_cast<unsigned char>(bytes[i]), signature[i]) << path << " byte " << i;
  }
  EXPECT_EQ(bytes.substr(12, 4), "IHDR") << path;
  auto be32 = [&](int at) {
    std::uint32_t value = 0;
    for (int i = 0; i < 4; ++i) value = (value << 8) | static_cast<unsigned char>(bytes[at + i]);
    return value;
  };
  EXPECT_GT(be32(16), 100u) << "width of " << path;
  EXPECT_GT(be32(20), 100u) << "height of " << path;
}

TEST(Memprofile, WrappedTraceIsRefusedBeforeAnyFileIsWritten) {
  PoolOptions options;
  options.trace_events = 8;  // far fewer than the sequence makes
  PoolAllocator pool(make_host_memory_resource(), options);
  testing::exercise(pool, [] {});
  const fs::path dir = scratch("wrapped");
  MemoryProfileInfo info;
  info.title = "wrapped ring";
  EXPECT_THROW(write_memory_profile(pool, info, dir.string()), Error);
  EXPECT_TRUE(entries(dir).empty()) << "wrote " << entries(dir).front();
  fs::remove_all(dir);
}

// Counter values of one Chrome-trace counter event, by counter name.
struct CounterGroup {
  std::array<std::size_t, kNumMemoryTags> by_tag{};
  std::size_t reserved = 0, free_in_arena = 0, largest_free = 0;
};

TEST(Memprofile, TraceCountersMatchAllocatorStatsAtTheSameEvents) {
  PoolOptions options;
  options.capacity = std::size_t{256} << 20;
  PoolAllocator pool(make_host_memory_resource(), options);
  struct Truth {
    std::size_t events;
    FreeArenaReport report;
  };
  std::vector<Truth> truths;
  testing::exercise(pool, [&] { truths.push_back({pool.events().size(), pool.report()}); });

  const fs::path dir = scratch("counters");
  MemoryProfileInfo info;
  info.title = "hand-made sequence";
  info.planner = {"no planner"};
  write_memory_profile(pool, info, dir.string());

  // Group the counters: write_chrome_trace emits four per counter event, in order.
  const nlohmann::json trace = nlohmann::json::parse(read_file(dir / "trace.json"));
  std::vector<CounterGroup> groups;
  std::vector<std::string> instants;
  for (const nlohmann::json& event : trace["traceEvents"]) {
    const std::string phase = event["ph"];
    const std::string name = event["name"];
    if (phase == "i") instants.push_back(name);
    if (phase != "C") continue;
    if (name == "allocated by tag") {
      groups.emplace_back();
      for (int t = 0; t < kNumMemoryTags; ++t) {
        groups.back().by_tag[t] = event["args"][memory_tag_name(static_cast<MemoryTag>(t))];
      }
    } else if (name == "reserved") {
      groups.back().reserved = event["args"]["bytes"];
    } else if (name == "free in arena") {
      groups.back().free_in_arena = event["args"]["bytes"];
    } else if (name == "largest free block") {
      groups.back().largest_free = event["args"]["bytes"];
    }
  }
  EXPECT_EQ(instants, (std::vector<std::string>{"round 0", "round 1", "round 2"}));

  // Counter group k belongs to the k-th event that is not a mark.
  const std::vector<PoolEvent> events = pool.events();
  std::vector<std::size_t> groups_before(events.size() + 1, 0);
  for (std::size_t i = 0; i < events.size(); ++i) {
    const bool counter =
        events[i].kind != PoolEventKind::Mark && events[i].kind != PoolEventKind::Oom;
    groups_before[i + 1] = groups_before[i] + (counter ? 1 : 0);
  }
  ASSERT_EQ(groups.size(), groups_before.back());
  for (const Truth& truth : truths) {
    const std::size_t n = groups_before[truth.events];
    ASSERT_GT(n, 0u);
    const CounterGroup& group = groups[n - 1];
    for (int t = 0; t < kNumMemoryTags; ++t) {
      EXPECT_EQ(group.by_tag[t], truth.report.allocated_by_tag[t])
          << memory_tag_name(static_cast<MemoryTag>(t)) << " after " << truth.events;
    }
    EXPECT_EQ(group.reserved, truth.report.reserved) << "after " << truth.events;
    EXPECT_EQ(group.free_in_arena, truth.report.free_in_arena) << "after " << truth.events;
    EXPECT_EQ(group.largest_free, truth.report.largest_free_block) << "after " << truth.events;
  }
  expect_png(dir / "timeline.png");
  expect_png(dir / "segments.png");
  fs::remove_all(dir);
}

// events.csv: allocated replayed from the alloc/free rows, and its maximum after `mark`.
std::size_t csv_replayed_peak(const fs::path& path, const std::string& mark, bool* saw_mark) {
  std::ifstream file(path);
  std::string line;
  std::getline(file, line);
  EXPECT_EQ(line.rfind("time_ns,kind,tag,bytes,segment,offset", 0), 0u) << line;
  long long allocated = 0;
  std::size_t peak = 0;
  *saw_mark = false;
  while (std::getline(file, line)) {
    std::vector<std::string> fields;
    std::stringstream row(line);
    std::string field;
    for (int i = 0; i < 11 && std::getline(row, field, ','); ++i) fields.push_back(field);
    std::getline(row, field);  // the quoted name (may hold commas)
    EXPECT_EQ(fields.size(), 11u) << line;
    const long long bytes = std::stoll(fields[3]);
    if (fields[1] == "alloc") allocated += bytes;
    if (fields[1] == "free") allocated -= bytes;
    EXPECT_GE(allocated, 0);
    EXPECT_EQ(static_cast<std::size_t>(allocated), std::stoull(fields[7])) << line;
    if (field == "\"" + mark + "\"") {
      *saw_mark = true;
      peak = static_cast<std::size_t>(allocated);
    }
    if (*saw_mark) peak = std::max(peak, static_cast<std::size_t>(allocated));
  }
  return peak;
}

// The number in "(N bytes" after `label` in summary.txt.
std::size_t summary_bytes(const std::string& summary, const std::string& label) {
  const std::size_t at = summary.find(label);
  EXPECT_NE(at, std::string::npos) << label << " missing in\n" << summary;
  if (at == std::string::npos) return 0;
  const std::size_t open = summary.find('(', at);
  return std::stoull(summary.substr(open + 1));
}

void expect_complete_profile(const fs::path& dir, int steps, std::int64_t micro_batches) {
  for (const char* name : {"trace.json", "events.csv", "timeline.png", "timeline.svg",
                           "segments.png", "summary.txt"}) {
    EXPECT_TRUE(fs::exists(dir / name)) << name;
  }
  expect_png(dir / "timeline.png");
  expect_png(dir / "segments.png");
  const std::string svg = read_file(dir / "timeline.svg");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("activation"), std::string::npos) << "legend names the tags";

  const nlohmann::json trace = nlohmann::json::parse(read_file(dir / "trace.json"));
  int updates = 0, starts = 0;
  for (const nlohmann::json& event : trace["traceEvents"]) {
    if (event["ph"] != "i") continue;
    const std::string name = event["name"];
    updates += name == "optimizer update" ? 1 : 0;
    starts += name.rfind("micro-batch ", 0) == 0 && name.find(" start") != std::string::npos;
  }
  EXPECT_EQ(updates, steps);
  // The probes run micro-batches too; the steps add theirs.
  EXPECT_GE(starts, steps * micro_batches);

  const std::string summary = read_file(dir / "summary.txt");
  bool saw_mark = false;
  const std::size_t replayed =
      csv_replayed_peak(dir / "events.csv", "memprofile: training steps", &saw_mark);
  EXPECT_TRUE(saw_mark);
  EXPECT_EQ(replayed, summary_bytes(summary, "allocator's own peak counter"));
  EXPECT_EQ(replayed, summary_bytes(summary, "peak allocated during the steps"));
  EXPECT_GT(replayed, 0u);
  EXPECT_NE(summary.find("fragmentation at peak"), std::string::npos);
  EXPECT_NE(summary.find("segment map at the peak"), std::string::npos);
  EXPECT_NE(summary.find("bytes/sample"), std::string::npos);
  EXPECT_NE(summary.find("cache hits"), std::string::npos);
}

TEST(Memprofile, LeNet5OnCpuWritesACompleteProfile) {
  const fs::path parent = scratch("lenet");
  MemprofileArgs args;
  args.model = "lenet5";
  args.batch_size = 16;
  args.micro_batch = "6";  // uneven: 6 + 6 + 4
  args.memory_limit = "64MiB";
  args.device = "cpu";
  args.steps = 2;
  args.out_dir = (parent / "out").string();
  std::ostringstream out;
  ASSERT_EQ(run_memprofile(args, out), 0);
  EXPECT_NE(out.str().find("peak allocated"), std::string::npos) << out.str();
  expect_complete_profile(parent / "out", 2, 3);
  EXPECT_NE(read_file(parent / "out" / "summary.txt").find("2 x 6 + 1 x 4"), std::string::npos);
  EXPECT_EQ(entries(parent), std::vector<std::string>{"out"}) << "no temporary folder left";

  // Running again replaces the earlier profile.
  args.steps = 1;
  args.json = true;
  std::ostringstream again;
  ASSERT_EQ(run_memprofile(args, again), 0);
  const nlohmann::json line = nlohmann::json::parse(again.str());
  EXPECT_EQ(line["event"], "memprofile");
  expect_complete_profile(parent / "out", 1, 3);
  EXPECT_EQ(entries(parent), std::vector<std::string>{"out"});
  fs::remove_all(parent);
}

TEST(Memprofile, ResNet18AtSmallSizeWithAutomaticPlan) {
  const fs::path parent = scratch("resnet");
  MemprofileArgs args;
  args.model = "resnet18";
  args.batch_size = 16;
  args.image_size = 32;
  args.memory_limit = "256MiB";
  args.device = "cpu";
  args.steps = 1;
  args.out_dir = (parent / "out").string();
  std::ostringstream out;
  ASSERT_EQ(run_memprofile(args, out), 0) << out.str();
  expect_complete_profile(parent / "out", 1, 1);
  const std::string summary = read_file(parent / "out" / "summary.txt");
  EXPECT_NE(summary.find("(auto)"), std::string::npos);
  fs::remove_all(parent);
}

// Each case: the call throws `Expected` with `phrase` in the message and leaves nothing.
template <typename Expected>
void expect_clean_failure(MemprofileArgs args, const std::string& phrase) {
  const fs::path parent = scratch("bad");
  args.out_dir = (parent / "out").string();
  std::ostringstream out;
  try {
    run_memprofile(args, out);
    ADD_FAILURE() << "no error for phrase '" << phrase << "'";
  } catch (const Expected& e) {
    EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
  }
  EXPECT_TRUE(entries(parent).empty()) << "left behind: " << entries(parent).front();
  fs::remove_all(parent);
}

TEST(Memprofile, BadArgumentsNameTheFixAndLeaveNoFolder) {
  MemprofileArgs base;
  base.model = "lenet5";
  base.batch_size = 8;
  base.device = "cpu";
  base.steps = 1;

  MemprofileArgs model = base;
  model.model = "alexnet";
  expect_clean_failure<InvalidArgument>(model, "resnet18");
  MemprofileArgs micro = base;
  micro.micro_batch = "lots";
  expect_clean_failure<InvalidArgument>(micro, "--micro-batch 'lots'");
  MemprofileArgs limit = base;
  limit.memory_limit = "6 potatoes";
  expect_clean_failure<InvalidArgument>(limit, "6 potatoes");
  MemprofileArgs steps = base;
  steps.steps = 0;
  expect_clean_failure<InvalidArgument>(steps, "--steps");
  MemprofileArgs device = base;
  device.device = "tpu";
  expect_clean_failure<InvalidArgument>(device, "cuda:N");
  // Fails during the run (after the temporary folder exists): the cap is too small.
  MemprofileArgs tiny = base;
  tiny.memory_limit = "64KiB";
  expect_clean_failure<OutOfMemory>(tiny, "");

  MemprofileArgs no_out = base;
  std::ostringstream out;
  EXPECT_THROW(run_memprofile(no_out, out), InvalidArgument);
}

TEST(Memprofile, RefusesToOverwriteAFolderThatIsNotAProfile) {
  const fs::path parent = scratch("occupied");
  fs::create_directories(parent / "out");
  std::ofstream(parent / "out" / "notes.txt") << "mine";
  MemprofileArgs args;
  args.batch_size = 8;
  args.device = "cpu";
  args.steps = 1;
  args.out_dir = (parent / "out").string();
  std::ostringstream out;
  EXPECT_THROW(run_memprofile(args, out), InvalidArgument);
  EXPECT_EQ(read_file(parent / "out" / "notes.txt"), "mine");
  EXPECT_EQ(entries(parent), std::vector<std::string>{"out"});
  fs::remove_all(parent);
}

TEST(Memprofile, MissingGnuplotNamesThePackage) {
  const char* previous = std::getenv("MB_GNUPLOT");
  const std::string saved = previous != nullptr ? previous : "";
  setenv("MB_GNUPLOT", "/nonexistent/gnuplot", 1);
  MemprofileArgs args;
  args.batch_size = 8;
  args.device = "cpu";
  args.steps = 1;
  expect_clean_failure<IoError>(args, "apt-get install gnuplot-nox");
  if (previous != nullptr) {
    setenv("MB_GNUPLOT", saved.c_str(), 1);
  } else {
    unsetenv("MB_GNUPLOT");
  }
}

}  // namespace
}  // namespace mb
