// Checkpoints: 2 steps + save + load into a fresh trainer + 2 steps equals 4 steps, bit for
// bit; a checkpoint for another model is refused naming the first mismatched key.
#include "engine/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "data/safetensors.h"
#include "models/zoo.h"
#include "tests/mbp/mbp_test_util.h"

namespace mb {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("mb_ckpt_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

// Removes a checkpoint and its optimizer files (named "<name>.optimizer-<step>-<pid>-<token>
// .safetensors" since the two-file commit, or "<name>.optimizer.safetensors" before).
void remove_checkpoint(const std::string& path) {
  const std::filesystem::path file(path);
  const std::string prefix = file.filename().string() + ".optimizer";
  std::filesystem::remove(file);
  for (const auto& entry : std::filesystem::directory_iterator(file.parent_path())) {
    if (entry.path().filename().string().rfind(prefix, 0) == 0) {
      std::filesystem::remove(entry.path());
    }
  }
}

TrainerOptions options_for(OptimizerKind kind) {
  TrainerOptions options;
  options.micro_batch = 5;
  options.optimizer.kind = kind;
  options.optimizer.momentum = 0.9f;
  return options;
}

void run_steps(Trainer& trainer, int first, int count) {
  for (int s = first; s < first + count; ++s) {
    testing::Batch batch = testing::make_batch(12, 500 + s);
    trainer.step(batch.images, batch.labels, 0.05f);
  }
}

TEST(Checkpoint, ResumeContinuesExactly) {
  for (OptimizerKind kind : {OptimizerKind::Sgd, OptimizerKind::AdamW}) {
    auto straight = testing::small_cnn(testing::Extra::BatchNorm);
    Trainer reference(straight, options_for(kind));
    run_steps(reference, 0, 4);

    const std::string path = temp_path(std::string(optimizer_name(kind)) + ".safetensors");
    {
      auto first = testing::small_cnn(testing::Extra::BatchNorm);
      Trainer trainer(first, options_for(kind));
      run_steps(trainer, 0, 2);
      save_checkpoint(path, trainer, "small_cnn", TrainingPosition{1, 0});
    }
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    auto resumed_model = testing::small_cnn(testing::Extra::BatchNorm, /*seed=*/99);
    Trainer resumed(resumed_model, options_for(kind));
    CheckpointInfo info = load_checkpoint(path, resumed, "small_cnn");
    EXPECT_EQ(info.step, 2);
    EXPECT_EQ(info.position.epoch, 1);
    EXPECT_EQ(info.position.step_in_epoch, 0);
    EXPECT_EQ(resumed.steps(), 2);
    run_steps(resumed, 2, 2);
    testing::expect_parameters_close(testing::parameter_values(*resumed_model),
                                     testing::parameter_values(*straight), 0.0, 0.0,
                                     std::string("resume ") + optimizer_name(kind));
    auto buffers_a = resumed_model->named_buffers();
    auto buffers_b = straight->named_buffers();
    ASSERT_EQ(buffers_a.size(), buffers_b.size());
    for (std::size_t i = 0; i < buffers_a.size(); ++i) {
      if (buffers_a[i].second->dtype() != DType::Float32) continue;
      EXPECT_EQ(buffers_a[i].second->to_vector(), buffers_b[i].second->to_vector())
          << buffers_a[i].first;
    }
    remove_checkpoint(path);
  }
}

TEST(Checkpoint, AnotherModelIsRefusedNamingTheKey) {
  const std::string path = temp_path("other.safetensors");
  {
    auto model = build_model("lenet5");
    Trainer trainer(model, TrainerOptions{});
    save_checkpoint(path, trainer, "lenet5", TrainingPosition{});
  }
  ModelConfig config;
  config.in_channels = 3;
  auto other = build_model("lenet5", config);
  Trainer trainer(other, TrainerOptions{});
  try {
    load_checkpoint(path, trainer, "lenet5");
    FAIL() << "loading a 1-channel checkpoint into a 3-channel model succeeded";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("conv1.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("[6, 1, 5, 5]"), std::string::npos) << what;
    EXPECT_NE(what.find("[6, 3, 5, 5]"), std::string::npos) << what;
  }
  EXPECT_THROW(load_checkpoint(path, trainer, "resnet18"), InvalidArgument);
  remove_checkpoint(path);
}

// Counts in a checkpoint's metadata come from a file: a negative, huge or malformed epoch or
// step is refused naming the key, instead of being trained from (epoch INT_MAX once asked
// for "--epochs larger than 2147483647").
TEST(Checkpoint, MetadataCountsOutsideTheirRangeAreRefused) {
  const std::string path = temp_path("counts.safetensors");
  {
    auto model = build_model("lenet5");
    Trainer trainer(model, TrainerOptions{});
    save_checkpoint(path, trainer, "lenet5", TrainingPosition{});
  }
  const SafetensorsFile saved = load_safetensors(path);
  std::vector<NamedTensor> tensors;
  for (const std::string& name : saved.order) tensors.push_back({name, saved.tensors.at(name)});
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"epoch", "-3"},
      {"epoch", "2147483647"},
      {"epoch", "12abc"},
      {"epoch", "1e3"},
      {"step", "99999999999999999999"},
      {"step", ""},
      {"step_in_epoch", "-1"},
      {"step_in_epoch", "4611686018427387905"}};
  for (const auto& [key, value] : bad) {
    SCOPED_TRACE(key + " = '" + value + "'");
    std::map<std::string, std::string> metadata = saved.metadata;
    metadata[key] = value;
    save_safetensors(path, tensors, metadata);
    auto model = build_model("lenet5");
    Trainer trainer(model, TrainerOptions{});
    try {
      load_checkpoint(path, trainer, "lenet5");
      ADD_FAILURE() << "accepted";
    } catch (const IoError& e) {
      const std::string message = e.message();
      EXPECT_NE(message.find("metadata " + key + " '" + value + "'"), std::string::npos) << message;
      EXPECT_NE(message.find("Fix:"), std::string::npos) << message;
    }
  }
  std::map<std::string, std::string> metadata = saved.metadata;
  metadata["epoch"] = "1000000";  // the largest --epochs
  save_safetensors(path, tensors, metadata);
  auto model = build_model("lenet5");
  Trainer trainer(model, TrainerOptions{});
  const CheckpointInfo info = load_checkpoint(path, trainer, "lenet5");
  EXPECT_EQ(info.position.epoch, 1000000);
  remove_checkpoint(path);
}

}  // namespace
}  // namespace mb
