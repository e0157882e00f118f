// Checkpoints under faults: kill -9 at random moments while checkpoints are written leaves
// one that resume accepts, with weights and optimizer state of the same step, every time;
// stale temporaries are cleaned; --keep N keeps N loadable checkpoints; a missing optimizer
// file is a loud warning; an optimizer mismatch names the flag. The truth: the writer fills
// every parameter and every optimizer state value with its step number, so a loaded
// checkpoint is consistent exactly when all of them equal the step in its metadata.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "data/atomic_file.h"
#include "engine/checkpoint.h"
#include "tests/data/temp_dir.h"
#include "tests/mbp/mbp_test_util.h"

namespace mb {
namespace {

std::unique_ptr<Trainer> make_trainer(OptimizerKind kind = OptimizerKind::AdamW) {
  TrainerOptions options;
  options.optimizer.kind = kind;
  return std::make_unique<Trainer>(testing::small_cnn(testing::Extra::BatchNorm), options);
}

// Every parameter and optimizer state value := step, and the trainer's step count.
void stamp(Trainer& trainer, std::int64_t step) {
  for (auto& [name, p] : trainer.model().named_parameters())
    p->value.fill(static_cast<float>(step));
  for (auto& [name, t] : trainer.optimizer().named_state()) t->fill(static_cast<float>(step));
  trainer.set_steps(step);
}

// Loads `path` into a fresh trainer; expects every value to equal the step it names.
std::int64_t expect_consistent(const std::string& path) {
  auto trainer = make_trainer();
  const CheckpointInfo info = load_checkpoint(path, *trainer, "small_cnn");
  EXPECT_TRUE(info.warnings.empty()) << info.warnings.front();
  const float step = static_cast<float>(info.step);
  for (auto& [name, p] : trainer->model().named_parameters()) {
    for (float v : p->value.to_vector()) {
      EXPECT_EQ(v, step) << name << " in " << path;
      break;
    }
  }
  for (auto& [name, t] : trainer->optimizer().named_state()) {
    for (float v : t->to_vector()) {
      EXPECT_EQ(v, step) << name << " in " << path;
      break;
    }
  }
  return info.step;
}

std::vector<std::string> files_in(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(CheckpointFaults, KillNineWhileWritingLeavesAConsistentCheckpointTwentyTimesOutOfTwenty) {
  testing::TempDir dir;
  const std::string path = dir.file("ck.safetensors");
  // What a writer needs before its first checkpoint lands (a trainer, one write), timed
  // here: each kill waits at least that long, so that under a sanitizer on a loaded machine
  // the writers still commit between the kills.
  const auto setup_started = std::chrono::steady_clock::now();
  {
    auto trainer = make_trainer();
    stamp(*trainer, 1);
    save_checkpoint(path, *trainer, "small_cnn", TrainingPosition{});
  }
  const auto setup = std::chrono::steady_clock::now() - setup_started;
  std::mt19937 rng(7);
  std::int64_t last_step = 1;
  int interrupted_writes = 0;
  for (int round = 0; round < 20; ++round) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // The writer: checkpoints as fast as it can, each with a higher step, until killed.
      auto trainer = make_trainer();
      for (std::int64_t step = last_step + 1;; ++step) {
        stamp(*trainer, step);
        save_checkpoint(path, *trainer, "small_cnn", TrainingPosition{}, {}, 2);
      }
    }
    std::this_thread::sleep_for(setup + std::chrono::microseconds(2000 + rng() % 30000));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    for (const std::string& name : files_in(std::filesystem::path(path).parent_path())) {
      if (name.find(".tmp.") != std::string::npos) ++interrupted_writes;
    }
    last_step = expect_consistent(path);
    // The kept previous checkpoint is consistent too.
    for (const std::string& name : files_in(std::filesystem::path(path).parent_path())) {
      if (name.rfind("ck.step-", 0) == 0) expect_consistent(dir.file(name));
    }
  }
  EXPECT_GT(last_step, 2) << "the writer must have committed checkpoints between the kills";
  // Most kills land inside a write (the writer does nothing else); the next writer cleans
  // what they left.
  EXPECT_GT(interrupted_writes, 0);
  {
    auto trainer = make_trainer();
    stamp(*trainer, last_step + 1);
    save_checkpoint(path, *trainer, "small_cnn", TrainingPosition{}, {}, 2);
  }
  int temporaries = 0, optimizer_files = 0;
  for (const std::string& name : files_in(std::filesystem::path(path).parent_path())) {
    temporaries += name.find(".tmp.") != std::string::npos ? 1 : 0;
    optimizer_files +=
        name.find(".optimizer-") != std::string::npos && name.find(".tmp.") == std::string::npos;
  }
  EXPECT_EQ(temporaries, 0) << "stale temporaries of killed writers are removed";
  EXPECT_EQ(optimizer_files, 2) << "one per kept checkpoint, the orphans removed";
}

TEST(CheckpointFaults, KeepNKeepsTheNewestNLoadableCheckpoints) {
  testing::TempDir dir;
  const std::string path = dir.file("run.safetensors");
  auto trainer = make_trainer();
  for (std::int64_t step = 1; step <= 5; ++step) {
    stamp(*trainer, step);
    save_checkpoint(path, *trainer, "small_cnn", TrainingPosition{0, step}, {}, 3);
  }
  EXPECT_EQ(expect_consistent(path), 5);
  EXPECT_EQ(expect_consistent(dir.file("run.step-4.safetensors")), 4);
  EXPECT_EQ(expect_consistent(dir.file("run.step-3.safetensors")), 3);
  EXPECT_FALSE(std::filesystem::exists(dir.file("run.step-2.safetensors")));
  int optimizer_files = 0;
  for (const std::string& name : files_in(dir.path())) {
    optimizer_files += name.find(".optimizer-") != std::string::npos ? 1 : 0;
  }
  EXPECT_EQ(optimizer_files, 3);
  EXPECT_THROW(save_checkpoint(path, *trainer, "small_cnn", TrainingPosition{}, {}, 0),
               InvalidArgument);
}

TEST(CheckpointFaults, MissingOptimizerStateIsALoudWarningAndAnotherOptimizerNamesTheFlag) {
  testing::TempDir dir;
  const std::string path = dir.file("ck.safetensors");
  {
    auto trainer = make_trainer(OptimizerKind::AdamW);
    stamp(*trainer, 3);
    save_checkpoint(path, *trainer, "small_cnn", TrainingPosition{});
  }
  auto sgd = make_trainer(OptimizerKind::Sgd);
  try {
    load_checkpoint(path, *sgd, "small_cnn");
    FAIL() << "an AdamW checkpoint was loaded into an SGD trainer";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--optimizer adamw"), std::string::npos) << e.what();
  }
  for (const std::string& name : files_in(dir.path())) {
    if (name.find(".optimizer-") != std::string::npos) std::filesystem::remove(dir.file(name));
  }
  auto trainer = make_trainer(OptimizerKind::AdamW);
  const CheckpointInfo info = load_checkpoint(path, *trainer, "small_cnn");
  ASSERT_EQ(info.warnings.size(), 1u);
  EXPECT_NE(info.warnings[0].find("missing"), std::string::npos) << info.warnings[0];
  EXPECT_NE(info.warnings[0].find("does not continue exactly"), std::string::npos);
}

TEST(AtomicFile, UniqueTemporariesNothingLeftBehindAndStaleOnesRemoved) {
  testing::TempDir dir;
  const std::string target = dir.file("x.bin");
  {
    AtomicFile a(target), b(target);
    EXPECT_NE(a.temporary(), b.temporary()) << "two writers of one target never share a file";
    a.write("a", 1, "a byte");
    b.write("bb", 2, "two bytes");
    b.commit();
    EXPECT_TRUE(std::filesystem::exists(a.temporary()));
  }  // a is destroyed uncommitted: its temporary goes
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"x.bin"});
  EXPECT_EQ(std::filesystem::file_size(target), 2u);
  // A temporary of a process that no longer runs is stale; one of a live process is not.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  const std::string stale = target + ".tmp." + std::to_string(child) + ".0";
  const std::string live = target + ".tmp." + std::to_string(::getppid()) + ".0";
  std::ofstream(stale) << "partial";
  std::ofstream(live) << "in progress";
  EXPECT_EQ(remove_stale_temporaries(target), 1);
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(live));
}

}  // namespace
}  // namespace mb
