// memory_bench: what one training sample costs in memory, for zoo models at chosen image
// sizes, and the micro-batch the planner fits under a cap. One JSON line per case:
//   analytic bytes/sample  layers/memory_trace (what the planner's log prints beside it)
//   measured bytes/sample  the planner's probe (two small sizes, an uncapped arena): peak
//                          allocated above the baseline, per sample, and the fixed part
//   with a cap             the planner's micro-batch for --batch under it (probe and plan
//                          checks, as `microbatch plan` does), its bytes/sample at that size
//                          and the seconds planning took
// each with the zoo's fused layers and with the plain ones (--fuse both, the default;
// "fused" in the JSON), so the saving of fusion is measured in the same run, and for the
// ResNets with and without segment recomputation on request (--recompute on|both;
// "recompute_segments" in the JSON).
// The PyTorch side of the comparison (saved tensors per sample for the same models and
// sizes) is bench/compare_memory.py, which runs this program.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "allocator/byte_size.h"
#include "allocator/default_allocator.h"
#include "engine/session.h"
#include "engine/trainer.h"
#include "kernels/threads.h"
#include "models/zoo.h"
#include "runtime/error.h"

namespace mb {
namespace {

using Json = nlohmann::json;

// "model:image_size[:cap]"; image_size 0 is the model's default.
struct Case {
  std::string model;
  std::int64_t image_size = 0;
  std::string memory_limit;
};

Case parse_case(const std::string& text) {
  Case c;
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ':');) parts.push_back(part);
  try {
    if (parts.size() < 1 || parts.size() > 3 || parts[0].empty()) throw std::exception();
    c.model = parts[0];
    if (parts.size() > 1) c.image_size = std::stoll(parts[1]);
    if (parts.size() > 2) c.memory_limit = parts[2];
  } catch (const std::exception&) {
    MB_THROW(InvalidArgument, "--cases entry '", text,
             "' is not model[:image_size[:memory-limit]]. Fix: e.g. resnet50:224:4GiB");
  }
  find_model(c.model);  // throws for an unknown model, naming the zoo
  return c;
}

Json run_case(const Case& c, bool fuse, bool recompute, std::int64_t batch,
              const std::string& commit) {
  ModelConfig config;
  config.image_size = c.image_size;
  config.fuse = fuse;
  config.recompute_segments = recompute;
  config = resolve_config(c.model, config);
  const ModelInfo& info = find_model(c.model);
  const Shape sample{config.in_channels, config.image_size, config.image_size};
  const Shape label = info.segmentation ? Shape{config.image_size, config.image_size} : Shape{};
  Json result{{"kind", "memory"},
              {"model", c.model},
              {"image_size", config.image_size},
              {"fused", fuse},
              {"recompute_segments", recompute},
              {"device", "cpu"},
              {"threads", cpu_threads()},
              {"commit", commit}};
  {
    Session session(SessionOptions{}, [&] { return build_model(c.model, config); });
    result["parameters"] = session.model().parameter_count();
    const MemoryProfile profile = session.make_trainer(TrainerOptions{}).measure(sample, label);
    result["analytic_bytes_per_sample"] = profile.analytic_bytes_per_sample;
    result["measured_bytes_per_sample"] = profile.bytes_per_sample;
    result["measured_fixed_bytes"] = profile.fixed_bytes;
    result["probe_samples"] = {profile.probe_small, profile.probe_large};
    result["analytic_vs_measured"] = static_cast<double>(profile.analytic_bytes_per_sample) /
                                     static_cast<double>(profile.bytes_per_sample);
  }
  if (!c.memory_limit.empty()) {
    SessionOptions options;
    options.memory_limit = parse_byte_size(c.memory_limit);
    Session session(options, [&] { return build_model(c.model, config); });
    Trainer& trainer = session.make_trainer(TrainerOptions{});
    const auto start = std::chrono::steady_clock::now();
    const Plan& plan = trainer.plan(batch, sample, label);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result["memory_limit"] = c.memory_limit;
    result["batch"] = batch;
    result["planned_micro_batch"] = plan.micro_batch;
    result["planned_bytes_per_sample"] = plan.profile.bytes_per_sample;
    result["available"] = plan.available_bytes;
    result["margin"] = plan.margin_bytes;
    result["planning_seconds"] = seconds;
  }
  return result;
}

}  // namespace
}  // namespace mb

int main(int argc, char** argv) {
  CLI::App app{"bytes per training sample for zoo models, and the planned micro-batch under caps"};
  std::vector<std::string> cases = {
      "lenet5:28",    "resnet20:32",  "resnet18:112",     "resnet18:224",      "resnet50:112",
      "resnet50:224", "vgg11_bn:224", "mobilenet_v2:224", "resnet50:224:4GiB", "resnet50:224:8GiB"};
  std::int64_t batch = 1024;
  std::string commit;
  std::string fuse = "both";
  std::string recompute = "off";
  app.add_option("--cases", cases, "model[:image_size[:memory-limit]]");
  app.add_option("--fuse", fuse, "on | off | both (default): the zoo's fused layers or the plain")
      ->check(CLI::IsMember({"on", "off", "both"}));
  app.add_option("--recompute", recompute,
                 "off (default) | on | both: ResNets with each residual stage recomputed in "
                 "backward (other models run without)")
      ->check(CLI::IsMember({"on", "off", "both"}));
  app.add_option("--batch", batch, "batch size planned for under a cap")
      ->check(CLI::PositiveNumber);
  app.add_option("--commit", commit, "commit recorded in the JSON");
  CLI11_PARSE(app, argc, argv);
  try {
    mb::install_default_allocators();
    std::vector<mb::Case> parsed;
    for (const std::string& text : cases) parsed.push_back(mb::parse_case(text));
    std::vector<bool> fuse_variants;
    if (fuse != "off") fuse_variants.push_back(true);
    if (fuse != "on") fuse_variants.push_back(false);
    std::vector<bool> recompute_variants;
    if (recompute != "on") recompute_variants.push_back(false);
    if (recompute != "off") recompute_variants.push_back(true);
    for (const mb::Case& c : parsed) {
      const bool has_stages = c.model.rfind("resnet", 0) == 0;
      for (const bool fused : fuse_variants) {
        for (const bool recomputed : recompute_variants) {
          if (recomputed && !has_stages) continue;
          std::cout << mb::run_case(c, fused, recomputed, batch, commit).dump() << std::endl;
        }
      }
    }
  } catch (const mb::Error& e) {
    std::cerr << "memory_bench: " << e.message() << "\n";
    return 1;
  }
  return 0;
}
