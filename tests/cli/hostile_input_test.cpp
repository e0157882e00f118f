// Hostile input to the command line, as a user would type it: each bad flag, cap or data
// folder is refused before any work starts, with an exit code, a message naming the value
// and the fix, no source path of ours (file:line is for MB_DEBUG=1), and no 309-digit range.
// Truth: the flag's documented range, the bytes of LeNet-5's state counted by hand
// (61,706 parameters x 4 bytes x 4 copies for AdamW), the files written here.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/cli/cli_run.h"
#include "tests/data/temp_dir.h"

namespace mb {
namespace {

using testing::CliResult;
using testing::contains;
using testing::run;

// What every refusal shares: no build path, no double's full range, a short first line.
void expect_user_facing(const CliResult& r) {
  EXPECT_FALSE(contains(r.err, ".cpp:")) << r.err;
  EXPECT_FALSE(contains(r.err, "check failed")) << r.err;
  EXPECT_FALSE(contains(r.err, "1797693134862")) << r.err;
  EXPECT_LT(r.err.substr(0, r.err.find('\n')).size(), 900u) << r.err;
}

struct BadFlag {
  std::vector<std::string> args;
  int code;
  std::vector<std::string> says;
};

TEST(HostileInput, BadFlagValuesAreRefusedNamingValueAndRange) {
  const std::vector<BadFlag> cases = {
      {{"plan", "--memory-limit", "0"}, 2, {"--memory-limit 0", "0 bytes", "Fix:"}},
      {{"plan", "--memory-limit", "0.5"}, 2, {"'0.5'", "whole number"}},
      {{"plan", "--memory-limit", "1.5"}, 2, {"'1.5'", "whole number"}},
      {{"memprofile", "--out", "x", "--memory-limit", "0"}, 2, {"0 bytes"}},
      {{"plan", "--batch-size", "0"}, 2, {"--batch-size", "'0' is outside [1, "}},
      {{"plan", "--batch-size", "99999999999999999999"}, 2, {"'99999999999999999999' is outside"}},
      {{"plan", "--batch-size", "9223372036854775808"}, 2, {"is outside"}},
      {{"plan", "--batch-size", "1.5"}, 2, {"'1.5' is not a whole number"}},
      {{"plan", "--batch-size", "1e3"}, 2, {"'1e3' is not a whole number"}},
      {{"train", "--max-steps", "-1"}, 2, {"--max-steps", "'-1' is outside [0, "}},
      {{"train", "--epochs", "0"}, 2, {"--epochs", "'0' is outside [1, 1000000]"}},
      {{"train", "--keep", "0"}, 2, {"--keep", "outside [1, 1000000]"}},
      {{"train", "--train-limit", "-5"}, 2, {"--train-limit", "outside"}},
      {{"train", "--image-size", "5000"}, 2, {"--image-size", "outside [0, 4096]"}},
      {{"train", "--clip-norm", "-1"}, 2, {"--clip-norm", "'-1' is outside"}},
      {{"train", "--clip-norm", "nan"}, 2, {"--clip-norm", "'nan'"}},
      {{"train", "--momentum", "2"}, 2, {"--momentum", "'2' is outside [0, 1]"}},
      {{"train", "--warmup-epochs", "nan"}, 2, {"--warmup-epochs", "'nan'"}},
      {{"train", "--warmup-epochs", "1e30"}, 2, {"--warmup-epochs", "'1e30' is outside"}},
      {{"train", "--warmup-epochs", "-1"}, 2, {"--warmup-epochs", "'-1' is outside"}},
      {{"train", "--lr", "inf"}, 2, {"--lr", "'inf'"}},
      {{"train", "--seed", "-1"}, 2, {"--seed", "'-1' is not a non-negative integer"}},
      {{"train", "--seed", "18446744073709551616"}, 2, {"--seed", "larger than 2^64 - 1"}},
      {{"memprofile", "--out", "x", "--steps", "0"}, 2, {"--steps", "outside [1, "}},
      {{"memprofile", "--out", "x", "--seed", "-3"}, 2, {"--seed"}},
      {{"memprofile", "--out", "x", "--image-size", "-1"}, 2, {"--image-size", "outside"}},
      {{"train", "--tf32", "maybe"}, 2, {"--tf32", "maybe"}},
  };
  for (const BadFlag& c : cases) {
    std::string line;
    for (const std::string& a : c.args) line += a + " ";
    SCOPED_TRACE(line);
    const CliResult r = run(c.args);
    EXPECT_EQ(r.code, c.code) << r.err;
    for (const std::string& part : c.says) EXPECT_TRUE(contains(r.err, part)) << r.err;
    EXPECT_FALSE(contains(r.out, "epoch 1/")) << "work started: " << r.out;
    expect_user_facing(r);
  }
}

// A cap that cannot hold the model's fixed state gets a message about the fixed state (with
// its bytes) and the fixes that apply, not "lower --micro-batch", which cannot help.
TEST(HostileInput, CapsTooSmallForTheFixedStateSaySoWithTheBytes) {
  struct Cap {
    std::string limit;
    std::string says;
  };
  // LeNet-5: 61,706 parameters = 241.04 KiB; AdamW keeps 2 state copies, so parameters +
  // gradients + state = 4 x 246,824 B = 964.16 KiB.
  for (const Cap& c : {Cap{"128KiB", "its parameters alone do not fit under the cap"},
                       Cap{"600KiB",
                           "parameters 241.04 KiB + gradients 241.04 KiB + "
                           "optimizer state 482.08 KiB = 964.16 KiB"},
                       Cap{"1MiB", "the smallest micro-batch (1 sample(s)) does not fit"}}) {
    SCOPED_TRACE(c.limit);
    const CliResult r = run({"plan", "--model", "lenet5", "--memory-limit", c.limit});
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_TRUE(contains(r.err, c.says)) << r.err;
    EXPECT_TRUE(contains(r.err, "raise --memory-limit")) << r.err;
    EXPECT_FALSE(contains(r.err, "lower --micro-batch")) << r.err;
    EXPECT_TRUE(contains(r.err, "cap " + c.limit.substr(0, c.limit.size() - 3))) << r.err;
    expect_user_facing(r);
  }
}

// Without --memory-limit the CPU arena is capped by what the system says is available, so
// the plan reports a real size (not 16777216.00 TiB) and a batch beyond the training set is
// planned as the set, not probed at 100,000 samples.
TEST(HostileInput, DefaultCpuCapIsRealAndBatchesStopAtTheTrainingSet) {
  const CliResult plan = run({"plan", "--model", "lenet5", "--json"});
  ASSERT_EQ(plan.code, 0) << plan.err;
  EXPECT_FALSE(contains(plan.out, "TiB")) << plan.out;
  std::istringstream lines(plan.out);
  std::string line;
  bool seen = false;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    const auto event = nlohmann::json::parse(line);
    if (event.value("event", "") != "plan") continue;
    seen = true;
    const double available = event.at("available_bytes").get<double>();
    EXPECT_GT(available, 0.0);
    EXPECT_LT(available, 64.0 * (1ull << 40)) << line;  // no machine here has 64 TiB
  }
  EXPECT_TRUE(seen) << plan.out;

  const CliResult train =
      run({"train", "--model", "lenet5", "--dataset", "synthetic", "--train-limit", "48",
           "--test-limit", "16", "--batch-size", "100000", "--epochs", "1", "--json"});
  ASSERT_EQ(train.code, 0) << train.err;
  EXPECT_TRUE(contains(train.out, "batch 100000 is more than the 48 training samples"))
      << train.out;
  std::istringstream events(train.out);
  while (std::getline(events, line)) {
    if (line.empty() || line[0] != '{') continue;
    const auto event = nlohmann::json::parse(line);
    if (event.value("event", "") == "plan") {
      EXPECT_EQ(event.at("batch_size").get<std::int64_t>(), 48) << line;
      EXPECT_LE(event.at("micro_batch").get<std::int64_t>(), 48) << line;
    }
  }
}

void append_be32(std::vector<std::uint8_t>& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(value >> shift));
}

// A Fashion-MNIST-style split (raw IDX) of n images of size x size.
void write_split(const testing::TempDir& dir, const std::string& prefix, std::uint32_t n,
                 std::uint32_t size) {
  std::vector<std::uint8_t> images, labels;
  append_be32(images, 0x00000803);
  append_be32(images, n);
  append_be32(images, size);
  append_be32(images, size);
  images.resize(images.size() + static_cast<std::size_t>(n) * size * size, 100);
  append_be32(labels, 0x00000801);
  append_be32(labels, n);
  for (std::uint32_t i = 0; i < n; ++i) labels.push_back(static_cast<std::uint8_t>(i % 10));
  testing::write_bytes(dir.file(prefix + "-images-idx3-ubyte"), images);
  testing::write_bytes(dir.file(prefix + "-labels-idx1-ubyte"), labels);
}

// Data problems are found when the data is loaded, before the first epoch, not after it.
TEST(HostileInput, DataFoldersThatCannotTrainAreRefusedBeforeTraining) {
  testing::TempDir mismatch;
  write_split(mismatch, "train", 20, 28);
  write_split(mismatch, "t10k", 10, 32);
  CliResult r = run({"train", "--data-dir", mismatch.path().string(), "--batch-size", "10"});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "[1, 28, 28]")) << r.err;
  EXPECT_TRUE(contains(r.err, "[1, 32, 32]")) << r.err;
  EXPECT_FALSE(contains(r.out, "epoch 1/")) << r.out;
  expect_user_facing(r);

  testing::TempDir empty_test;
  write_split(empty_test, "train", 20, 28);
  write_split(empty_test, "t10k", 0, 28);
  r = run({"train", "--data-dir", empty_test.path().string(), "--batch-size", "10"});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "no test samples")) << r.err;
  EXPECT_FALSE(contains(r.out, "test acc 0.00%")) << r.out;
  expect_user_facing(r);
  r = run({"eval", "--data-dir", empty_test.path().string(), "--checkpoint", "none.safetensors"});
  EXPECT_NE(r.code, 0);
  expect_user_facing(r);

  r = run({"train", "--dataset", "synthetic", "--train-limit", "16", "--checkpoint",
           "/nonexistent/folder/ck.safetensors"});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "/nonexistent/folder does not exist")) << r.err;
  EXPECT_FALSE(contains(r.out, "epoch 1/")) << r.out;
  expect_user_facing(r);
}

// MB_DEBUG=1 adds the record a bug report needs: where it was thrown.
TEST(HostileInput, MbDebugAddsTheSourceLocation) {
  ::setenv("MB_DEBUG", "1", 1);
  const CliResult r = run({"plan", "--memory-limit", "0"});
  ::unsetenv("MB_DEBUG");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.err, "error: --memory-limit 0")) << r.err;
  EXPECT_TRUE(contains(r.err, "debug: ")) << r.err;
  EXPECT_TRUE(contains(r.err, "flags.cpp:")) << r.err;
}

}  // namespace
}  // namespace mb
