// planner_fit_bench: does the automatic planner use the memory cap? For each case
// (model, batch, cap) it prints one JSON line comparing the micro-batch the planner chose
// with the largest fixed micro-batch that runs a training step under the same cap without an
// OutOfMemory, found by search. Target (issue 18): auto / largest >= 0.95.
//
// Every trial is a fresh Session (arena, model, trainer) under the cap, so one trial's pool
// never helps the next. A trial "fits" when --steps steps finish with no re-plan and no
// OutOfMemory out of the trainer (a fixed micro-batch that does not fit is halved by the
// trainer: replans > 0). The search starts at the planner's choice (it must fit), doubles
// until a trial fails or the batch is reached, then bisects to one sample. It assumes that
// fitting is monotone in the micro-batch (a bisection cannot see a size that breaks that).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "allocator/byte_size.h"
#include "allocator/default_allocator.h"
#include "bench/bench_util.h"
#include "data/dataset.h"
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
  int steps = 1;
  std::uint64_t seed = 1;
  double lr = 0.01;
  std::string optimizer = "sgd";
  std::string commit;
  bool verbose = false;
};

struct Trial {
  bool fits = false;
  int replans = 0;
  Plan plan;            // the one that ran last (automatic: the planner's final choice)
  std::string failure;  // the OutOfMemory's message when one escaped
};

class Runner {
 public:
  Runner(const Case& c, const Settings& s) : case_(c), settings_(s) {
    config_.seed = s.seed;
    config_ = resolve_config(c.model, config_);
    data_ = bench::synthetic_data_for(c.model, config_, c.batch, s.seed);
  }

  const ModelConfig& config() const { return config_; }

  // micro_batch 0: automatic.
  Trial run(std::int64_t micro_batch) {
    Trial trial;
    SessionOptions session_options;
    session_options.memory_limit = parse_byte_size(case_.memory_limit);
    try {
      Session session(session_options, [&] { return build_model(case_.model, config_); });
      TrainerOptions options;
      options.seed = settings_.seed;
      options.micro_batch = micro_batch;
      options.optimizer.kind = parse_optimizer(settings_.optimizer);
      if (settings_.verbose) {
        options.log = [](const std::string& message) { std::cerr << message << "\n"; };
      }
      Trainer& trainer = session.make_trainer(options);
      for (int i = 0; i < settings_.steps; ++i) {
        const StepResult step =
            trainer.step(data_.images, data_.labels, static_cast<float>(settings_.lr));
        trial.replans += step.replans;
      }
      trial.plan = trainer.current_plan();
      trial.fits = trial.replans == 0;
    } catch (const OutOfMemory& error) {
      trial.failure = error.message();
    }
    if (micro_batch > 0) fixed_[micro_batch] = trial.fits;
    return trial;
  }

  const std::map<std::int64_t, bool>& fixed() const { return fixed_; }

 private:
  Case case_;
  Settings settings_;
  ModelConfig config_;
  Dataset data_;
  std::map<std::int64_t, bool> fixed_;  // every fixed trial: micro-batch -> fits
};

Json run_case(const Case& c, const Settings& s) {
  Runner runner(c, s);
  const Trial automatic = runner.run(0);
  Json result{{"kind", "planner_fit"},
              {"model", c.model},
              {"image_size", runner.config().image_size},
              {"device", "cpu"},
              {"threads", cpu_threads()},
              {"batch", c.batch},
              {"memory_limit", c.memory_limit},
              {"optimizer", s.optimizer},
              {"steps_per_trial", s.steps},
              {"commit", s.commit}};
  if (!automatic.failure.empty()) {
    result["error"] = automatic.failure;
    return result;
  }
  const Plan& plan = automatic.plan;
  result["auto"] = {{"micro_batch", plan.micro_batch},
                    {"replans", automatic.replans},
                    {"bytes_per_sample", plan.profile.bytes_per_sample},
                    {"analytic_bytes_per_sample", plan.profile.analytic_bytes_per_sample},
                    {"fixed_bytes", plan.profile.fixed_bytes},
                    {"available", plan.available_bytes},
                    {"margin", plan.margin_bytes}};

  // [fits, fails): the largest fitting fixed micro-batch is in it.
  std::int64_t fits = 0;
  std::int64_t fails = c.batch + 1;
  std::int64_t probe = std::max<std::int64_t>(plan.micro_batch, 1);
  while (probe < fails) {
    if (runner.run(probe).fits) {
      fits = probe;
      if (probe == c.batch) break;
      probe = std::min<std::int64_t>(2 * probe, c.batch);
    } else {
      fails = probe;
    }
  }
  while (fails - fits > 1) {
    const std::int64_t mid = fits + (fails - fits) / 2;
    if (runner.run(mid).fits) {
      fits = mid;
    } else {
      fails = mid;
    }
  }
  result["largest_fixed_micro_batch"] = fits;
  result["smallest_failing_micro_batch"] = fails <= c.batch ? Json(fails) : Json(nullptr);
  result["ratio_auto_vs_largest"] =
      fits > 0 ? static_cast<double>(plan.micro_batch) / static_cast<double>(fits) : 0.0;
  result["target_ratio"] = 0.95;
  result["trials"] = runner.fixed().size() + 1;  // each fixed size once, and the planner's run
  Json trials = Json::array();
  for (const auto& [m, ok] : runner.fixed()) trials.push_back({{"micro_batch", m}, {"fits", ok}});
  result["fixed_trials"] = trials;
  return result;
}

}  // namespace
}  // namespace mb

int main(int argc, char** argv) {
  CLI::App app{"automatic micro-batch vs the largest fixed micro-batch under the same cap"};
  mb::Settings s;
  std::vector<std::string> cases = {"lenet5:2048:8MiB", "lenet5:2048:16MiB", "lenet5:2048:32MiB",
                                    "resnet20:512:32MiB", "resnet20:512:64MiB"};
  app.add_option("--cases", cases, "model:batch:memory-limit");
  app.add_option("--steps", s.steps, "steps per trial")->check(CLI::Range(1, 100));
  app.add_option("--optimizer", s.optimizer, "sgd, adamw, ...");
  app.add_option("--commit", s.commit, "commit recorded in the JSON");
  app.add_flag("--verbose", s.verbose, "planner and engine logs on stderr");
  CLI11_PARSE(app, argc, argv);
  try {
    mb::install_default_allocators();
    for (const std::string& text : cases) {
      const mb::bench::BatchCase c = mb::bench::parse_batch_case(text);
      MB_CHECK(!c.memory_limit.empty(), "case '", text,
               "' needs a memory limit: the search is for the largest micro-batch under a cap");
      std::cout << mb::run_case(c, s).dump() << std::endl;
    }
  } catch (const mb::Error& e) {
    std::cerr << "planner_fit_bench: " << e.message() << "\n";
    return 1;
  }
  return 0;
}
