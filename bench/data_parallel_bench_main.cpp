// `data_parallel_bench`: data-parallel training throughput, one JSON line per case from
// rank 0 (logs to stderr). Run it alone (1 rank) and under `mpirun -np W`; the same global
// batch is split over the ranks (bench/run_data_parallel.sh runs both and writes
// bench/results).
//
// A case trains `--warmup` + `--steps` steps of a zoo model on synthetic data at global batch
// B. For each timed step the slowest rank's step time counts (the ranks wait for each other
// in the all-reduce). Reported: samples/s (B over the median step), the all-reduce's share of
// the step (host time from the end of a rank's backward until the sums are in place: the
// transfer plus the wait for the slower rank, over the step),
// the gradient bytes, buckets and the share started during backward (overlap).
//
// Beside the measurement, a model of the all-reduce: a ring all-reduce of n bytes over W
// ranks costs t(W, n) = 2 (W - 1) alpha + 2 (W - 1) / W * n / beta (alpha: per-message
// latency, beta: link bandwidth). alpha and beta are measured in the same run by timing
// all-reduces of 8 bytes and of the gradient's size, and t is printed for larger W, so the
// figure for a cluster can be read off (for this machine's links: shared memory here).
//
// Run: mpirun -np 2 build/bench/data_parallel_bench --commit $(git rev-parse --short HEAD)
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "allocator/byte_size.h"
#include "allocator/default_allocator.h"
#include "bench/bench_util.h"
#include "data/dataset.h"
#include "data/synthetic.h"
#include "engine/communicator.h"
#include "engine/session.h"
#include "engine/trainer.h"
#include "kernels/threads.h"
#include "models/zoo.h"
#include "runtime/error.h"

namespace mb {
namespace {

using Json = nlohmann::json;

using Case = bench::BatchCase;

struct Settings {
  int warmup = 2;
  int steps = 8;
  std::uint64_t seed = 1;
  double lr = 0.01;
  std::string commit;
  bool verbose = false;
};

using bench::median;

// The largest value over the ranks (nanosecond resolution).
double slowest(Communicator& group, double seconds) {
  std::uint64_t nanos = static_cast<std::uint64_t>(seconds * 1e9);
  group.all_reduce_max(&nanos, 1);
  return static_cast<double>(nanos) * 1e-9;
}

// Median seconds of one all-reduce of `count` floats (after one untimed one).
double time_all_reduce(Communicator& group, std::int64_t count, int repeats) {
  TensorOptions options;
  options.tag = MemoryTag::Other;
  Tensor buffer = Tensor::zeros(Shape{std::max<std::int64_t>(count, 1)}, options);
  std::vector<double> times;
  for (int i = 0; i <= repeats; ++i) {
    group.barrier();
    const auto started = std::chrono::steady_clock::now();
    group.start_all_reduce_sum(buffer.data<float>(), count, Stream())->wait();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (i > 0) times.push_back(slowest(group, seconds));
  }
  return median(times);
}

Json run_case(const Case& c, const Settings& s, const std::shared_ptr<Communicator>& group) {
  ModelConfig config;
  config.seed = s.seed;
  config = resolve_config(c.model, config);
  const Dataset data = bench::synthetic_data_for(c.model, config, c.batch, s.seed);
  const std::int64_t begin = c.batch * group->rank() / group->size();
  const std::int64_t end = c.batch * (group->rank() + 1) / group->size();
  const Tensor images = data.images.slice(begin, end);
  const Tensor labels = data.labels.slice(begin, end);

  SessionOptions session_options;
  session_options.memory_limit = c.memory_limit.empty() ? 0 : parse_byte_size(c.memory_limit);
  Session session(session_options, [&] { return build_model(c.model, config); });
  TrainerOptions options;
  options.seed = s.seed;
  options.communicator = group;
  if (s.verbose) options.log = [](const std::string& message) { std::cerr << message << "\n"; };
  Trainer& trainer = session.make_trainer(options);

  for (int i = 0; i < s.warmup; ++i) trainer.step(images, labels, static_cast<float>(s.lr), begin);
  std::vector<double> step_seconds, reduce_seconds;
  ReduceReport reduce;
  for (int i = 0; i < s.steps; ++i) {
    const StepResult step = trainer.step(images, labels, static_cast<float>(s.lr), begin);
    step_seconds.push_back(slowest(*group, step.seconds));
    reduce_seconds.push_back(slowest(*group, step.reduce.wait_seconds));
    reduce = step.reduce;
  }
  const double step_s = median(step_seconds);
  const double reduce_s = median(reduce_seconds);
  std::size_t gradient_bytes = 0;
  for (auto& [name, p] : trainer.model().named_parameters()) gradient_bytes += p->value.nbytes();

  Json result{{"kind", "data_parallel"},
              {"model", c.model},
              {"image_size", config.image_size},
              {"device", "cpu"},
              {"ranks", group->size()},
              {"backend", group->backend()},
              {"threads_per_rank", cpu_threads()},
              {"global_batch", c.batch},
              {"local_batch", end - begin},
              {"micro_batch", trainer.current_plan().micro_batch},
              {"memory_limit", c.memory_limit.empty() ? "default" : c.memory_limit},
              {"timed_steps", s.steps},
              {"step_time_ms", 1e3 * step_s},
              {"samples_per_s", step_s > 0.0 ? static_cast<double>(c.batch) / step_s : 0.0},
              {"gradient_bytes", gradient_bytes},
              {"commit", s.commit}};
  if (group->distributed()) {
    const double alpha = time_all_reduce(*group, 2, 20);
    const std::int64_t count = static_cast<std::int64_t>(gradient_bytes / sizeof(float));
    const double measured = time_all_reduce(*group, count, 10);
    const double w = group->size();
    // beta from the measured gradient-sized all-reduce, net of its latency term.
    const double transfer = std::max(measured - 2.0 * (w - 1.0) * alpha, 1e-9);
    const double beta = 2.0 * (w - 1.0) / w * static_cast<double>(gradient_bytes) / transfer;
    Json model = Json::object();
    for (int ranks : {2, 4, 8, 16, 64, 256}) {
      const double r = ranks;
      model[std::to_string(ranks)] =
          1e3 * (2.0 * (r - 1.0) * alpha +
                 2.0 * (r - 1.0) / r * static_cast<double>(gradient_bytes) / beta);
    }
    result["reduce"] = {
        {"buckets", reduce.buckets},
        {"bytes", reduce.bytes},
        {"overlapped_fraction", reduce.bytes > 0 ? static_cast<double>(reduce.overlapped_bytes) /
                                                       static_cast<double>(reduce.bytes)
                                                 : 0.0},
        {"wait_ms", 1e3 * reduce_s},
        {"share_of_step", step_s > 0.0 ? reduce_s / step_s : 0.0}};
    result["all_reduce_model"] = {
        {"alpha_us", 1e6 * alpha},
        {"beta_gb_per_s", beta * 1e-9},
        {"measured_gradient_all_reduce_ms", 1e3 * measured},
        {"predicted_ms_by_ranks", model},
        {"formula", "t = 2 (W - 1) alpha + 2 (W - 1) / W * bytes / beta (ring)"}};
  }
  return result;
}

}  // namespace
}  // namespace mb

int main(int argc, char** argv) {
  CLI::App app{"data-parallel training throughput (run alone and under mpirun)"};
  mb::Settings s;
  std::vector<std::string> cases = {"lenet5:4096:16MiB", "resnet20:256:"};
  app.add_option("--cases", cases, "model:global-batch:memory-limit (empty limit: default)");
  app.add_option("--warmup", s.warmup, "untimed steps")->check(CLI::Range(0, 100));
  app.add_option("--steps", s.steps, "timed steps")->check(CLI::Range(1, 1000));
  app.add_option("--commit", s.commit, "commit recorded in the JSON");
  app.add_flag("--verbose", s.verbose, "planner and engine logs on stderr");
  CLI11_PARSE(app, argc, argv);
  try {
    mb::install_default_allocators();
    const std::shared_ptr<mb::Communicator> group = mb::launched_communicator();
    for (const std::string& text : cases) {
      const nlohmann::json result = mb::run_case(mb::bench::parse_batch_case(text), s, group);
      if (group->rank() == 0) std::cout << result.dump() << std::endl;
    }
  } catch (const mb::Error& e) {
    std::cerr << "data_parallel_bench: " << e.message() << "\n";
    if (mb::launched_as_ranks()) mb::launched_communicator()->abort(1);
    return 1;
  }
  return 0;
}
