// `train_bench`: end-to-end training throughput and memory of zoo models on synthetic data,
// one JSON line per case on stdout (logs go to stderr).
//
// A case trains `--warmup` + `--steps` steps of one model at batch B with micro-batch m
// (auto: planned from the capped arena), and reports the median step time of the timed
// steps, samples/s, the arena's peak allocated and reserved bytes over the timed steps and
// the planner's numbers. `--cases default|cpu-small` runs a built-in list instead of one
// case; `--overhead` adds the MBP overhead comparison of issue 5: one batch B split into k
// micro-batches of m, against plain steps of m samples (target ratio >= 0.97) and against
// one full-batch step of B where that fits. `--layer-times` times every module of the
// timed steps by type (layers/layer_timer.h) and reports each type's share of the step
// time, and the share of the memory-bound layers (all but the GEMM layers Conv2d,
// ConvTranspose2d and Linear); on CUDA that synchronizes after every module. `--recompute`
// recomputes the ResNets' stages in backward.
//
// Note: every case gets a fresh, capped arena. The synthetic data is made before the arena
// is installed, so on the CPU the host copy of the data set does not count against the cap
// (as in `microbatch train`); the engine's staged micro-batch inputs do.
//
// Run: build-<you>/bench/train_bench --cases cpu-small --commit $(git rev-parse --short HEAD)
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "allocator/byte_size.h"
#include "allocator/default_allocator.h"
#include "allocator/pool_allocator.h"
#include "bench/bench_util.h"
#include "data/dataset.h"
#include "engine/session.h"
#include "engine/trainer.h"
#include "models/zoo.h"
#include "runtime/allocator_registry.h"
#include "runtime/device.h"
#include "runtime/error.h"

namespace mb {
namespace {

using Json = nlohmann::json;

struct Case {
  std::string model = "resnet20";
  std::int64_t image_size = 0;  // 0: the model's default
  std::int64_t batch = 64;
  std::int64_t micro_batch = 0;  // 0: auto
  std::string memory_limit;      // empty: the device default
  std::string accumulation = "inplace";
  std::string optimizer = "sgd";
  int warmup = 1;
  int steps = 3;
  bool overhead = false;     // run the MBP overhead comparison instead of one training case
  bool fuse = true;          // the zoo's fused layers (false: --no-fuse, the plain ones)
  bool recompute = false;    // ResNets: recompute each residual stage in backward
  bool layer_times = false;  // time every module by type (LayerTimer)
};

struct Settings {
  Device device = Device::cpu();
  std::string commit;
  std::string date;
  double lr = 0.01;
  std::uint64_t seed = 0;
  bool verbose = false;
};

struct Measurement {
  Json json;
  double samples_per_s = 0.0;
  std::vector<std::int64_t> sizes;  // the micro-batch sizes of the last timed step
  int replans = 0;
};

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const std::size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "cpu";
}

std::string device_name(const Device& device) {
  if (device.is_cpu()) return cpu_model_name();
  for (const CudaDeviceInfo& info : cuda_availability().devices) {
    if (info.index == device.index()) return info.name;
  }
  return device.str();
}

using bench::median;

// Per module type: exclusive seconds per timed step (forward, backward) and share of the
// step time; the memory-bound layers' share (all but the GEMM layers); what ran outside any
// module (loss, gradient accumulation, optimizer).
Json layer_times_json(const LayerTimer& timer, const std::vector<double>& step_seconds) {
  double steps_total = 0.0;
  for (double t : step_seconds) steps_total += t;
  const double steps = static_cast<double>(std::max<std::size_t>(step_seconds.size(), 1));
  Json types = Json::object();
  double memory_bound = 0.0;
  for (const auto& [type, entry] : timer.entries()) {
    const double seconds = entry.forward_seconds + entry.backward_seconds;
    types[type] = {{"forward_ms_per_step", 1e3 * entry.forward_seconds / steps},
                   {"backward_ms_per_step", 1e3 * entry.backward_seconds / steps},
                   {"share", seconds / std::max(steps_total, 1e-12)}};
    if (type != "Conv2d" && type != "ConvTranspose2d" && type != "Linear") memory_bound += seconds;
  }
  return {{"types", types},
          {"memory_bound_share", memory_bound / std::max(steps_total, 1e-12)},
          {"outside_modules_share", 1.0 - timer.total_seconds() / std::max(steps_total, 1e-12)}};
}

// Trains one case in a fresh capped arena and measures it. Throws what the engine throws
// (mb::OutOfMemory when not even one sample fits).
Measurement run_case(const Case& c, const Settings& s) {
  ModelConfig config;
  config.image_size = c.image_size;
  config.seed = s.seed;
  config.fuse = c.fuse;
  config.recompute_segments = c.recompute;
  config = resolve_config(c.model, config);

  const Dataset data = bench::synthetic_data_for(c.model, config, c.batch, s.seed);

  SessionOptions session_options;
  session_options.device = s.device;
  session_options.memory_limit = c.memory_limit.empty() ? 0 : parse_byte_size(c.memory_limit);
  Session session(session_options, [&] { return build_model(c.model, config); });
  Allocator* allocator = &session.allocator();
  auto* pool = dynamic_cast<PoolAllocator*>(allocator);

  TrainerOptions options;
  options.micro_batch = c.micro_batch;
  options.accumulation = parse_accumulation(c.accumulation);
  options.optimizer.kind = parse_optimizer(c.optimizer);
  options.seed = s.seed;
  if (s.verbose) options.log = [](const std::string& message) { std::cerr << message << "\n"; };
  LayerTimer timer;
  if (c.layer_times) options.layer_timer = &timer;
  Trainer& trainer = session.make_trainer(options);

  const Shape sample = data.sample_shape();
  std::vector<std::int64_t> label_dims(data.labels.shape().dims().begin() + 1,
                                       data.labels.shape().dims().end());
  const Plan plan = trainer.plan(c.batch, sample, Shape(label_dims));

  Measurement result;
  for (int i = 0; i < c.warmup; ++i) {
    result.replans += trainer.step(data.images, data.labels, static_cast<float>(s.lr)).replans;
  }
  allocator->reset_peak();
  timer.reset();
  std::vector<double> step_seconds;
  double last_loss = 0.0;
  for (int i = 0; i < c.steps; ++i) {
    const StepResult step = trainer.step(data.images, data.labels, static_cast<float>(s.lr));
    step_seconds.push_back(step.seconds);
    result.replans += step.replans;
    result.sizes = step.micro_batches;
    last_loss = step.loss;
  }
  const double step_s = median(step_seconds);
  result.samples_per_s = step_s > 0.0 ? static_cast<double>(c.batch) / step_s : 0.0;
  const FreeArenaReport report = allocator->report();
  const std::size_t peak_reserved = pool != nullptr ? pool->stats().peak_reserved_bytes : 0;
  const Plan& final_plan = trainer.current_plan();

  result.json = Json{{"kind", "train"},
                     {"model", c.model},
                     {"image_size", config.image_size},
                     {"fused", c.fuse},
                     {"recompute_segments", c.recompute},
                     {"device", s.device.str()},
                     {"device_name", device_name(s.device)},
                     {"batch", c.batch},
                     {"micro_batch", final_plan.micro_batch},
                     {"micro_batch_requested", c.micro_batch > 0 ? Json(c.micro_batch) : "auto"},
                     {"micro_batches", static_cast<std::int64_t>(result.sizes.size())},
                     {"micro_batch_sizes", result.sizes},
                     {"replans", result.replans},
                     {"accumulation", c.accumulation},
                     {"optimizer", c.optimizer},
                     {"memory_limit", c.memory_limit.empty() ? "default" : c.memory_limit},
                     {"capacity_bytes", report.capacity},
                     {"warmup_steps", c.warmup},
                     {"timed_steps", c.steps},
                     {"samples_per_s", result.samples_per_s},
                     {"step_time_ms", 1e3 * step_s},
                     {"step_times_ms",
                      [&] {
                        std::vector<double> ms;
                        for (double t : step_seconds) ms.push_back(1e3 * t);
                        return ms;
                      }()},
                     {"peak_allocated_bytes", allocator->peak_allocated()},
                     {"peak_reserved_bytes", pool != nullptr ? Json(peak_reserved) : Json()},
                     {"loss", last_loss},
                     {"planner",
                      {{"automatic", plan.automatic},
                       {"bytes_per_sample", plan.profile.bytes_per_sample},
                       {"fixed_bytes", plan.profile.fixed_bytes},
                       {"analytic_bytes_per_sample", plan.profile.analytic_bytes_per_sample},
                       {"available", plan.available_bytes},
                       {"margin", plan.margin_bytes},
                       {"micro_batch", plan.micro_batch}}},
                     {"commit", s.commit},
                     {"date", s.date}};
  if (c.layer_times) result.json["layer_times"] = layer_times_json(timer, step_seconds);
  trainer.model().clear_cache();
  return result;
}

Json error_json(const Case& c, const Settings& s, const std::string& kind, const char* type,
                const std::string& message) {
  return Json{{"kind", kind},
              {"model", c.model},
              {"device", s.device.str()},
              {"batch", c.batch},
              {"micro_batch_requested", c.micro_batch > 0 ? Json(c.micro_batch) : "auto"},
              {"accumulation", c.accumulation},
              {"memory_limit", c.memory_limit.empty() ? "default" : c.memory_limit},
              {"error_type", type},
              {"error", message},
              {"commit", s.commit},
              {"date", s.date}};
}

// Issue 5: B as k micro-batches of m, against plain steps of m and one full batch of B.
// Each side runs in its own arena with the same warm-up and timed steps.
Json run_overhead(const Case& c, const Settings& s) {
  MB_CHECK(c.micro_batch > 0 && c.micro_batch < c.batch, "--overhead needs a fixed micro-batch m ",
           "smaller than the batch (got m = ", c.micro_batch, ", B = ", c.batch,
           "). Fix: pass --micro-batch N with N < --batch");
  Case split = c;
  Case plain = c;
  plain.batch = c.micro_batch;
  Case full = c;
  full.micro_batch = c.batch;
  const Measurement mbp = run_case(split, s);
  const Measurement small = run_case(plain, s);
  Json out{{"kind", "overhead"},
           {"model", c.model},
           {"image_size", mbp.json["image_size"]},
           {"device", s.device.str()},
           {"device_name", device_name(s.device)},
           {"batch", c.batch},
           {"micro_batch", c.micro_batch},
           {"micro_batches", mbp.json["micro_batches"]},
           {"accumulation", c.accumulation},
           {"optimizer", c.optimizer},
           {"mbp_samples_per_s", mbp.samples_per_s},
           {"plain_samples_per_s", small.samples_per_s},
           {"ratio_vs_plain", mbp.samples_per_s / std::max(small.samples_per_s, 1e-12)},
           {"target_ratio_vs_plain", 0.97},
           {"mbp_peak_allocated_bytes", mbp.json["peak_allocated_bytes"]},
           {"plain_peak_allocated_bytes", small.json["peak_allocated_bytes"]},
           {"commit", s.commit},
           {"date", s.date}};
  try {
    const Measurement whole = run_case(full, s);
    const bool fitted = whole.replans == 0 && whole.sizes.size() == 1;
    out["full_fits"] = fitted;
    out["full_samples_per_s"] = whole.samples_per_s;
    out["full_peak_allocated_bytes"] = whole.json["peak_allocated_bytes"];
    // A full batch that needed re-planning ran as micro-batches too: no full-batch figure.
    if (fitted) out["ratio_vs_full"] = mbp.samples_per_s / std::max(whole.samples_per_s, 1e-12);
  } catch (const OutOfMemory& error) {
    out["full_fits"] = false;
    out["full_error"] = error.what();
  }
  return out;
}

std::vector<Case> builtin_cases(const std::string& name) {
  std::vector<Case> cases;
  auto add = [&](const std::string& model, std::int64_t image_size, std::int64_t batch,
                 std::int64_t micro_batch, const std::string& limit,
                 const std::string& accumulation, int warmup, int steps, bool overhead = false) {
    Case c;
    c.model = model;
    c.image_size = image_size;
    c.batch = batch;
    c.micro_batch = micro_batch;
    c.memory_limit = limit;
    c.accumulation = accumulation;
    c.warmup = warmup;
    c.steps = steps;
    c.overhead = overhead;
    cases.push_back(c);
  };
  if (name == "default") {
    // The GPU list: ImageNet-size models at B = 256, LeNet-5 at the Fashion-MNIST shape.
    for (std::int64_t m : {32, 64}) add("resnet50", 224, 256, m, "", "inplace", 3, 10);
    add("resnet50", 224, 256, 0, "", "inplace", 3, 10);
    add("resnet50", 224, 256, 0, "8GiB", "inplace", 3, 10);
    // Fusion's cost in time and what it buys under a cap: the same cases with plain layers.
    add("resnet50", 224, 256, 64, "", "inplace", 3, 10);
    cases.back().fuse = false;
    add("resnet50", 224, 256, 0, "8GiB", "inplace", 3, 10);
    cases.back().fuse = false;
    add("resnet50", 224, 256, 64, "", "buffers", 3, 10);
    add("resnet18", 224, 256, 64, "", "inplace", 3, 10);
    add("resnet18", 224, 256, 0, "4GiB", "inplace", 3, 10);
    add("vgg16", 224, 256, 32, "", "inplace", 3, 10);
    add("vgg16", 224, 256, 0, "8GiB", "inplace", 3, 10);
    add("mobilenet_v2", 224, 256, 64, "", "inplace", 3, 10);
    add("mobilenet_v2", 224, 256, 0, "4GiB", "inplace", 3, 10);
    for (const char* mode : {"inplace", "buffers"}) {
      add("lenet5", 28, 1024, 0, "16MiB", mode, 3, 20);
      add("lenet5", 28, 1024, 128, "", mode, 3, 20);
    }
    add("resnet50", 224, 256, 64, "", "inplace", 3, 10, true);
    add("resnet18", 224, 256, 64, "", "inplace", 3, 10, true);
  } else if (name == "cpu-small") {
    // What 2 CPU cores run in a couple of minutes.
    for (const char* mode : {"inplace", "buffers"}) {
      add("lenet5", 28, 1024, 0, "16MiB", mode, 1, 3);
      add("lenet5", 28, 1024, 128, "", mode, 1, 3);
      add("resnet20", 32, 64, 16, "", mode, 1, 3);
      add("resnet20", 32, 64, 0, "32MiB", mode, 1, 3);
    }
    add("resnet18", 32, 32, 8, "", "inplace", 1, 2);
    // Fusion's cost in time: the same cases with plain layers.
    add("resnet20", 32, 64, 16, "", "inplace", 1, 3);
    cases.back().fuse = false;
    add("resnet18", 32, 32, 8, "", "inplace", 1, 2);
    cases.back().fuse = false;
    add("resnet20", 32, 64, 16, "", "inplace", 1, 3, true);
  } else {
    MB_THROW(InvalidArgument, "--cases '", name, "' is unknown. Fix: use default or cpu-small");
  }
  return cases;
}

int run(int argc, char** argv) {
  CLI::App app{"microbatch end-to-end training benchmark: one JSON line per case"};
  Case single;
  std::string micro_batch = "auto";
  std::string device_text = "auto";
  std::string cases_name;
  Settings settings;
  app.add_option("--cases", cases_name, "built-in list: default (GPU) | cpu-small");
  app.add_option("--model", single.model, "zoo model (see `microbatch models`)");
  app.add_option("--image-size", single.image_size, "input size (default: the model's)");
  app.add_option("--batch", single.batch, "samples per optimizer step")->check(CLI::PositiveNumber);
  app.add_option("--micro-batch", micro_batch, "auto | N");
  app.add_option("--memory-limit", single.memory_limit, "arena cap, e.g. 8GiB (default: device)");
  app.add_option("--accumulation", single.accumulation, "inplace | buffers");
  app.add_option("--optimizer", single.optimizer, "sgd | adamw | lars");
  app.add_option("--warmup", single.warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  app.add_option("--steps", single.steps, "timed steps")->check(CLI::PositiveNumber);
  app.add_flag(
      "--no-fuse", [&](std::int64_t) { single.fuse = false; },
      "the plain layers instead of the zoo's fused ones");
  app.add_flag("--recompute", single.recompute,
               "ResNets: recompute each residual stage in backward (--recompute-segments)");
  app.add_flag("--layer-times", single.layer_times,
               "time every module by type and report the memory-bound layers' share");
  app.add_flag("--overhead", single.overhead,
               "MBP overhead: B as micro-batches of m vs plain steps of m vs one step of B");
  app.add_option("--device", device_text, "auto | cpu | cuda | cuda:N");
  app.add_option("--lr", settings.lr, "learning rate");
  app.add_option("--seed", settings.seed, "seed for data and initialization");
  app.add_option("--commit", settings.commit, "commit id (default: $MB_COMMIT)");
  app.add_flag("--verbose", settings.verbose, "planner log on stderr");
  CLI11_PARSE(app, argc, argv);

  settings.device = Device::parse(device_text);
  require_device(settings.device);
  if (settings.commit.empty()) {
    const char* env = std::getenv("MB_COMMIT");
    settings.commit = env != nullptr ? env : "unknown";
  }
  settings.date = utc_now();
  single.micro_batch = parse_micro_batch(micro_batch);

  std::vector<Case> cases;
  if (cases_name.empty()) {
    cases.push_back(single);
  } else {
    cases = builtin_cases(cases_name);
  }
  int failures = 0;
  for (const Case& c : cases) {
    const std::string kind = c.overhead ? "overhead" : "train";
    Json line;
    try {
      line = c.overhead ? run_overhead(c, settings) : run_case(c, settings).json;
    } catch (const OutOfMemory& error) {
      line = error_json(c, settings, kind, "OutOfMemory", error.what());
      ++failures;
    } catch (const Error& error) {
      line = error_json(c, settings, kind, "Error", error.what());
      ++failures;
    }
    std::cout << line.dump() << "\n" << std::flush;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace mb

int main(int argc, char** argv) {
  mb::install_default_allocators();
  try {
    return mb::run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "train_bench: " << error.what() << "\n";
    return 2;
  }
}
