// The command line on CUDA (label gpu; skips without a device), as cli_test.cpp drives it on
// the CPU: a short `train --device cuda` under a --memory-limit beats chance by a wide margin
// with finite losses; a `train --device cuda` checkpoint is accepted by `eval` on the CPU,
// which reports what training measured on the GPU; `plan --device cuda --memory-limit`
// splits a batch beyond the cap and refuses a cap below the model's parameters.
//
// Truths from outside the code under test: chance (10% over 10 classes), the CPU backend
// evaluating the same weights, and the cap given on the command line.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/context.h"
#include "tests/cli/cli_run.h"
#include "tests/test_util.h"

namespace mb {
namespace {

using testing::CliResult;
using testing::contains;
using testing::run;
using Json = nlohmann::json;

const Device kGpu = Device::cuda(0);

// The CLI sets TF32 and deterministic mode on the device's context for the rest of the
// process; this puts back what the GPU's and the CPU's contexts had.
class RestoreContexts {
 public:
  RestoreContexts()
      : gpu_tf32_(Context::get(kGpu).allow_tf32()),
        gpu_deterministic_(Context::get(kGpu).deterministic()),
        cpu_tf32_(Context::get(Device::cpu()).allow_tf32()),
        cpu_deterministic_(Context::get(Device::cpu()).deterministic()) {}
  ~RestoreContexts() {
    Context::get(kGpu).set_allow_tf32(gpu_tf32_);
    Context::get(kGpu).set_deterministic(gpu_deterministic_);
    Context::get(Device::cpu()).set_allow_tf32(cpu_tf32_);
    Context::get(Device::cpu()).set_deterministic(cpu_deterministic_);
  }
  RestoreContexts(const RestoreContexts&) = delete;
  RestoreContexts& operator=(const RestoreContexts&) = delete;

 private:
  bool gpu_tf32_, gpu_deterministic_, cpu_tf32_, cpu_deterministic_;
};

// The --json events of `out` named `name`, in order.
std::vector<Json> events(const std::string& out, const std::string& name) {
  std::vector<Json> found;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    const Json event = Json::parse(line);
    if (event.value("event", "") == name) found.push_back(event);
  }
  return found;
}

TEST(CliGpu, ShortTrainingRunUnderAMemoryLimitBeatsChance) {
  MB_SKIP_WITHOUT_CUDA();
  RestoreContexts restore;
  const bool have_fashion =
      std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
  std::vector<std::string> args = {
      "train", "--model",        "lenet5", "--device",      "cuda",  "--batch-size",
      "128",   "--memory-limit", "8MiB",   "--train-limit", "3072",  "--test-limit",
      "1000",  "--epochs",       "2",      "--lr",          "0.003", "--json"};
  if (!have_fashion) {
    args.insert(args.end(), {"--dataset", "synthetic", "--image-size", "28"});
  }
  const CliResult r = run(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(events(r.out, "plan").size(), 1u) << r.out;
  const std::vector<Json> steps = events(r.out, "step");
  EXPECT_EQ(steps.size(), 2u * 3072 / 128) << r.out;
  for (const Json& step : steps) {
    const double loss = step["loss"].get<double>();
    EXPECT_TRUE(std::isfinite(loss)) << step;
    std::int64_t samples = 0;
    for (const Json& n : step["micro_batches"]) samples += n.get<std::int64_t>();
    EXPECT_EQ(samples, 128) << step;
    EXPECT_EQ(step["capacity_bytes"].get<std::size_t>(), std::size_t{8} << 20) << step;
    EXPECT_LE(step["reserved_bytes"].get<std::size_t>(), std::size_t{8} << 20) << step;
  }
  const std::vector<Json> epochs = events(r.out, "epoch");
  ASSERT_EQ(epochs.size(), 2u) << r.out;
  EXPECT_TRUE(std::isfinite(epochs.back()["train_loss"].get<double>()));
  // Chance is 10% over 10 classes.
  EXPECT_GT(epochs.back()["test_accuracy"].get<double>(), 0.5) << r.out;
}

TEST(CliGpu, TrainOnCudaWritesACheckpointThatEvalReadsOnTheCpu) {
  MB_SKIP_WITHOUT_CUDA();
  RestoreContexts restore;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("mb_cli_gpu_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "lenet5.safetensors").string();
  const std::vector<std::string> data = {"--dataset",    "synthetic", "--image-size",  "28",
                                         "--test-limit", "128",       "--micro-batch", "64"};
  std::vector<std::string> train_args = {"train", "--model",         "lenet5", "--device",
                                         "cuda",  "--train-limit",   "256",    "--batch-size",
                                         "64",    "--epochs",        "1",      "--checkpoint",
                                         path,    "--deterministic", "--json"};
  train_args.insert(train_args.end(), data.begin(), data.end());
  const CliResult train = run(train_args);
  ASSERT_EQ(train.code, 0) << train.err;
  const std::vector<Json> settings = events(train.out, "settings");
  ASSERT_EQ(settings.size(), 1u) << train.out;
  EXPECT_TRUE(settings[0]["settings"]["deterministic"].get<bool>());
  EXPECT_FALSE(settings[0]["settings"]["tf32"].get<bool>());
  const std::vector<Json> steps = events(train.out, "step");
  ASSERT_EQ(steps.size(), 4u) << train.out;
  for (const Json& step : steps) {
    EXPECT_TRUE(std::isfinite(step["loss"].get<double>())) << step;
    EXPECT_EQ(step["micro_batches"], Json::array({64})) << step;
    EXPECT_EQ(step["replans"].get<int>(), 0) << step;
  }
  const std::vector<Json> epochs = events(train.out, "epoch");
  ASSERT_EQ(epochs.size(), 1u) << train.out;
  const double trained_loss = epochs[0]["test_loss"].get<double>();
  const double trained_accuracy = epochs[0]["test_accuracy"].get<double>();
  ASSERT_TRUE(std::isfinite(trained_loss)) << train.out;
  ASSERT_TRUE(std::filesystem::exists(path));

  // Another --train-limit: synthetic data has no published normalization, so eval takes
  // training's from the checkpoint. The CPU computes the same logits up to fp32 round-off:
  // the loss within 1e-4 and at most one prediction of 128 on the other side of a near tie.
  std::vector<std::string> eval_args = {"eval", "--model",       "lenet5", "--device",
                                        "cpu",  "--train-limit", "32",     "--checkpoint",
                                        path,   "--json"};
  eval_args.insert(eval_args.end(), data.begin(), data.end());
  const CliResult on_cpu = run(eval_args);
  ASSERT_EQ(on_cpu.code, 0) << on_cpu.err;
  const std::vector<Json> cpu_eval = events(on_cpu.out, "eval");
  ASSERT_EQ(cpu_eval.size(), 1u) << on_cpu.out;
  EXPECT_EQ(cpu_eval[0]["valid"].get<std::int64_t>(), 128);
  EXPECT_NEAR(cpu_eval[0]["test_loss"].get<double>(), trained_loss, 1e-4 * trained_loss)
      << on_cpu.out;
  EXPECT_NEAR(cpu_eval[0]["test_accuracy"].get<double>(), trained_accuracy, 1.0 / 128 + 1e-12)
      << on_cpu.out;

  // The GPU in deterministic mode, in the same chunks and with the algorithms training
  // pinned: what training measured, up to the rounding of another GEMM kernel.
  eval_args[4] = "cuda";
  eval_args.push_back("--deterministic");
  const CliResult on_gpu = run(eval_args);
  ASSERT_EQ(on_gpu.code, 0) << on_gpu.err;
  const std::vector<Json> gpu_eval = events(on_gpu.out, "eval");
  ASSERT_EQ(gpu_eval.size(), 1u) << on_gpu.out;
  EXPECT_NEAR(gpu_eval[0]["test_loss"].get<double>(), trained_loss, 1e-6 * trained_loss);
  EXPECT_NEAR(gpu_eval[0]["test_accuracy"].get<double>(), trained_accuracy, 1.0 / 128 + 1e-12);
  std::filesystem::remove_all(dir);
}

TEST(CliGpu, PlanOnCudaSplitsABatchBeyondTheLimit) {
  MB_SKIP_WITHOUT_CUDA();
  RestoreContexts restore;
  const CliResult r = run({"plan", "--model", "lenet5", "--device", "cuda", "--batch-size", "4096",
                           "--memory-limit", "16MiB", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<Json> plans = events(r.out, "plan");
  ASSERT_EQ(plans.size(), 1u) << r.out;
  const Json& plan = plans[0];
  EXPECT_TRUE(plan["automatic"].get<bool>());
  EXPECT_GT(plan["micro_batches"].get<int>(), 1);
  const auto micro = plan["micro_batch"].get<std::int64_t>();
  const auto per_sample = plan["bytes_per_sample"].get<std::size_t>();
  EXPECT_GT(per_sample, 0u);
  EXPECT_LE(static_cast<std::size_t>(micro) * per_sample, std::size_t{16} << 20) << plan;
  EXPECT_LE(plan["available_bytes"].get<std::size_t>(), std::size_t{16} << 20) << plan;
  std::int64_t total = 0;
  for (const Json& n : plan["sizes"]) total += n.get<std::int64_t>();
  EXPECT_EQ(total, 4096);
}

TEST(CliGpu, PlanOnCudaRefusesALimitBelowTheParameters) {
  MB_SKIP_WITHOUT_CUDA();
  RestoreContexts restore;
  // ResNet-18's 11.7 M parameters are 45 MiB of float32.
  const CliResult r =
      run({"plan", "--model", "resnet18", "--device", "cuda", "--memory-limit", "16MiB"});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(contains(r.err, "building the model")) << r.err;
  EXPECT_TRUE(contains(r.err, "raise --memory-limit")) << r.err;
}

}  // namespace
}  // namespace mb
