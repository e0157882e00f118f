// `mpirun -np 2 microbatch train ...` (the real binary) against one process: the same
// training, ranks with different caps that plan differently, and a failing rank that ends
// the job with its message in bounded time. The truth is the single-process run of the
// same command: LeNet-5 has no BatchNorm, so the two agree to fp32 round-off.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace mb {
namespace {

const std::string kBinary = std::string(MB_BINARY_DIR) + "/tools/microbatch";
const std::string kMpirun = MB_MPIEXEC;

struct CommandResult {
  int code = -1;
  std::string out;
  std::string err;
  double seconds = 0.0;
};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs `command` through the shell (killed after 120 s), stdout and stderr apart.
CommandResult run(const std::string& command) {
  const std::filesystem::path err_path =
      std::filesystem::temp_directory_path() / ("mb_dist_err_" + std::to_string(::getpid()));
  const auto started = std::chrono::steady_clock::now();
  FILE* pipe = ::popen(("timeout 120 " + command + " 2>" + err_path.string()).c_str(), "r");
  CommandResult result;
  if (pipe == nullptr) return result;
  char buffer[4096];
  std::size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, got);
  const int status = ::pclose(pipe);
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.err = read_file(err_path);
  std::filesystem::remove(err_path);
  return result;
}

const std::string kTrain =
    " train --model lenet5 --dataset fashion-mnist --train-limit 2048 --test-limit 600"
    " --batch-size 256 --epochs 1 --optimizer sgd --lr 0.05 --seed 5 --json";

// The last epoch event of a --json run.
nlohmann::json last_epoch(const std::string& out) {
  nlohmann::json epoch;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    const nlohmann::json event = nlohmann::json::parse(line, nullptr, false);
    if (!event.is_discarded() && event.value("event", "") == "epoch") epoch = event;
  }
  return epoch;
}

void expect_same_epoch(const nlohmann::json& ranks, const nlohmann::json& single) {
  ASSERT_FALSE(ranks.is_null());
  ASSERT_FALSE(single.is_null());
  for (const char* key : {"train_loss", "test_loss"}) {
    EXPECT_NEAR(ranks[key].get<double>(), single[key].get<double>(), 1e-4) << key;
  }
  // 600 test samples: a prediction that flips on round-off moves accuracy by 1/600.
  EXPECT_NEAR(ranks["test_accuracy"].get<double>(), single["test_accuracy"].get<double>(),
              1.5 / 600);
  EXPECT_NEAR(ranks["train_accuracy"].get<double>(), single["train_accuracy"].get<double>(),
              1.5 / 2048);
  EXPECT_EQ(ranks["steps"], single["steps"]);
}

class DataParallelCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist")) {
      GTEST_SKIP() << "needs Debian's dataset-fashion-mnist (tools/setup.sh installs it)";
    }
  }
};

TEST_F(DataParallelCli, TwoRanksTrainLikeOneProcess) {
  const CommandResult single = run(kBinary + kTrain + " --memory-limit 16MiB");
  ASSERT_EQ(single.code, 0) << single.err;
  const CommandResult ranks = run(kMpirun + " -np 2 " + kBinary + kTrain + " --memory-limit 16MiB");
  ASSERT_EQ(ranks.code, 0) << ranks.err << ranks.out;
  expect_same_epoch(last_epoch(ranks.out), last_epoch(single.out));
}

TEST_F(DataParallelCli, RanksUnderDifferentCapsPlanTheirOwnMicroBatchesAndStillAgree) {
  const CommandResult single = run(kBinary + kTrain + " --memory-limit 16MiB");
  ASSERT_EQ(single.code, 0) << single.err;
  // Without --json rank 1 prints its own plan; with it only rank 0's events come out, so
  // the plans are read from a text run and the losses from a JSON run.
  const std::string text = kTrain.substr(0, kTrain.size() - std::string(" --json").size());
  const std::string mpmd = kMpirun + " -np 1 " + kBinary + "%s --memory-limit 16MiB : -np 1 " +
                           kBinary + "%s --memory-limit 5MiB";
  const auto command = [&](const std::string& args) {
    std::string c = mpmd;
    for (std::size_t at; (at = c.find("%s")) != std::string::npos;) c.replace(at, 2, args);
    return c;
  };
  const CommandResult plans = run(command(text));
  ASSERT_EQ(plans.code, 0) << plans.err << plans.out;
  std::string plan0, plan1;
  std::istringstream lines(plans.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("plan: ", 0) == 0) plan0 = line;
    if (line.rfind("rank 1 of 2: plan: ", 0) == 0) plan1 = line;
  }
  ASSERT_FALSE(plan0.empty()) << plans.out;
  ASSERT_FALSE(plan1.empty()) << plans.out;
  EXPECT_NE(plan0.find("batch 128 -> micro-batch 128 x 1"), std::string::npos) << plan0;
  EXPECT_EQ(plan1.find("micro-batch 128 x 1"), std::string::npos)
      << "rank 1 has a third of the memory but planned like rank 0: " << plan1;
  const CommandResult ranks = run(command(kTrain));
  ASSERT_EQ(ranks.code, 0) << ranks.err;
  expect_same_epoch(last_epoch(ranks.out), last_epoch(single.out));
}

TEST_F(DataParallelCli, AFailingRankEndsEveryRankWithItsMessageAndLeavesNoPartialCheckpoint) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("mb_dist_ckpt_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string args = kTrain + " --checkpoint " + (dir / "lenet.safetensors").string();
  // Rank 1's cap holds LeNet-5's fixed state but not one sample's activations beside it:
  // it throws while planning its first step, when rank 0 is already waiting for it.
  const CommandResult failed =
      run(kMpirun + " -np 1 " + kBinary + args + " --memory-limit 16MiB : -np 1 " + kBinary + args +
          " --memory-limit 1200KiB");
  EXPECT_NE(failed.code, 0);
  EXPECT_NE(failed.code, 124) << "the job hung until the 120 s timeout";
  EXPECT_LT(failed.seconds, 60.0);
  EXPECT_NE(failed.err.find("rank 1 of 2: error: "), std::string::npos) << failed.err;
  EXPECT_NE(failed.err.find("--memory-limit"), std::string::npos) << failed.err;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    ADD_FAILURE() << "left behind: " << entry.path();
  }
  std::filesystem::remove_all(dir);
}

TEST_F(DataParallelCli, ABatchTooSmallForTheRanksIsRefusedWithTheFix) {
  const CommandResult refused = run(kMpirun + " -np 2 " + kBinary +
                                    " train --model lenet5 --dataset fashion-mnist --train-limit 1"
                                    " --test-limit 10 --memory-limit 16MiB --epochs 1");
  EXPECT_NE(refused.code, 0);
  EXPECT_NE(refused.err.find("cannot give each of 2 ranks one"), std::string::npos) << refused.err;
  EXPECT_LT(refused.seconds, 60.0);
}

}  // namespace
}  // namespace mb
