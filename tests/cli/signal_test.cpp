// Ctrl-C during `microbatch train` (the real binary, in a child process): the first SIGINT
// finishes the current step, writes the checkpoint at the position reached and exits 130;
// the checkpoint is complete (resume accepts it) and no partial file is left. Truth: the
// checkpoint's own metadata against the step events the process printed before the signal.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "data/safetensors.h"
#include "tests/data/temp_dir.h"

namespace mb {
namespace {

TEST(Signals, FirstSigintFinishesTheStepSavesTheCheckpointAndExits130) {
  testing::TempDir dir;
  const std::string binary = std::string(MB_BINARY_DIR) + "/tools/microbatch";
  const std::string checkpoint = dir.file("ck.safetensors");
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::execl(binary.c_str(), binary.c_str(), "train", "--model", "lenet5", "--device", "cpu",
            "--train-limit", "6000", "--test-limit", "100", "--batch-size", "100", "--epochs", "2",
            "--checkpoint", checkpoint.c_str(), "--json", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  FILE* lines = ::fdopen(out[0], "r");
  char buffer[1 << 16];
  std::int64_t steps_seen = 0;
  while (std::fgets(buffer, sizeof buffer, lines) != nullptr) {
    const nlohmann::json event = nlohmann::json::parse(buffer, nullptr, false);
    if (event.is_object() && event.value("event", "") == "step" && ++steps_seen == 3) {
      ::kill(child, SIGINT);
      break;
    }
  }
  std::int64_t last_step = 0;
  bool interrupted = false;
  while (std::fgets(buffer, sizeof buffer, lines) != nullptr) {
    const nlohmann::json event = nlohmann::json::parse(buffer, nullptr, false);
    if (!event.is_object()) continue;
    if (event.value("event", "") == "step") last_step = event["step"].get<std::int64_t>();
    if (event.value("event", "") == "interrupted") interrupted = true;
  }
  std::fclose(lines);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the first SIGINT must not kill the process";
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_TRUE(interrupted);
  ASSERT_GE(steps_seen, 3) << "the child never trained (binary " << binary << ")";
  const SafetensorsFile saved = load_safetensors(checkpoint);
  const std::int64_t step = std::stoll(saved.metadata.at("step"));
  EXPECT_GE(step, 3);
  if (last_step > 0) EXPECT_EQ(step, last_step) << "saved after the last step it reported";
  EXPECT_EQ(saved.metadata.at("epoch"), "0") << "60 steps per epoch: stopped inside epoch 1";
  EXPECT_EQ(saved.metadata.at("step_in_epoch"), std::to_string(step));
  EXPECT_TRUE(std::filesystem::exists(dir.file(saved.metadata.at("optimizer_file"))));
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos)
        << "partial file left: " << entry.path();
  }
}

}  // namespace
}  // namespace mb
