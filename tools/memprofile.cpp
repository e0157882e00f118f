// `microbatch memprofile`: the command-line glue. Checks the arguments, runs a few training
// steps in an engine Session under a traced, capped PoolAllocator, and writes the profile into
// a temporary folder that is renamed into place. The trace is read back by
// allocator/trace_analysis.h, the pictures are drawn by tools/plot.h and summary.txt is
// rendered by tools/memory_summary.h. See tools/memprofile.h.
#include "tools/memprofile.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "allocator/byte_size.h"
#include "allocator/trace_analysis.h"
#include "data/dataset.h"
#include "engine/session.h"
#include "engine/trainer.h"
#include "models/zoo.h"
#include "runtime/allocator_registry.h"
#include "runtime/error.h"
#include "runtime/memory_resource.h"
#include "tools/flags.h"
#include "tools/format.h"
#include "tools/memory_summary.h"
#include "tools/plot.h"

namespace mb {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStepsMark = "memprofile: training steps";
// Events the trace can hold. The ring grows as events arrive, so a short run costs little.
constexpr std::size_t kTraceEvents = std::size_t{1} << 21;

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

void remove_quietly(const fs::path& path) {
  std::error_code ignored;
  fs::remove_all(path, ignored);
}

// "lenet5 [1, 28, 28], batch 16 = 2 x 6 + 1 x 4 (fixed), cpu, cap 64.00 MiB, 2 steps": the
// micro-batch sizes of the plan the steps ended with, largest first.
std::string profile_title(const MemprofileArgs& a, const Shape& sample, const Plan& final_plan,
                          const Device& device, std::size_t capacity) {
  std::ostringstream title;
  title << a.model << " " << sample.to_string() << ", batch " << a.batch_size << " = ";
  std::map<std::int64_t, int> sizes;
  for (std::int64_t size : final_plan.sizes()) sizes[size] += 1;
  bool first = true;
  for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
    title << (first ? "" : " + ") << it->second << " x " << it->first;
    first = false;
  }
  title << " (" << (final_plan.automatic ? "auto" : "fixed") << "), " << device.str() << ", cap "
        << format_bytes(capacity) << ", " << a.steps << " step" << (a.steps == 1 ? "" : "s");
  return title.str();
}

// The planner's numbers for summary.txt: the first plan, one line per step, the trainer's log.
std::vector<std::string> planner_lines(const Plan& plan, const std::vector<StepResult>& results,
                                       const std::vector<std::string>& log) {
  std::vector<std::string> lines;
  lines.push_back("micro-batch " + std::to_string(plan.micro_batch) + " x " +
                  std::to_string(plan.count()) + " for batch " + std::to_string(plan.batch_size) +
                  (plan.automatic ? " (automatic)" : " (fixed)"));
  lines.push_back("available " + format_bytes(plan.available_bytes) + ", margin " +
                  format_bytes(plan.margin_bytes) + ", fixed " +
                  format_bytes(plan.profile.fixed_bytes) + ", bytes/sample " +
                  format_bytes(plan.profile.bytes_per_sample) + " measured, " +
                  format_bytes(plan.profile.analytic_bytes_per_sample) + " analytic");
  if (!plan.explanation.empty()) lines.push_back(plan.explanation);
  for (std::size_t i = 0; i < results.size(); ++i) {
    std::ostringstream line;
    line << "step " << (i + 1) << ": loss " << fixed(results[i].loss, 4) << ", "
         << results[i].micro_batches.size() << " micro-batches, " << results[i].replans
         << " re-plans, " << fixed(results[i].seconds * 1e3, 1) << " ms";
    lines.push_back(line.str());
  }
  for (const std::string& message : log) lines.push_back("log: " + message);
  return lines;
}

// Renames the finished `temporary` folder to `target_dir`. An earlier profile there
// (`replace`) is moved aside to target_dir.old-`suffix` first and removed after; an empty
// folder there is removed.
void move_into_place(const fs::path& temporary, const fs::path& target_dir, bool replace,
                     const std::string& suffix) {
  fs::path aside;
  if (replace) {
    aside = target_dir.string() + ".old-" + suffix;
    fs::rename(target_dir, aside);
  } else if (fs::exists(target_dir)) {
    fs::remove(target_dir);  // empty
  }
  fs::rename(temporary, target_dir);
  if (!aside.empty()) remove_quietly(aside);
}

// What the command prints: one JSON object with --json, else three lines.
void print_result(const PoolAllocator& pool, const std::string& title, const fs::path& target_dir,
                  bool json, std::ostream& out) {
  const PoolStats stats = pool.stats();
  if (json) {
    out << nlohmann::json{{"event", "memprofile"},
                          {"out", target_dir.string()},
                          {"title", title},
                          {"peak_allocated_bytes", stats.peak_allocated_bytes},
                          {"peak_reserved_bytes", stats.peak_reserved_bytes},
                          {"capacity_bytes", pool.capacity()},
                          {"files",
                           {"trace.json", "events.csv", "timeline.png", "timeline.svg",
                            "segments.png", "summary.txt"}}}
               .dump()
        << "\n";
  } else {
    out << "memprofile: " << title << "\n"
        << "peak allocated " << format_bytes(stats.peak_allocated_bytes) << ", peak reserved "
        << format_bytes(stats.peak_reserved_bytes) << "\n"
        << "wrote " << target_dir.string()
        << "/{trace.json, events.csv, timeline.png, timeline.svg, segments.png, summary.txt}"
        << " (trace.json opens at ui.perfetto.dev)\n";
  }
}

}  // namespace

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
  const TraceAnalysis analysis = analyse_trace(events, info.window_mark);
  const std::vector<SegmentSnapshot> at_peak = replay_segments(events, analysis.peak_index + 1);

  pool.write_chrome_trace((dir / "trace.json").string());
  pool.write_events_csv((dir / "events.csv").string());
  write_text(dir / "summary.txt",
             memory_summary_text(pool, events, analysis, at_peak, info.title, info.planner));

  const fs::path plot_dir = dir / "plot";
  fs::create_directories(plot_dir);
  write_text(plot_dir / "timeline.dat", timeline_data(events));
  write_text(plot_dir / "timeline.gp",
             timeline_script(events, info.title, pool.capacity(), plot_dir / "timeline.dat", dir));
  write_text(plot_dir / "segments.dat", segment_data(at_peak));
  write_text(plot_dir / "segments.gp",
             segments_script(at_peak, info.title, analysis.peak_allocated,
                             events[analysis.peak_index].reserved, plot_dir / "segments.dat", dir));
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
      ->check(whole_in(1, std::int64_t{1} << 62));
  cmd.add_option("--micro-batch", a.micro_batch, "auto (planned from free memory) or N");
  cmd.add_option("--memory-limit", a.memory_limit,
                 "cap on the device arena, e.g. 6GiB, 512MiB (default: device free memory)");
  cmd.add_option("--device", a.device, "auto | cpu | cuda | cuda:N");
  cmd.add_option("--steps", a.steps, "training steps to trace")->check(whole_in(1, 1000000));
  cmd.add_option("--out", a.out_dir, "output folder (created; replaced if it holds a profile)")
      ->required();
  cmd.add_option("--image-size", a.image_size, "input size for synthetic data (default: model's)")
      ->check(whole_in(0, 4096));
  cmd.add_option("--seed", a.seed, "seed for data and initialization")->check(unsigned_integer());
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
  const std::size_t capacity = memory_limit_bytes(a.memory_limit);
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
      info.title = profile_title(a, sample, trainer.current_plan(), device, pool->capacity());
      info.planner = planner_lines(plan, results, log);
      write_memory_profile(*pool, info, temporary.string());
      trainer.model().clear_cache();
    }
    move_into_place(temporary, target_dir, replace, temporary.string().substr(pattern.size() - 6));
    print_result(*pool, info.title, target_dir, a.json, out);
  } catch (...) {
    remove_quietly(temporary);
    throw;
  }
  return 0;
}

}  // namespace mb
