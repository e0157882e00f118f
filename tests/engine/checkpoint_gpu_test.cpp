// Checkpoints across devices (label gpu; skips without a device): 2 steps on one device +
// save + load into a fresh trainer (other initial weights) on the other device + 2 steps
// there continues the uninterrupted 4-step run, as checkpoint_test.cpp asks on the CPU.
//
// Truth: the uninterrupted run on the CPU. What a checkpoint carries is checked exactly: after
// the load, every parameter, buffer (BatchNorm's running statistics and batch count) and
// optimizer state tensor of the new trainer equals the saving trainer's bit for bit, and the
// step count (the optimizer's bias correction and first-step rule read it) is restored. The
// 2 steps after it are compared with the CPU run within rtol 1e-4, atol 1e-5: TF32 is off,
// so the backends differ by fp32 round-off in a different summation order (a parameter moves
// by about lr * |g| * 1e-6) and, rarely, a ReLU input within rounding of 0 that takes the
// other side of its mask on one of them (by less than 1e-6); resuming without the momentum
// or the moments changes the next update by 0.1 lr |g| or more (1e-4 and up here).
//
// SGD runs the BatchNorm model (the running statistics travel too). AdamW runs the model
// without BatchNorm: a bias in front of BatchNorm has a zero gradient in exact arithmetic,
// and AdamW's step m / sqrt(v) turns the round-off left there into +-lr in a direction that
// depends on the backend's rounding, which no tolerance between backends can absorb.
//
// On one GPU in deterministic mode a resumed run equals the uninterrupted GPU run bit for bit.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "runtime/context.h"
#include "tests/mbp/mbp_test_util.h"
#include "tests/test_util.h"

namespace mb {
namespace {

const Device kGpu = Device::cuda(0);
constexpr std::int64_t kBatch = 12;

// A fresh folder for the test's checkpoint files, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("mb_ckpt_gpu_" + std::to_string(::getpid()) + "_" + name)) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code error;
    std::filesystem::remove_all(path_, error);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

testing::Extra model_for(OptimizerKind kind) {
  return kind == OptimizerKind::Sgd ? testing::Extra::BatchNorm : testing::Extra::None;
}

TrainerOptions options_for(OptimizerKind kind, const Device& device) {
  TrainerOptions options;
  options.device = device;
  options.micro_batch = 5;  // [5, 5, 2]
  options.optimizer.kind = kind;
  options.optimizer.momentum = 0.9f;
  return options;
}

void run_steps(Trainer& trainer, int first, int count) {
  for (int s = first; s < first + count; ++s) {
    testing::Batch batch = testing::make_batch(kBatch, 500 + s);
    trainer.step(batch.images, batch.labels, 0.05f);
  }
}

// Equal bits (a -0 or a NaN payload counts); reports the first difference.
void expect_same_bits(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
  if (actual.dtype() == DType::Int32) {
    EXPECT_EQ(actual.to_vector_int(), expected.to_vector_int()) << what;
    return;
  }
  const std::vector<float> a = actual.to_vector(), b = expected.to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << ": element " << i << " is " << a[i] << ", expected " << b[i];
      return;
    }
  }
}

// Every parameter, buffer and optimizer state tensor of `actual` equals `expected`'s, bit
// for bit, whatever device each lives on; and so does the step count.
void expect_same_state(Trainer& actual, Trainer& expected, const std::string& what) {
  EXPECT_EQ(actual.steps(), expected.steps()) << what;
  const auto pa = actual.model().named_parameters(), pe = expected.model().named_parameters();
  ASSERT_EQ(pa.size(), pe.size()) << what;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    expect_same_bits(pa[i].second->value, pe[i].second->value, what + " " + pa[i].first);
  }
  const auto ba = actual.model().named_buffers(), be = expected.model().named_buffers();
  ASSERT_EQ(ba.size(), be.size()) << what;
  for (std::size_t i = 0; i < ba.size(); ++i) {
    expect_same_bits(*ba[i].second, *be[i].second, what + " " + ba[i].first);
  }
  const auto sa = actual.optimizer().named_state(), se = expected.optimizer().named_state();
  ASSERT_EQ(sa.size(), se.size()) << what;
  ASSERT_FALSE(sa.empty()) << what << ": no optimizer state to carry";
  for (std::size_t i = 0; i < sa.size(); ++i) {
    ASSERT_EQ(sa[i].first, se[i].first) << what;
    expect_same_bits(*sa[i].second, *se[i].second, what + " " + sa[i].first);
  }
}

// Parameters within rtol 1e-4, atol 1e-5 of the reference (see the top of the file); float
// buffers the same; integer buffers (the batch count) equal.
void expect_continues(Module& actual, Module& expected, const std::string& what) {
  testing::expect_parameters_close(testing::parameter_values(actual),
                                   testing::parameter_values(expected), 1e-4, 1e-5, what);
  const auto ba = actual.named_buffers(), be = expected.named_buffers();
  ASSERT_EQ(ba.size(), be.size()) << what;
  for (std::size_t i = 0; i < ba.size(); ++i) {
    if (ba[i].second->dtype() != DType::Float32) {
      EXPECT_EQ(ba[i].second->to_vector_int(), be[i].second->to_vector_int())
          << what << " " << ba[i].first;
      continue;
    }
    testing::expect_parameters_close({ba[i].second->to_vector()}, {be[i].second->to_vector()}, 1e-4,
                                     1e-5, what + " " + ba[i].first);
  }
}

// Trains 2 steps on `first_device`, saves, loads into a fresh trainer on `second_device`
// (checking the state it carries), trains 2 more there and compares with 4 steps on the CPU.
void resume_across(const Device& first_device, const Device& second_device) {
  for (const OptimizerKind kind : {OptimizerKind::Sgd, OptimizerKind::AdamW}) {
    const std::string what = std::string(optimizer_name(kind)) + ", " + first_device.str() +
                             " -> " + second_device.str();
    SCOPED_TRACE(what);
    auto straight = testing::small_cnn(model_for(kind));
    Trainer reference(straight, options_for(kind, Device::cpu()));
    run_steps(reference, 0, 4);

    TempDir dir(optimizer_name(kind));
    const std::string path = dir.file("small_cnn.safetensors");
    auto first_model = testing::small_cnn(model_for(kind));
    Trainer first(first_model, options_for(kind, first_device));
    run_steps(first, 0, 2);
    save_checkpoint(path, first, "small_cnn", TrainingPosition{1, 0});

    auto resumed_model = testing::small_cnn(model_for(kind), /*seed=*/99);
    Trainer resumed(resumed_model, options_for(kind, second_device));
    const CheckpointInfo info = load_checkpoint(path, resumed, "small_cnn");
    EXPECT_TRUE(info.warnings.empty()) << (info.warnings.empty() ? "" : info.warnings.front());
    EXPECT_EQ(info.step, 2);
    EXPECT_EQ(info.position.epoch, 1);
    EXPECT_EQ(info.position.step_in_epoch, 0);
    expect_same_state(resumed, first, "loaded " + what);
    EXPECT_EQ(resumed_model->named_parameters().front().second->value.device(), second_device);

    run_steps(resumed, 2, 2);
    EXPECT_EQ(resumed.steps(), 4);
    expect_continues(*resumed_model, *straight, "resumed " + what);
  }
}

TEST(CheckpointGpu, TrainedOnTheGpuResumesOnTheCpu) {
  MB_SKIP_WITHOUT_CUDA();
  testing::ScopedCudaMath mode(/*deterministic=*/true);
  resume_across(kGpu, Device::cpu());
}

TEST(CheckpointGpu, TrainedOnTheCpuResumesOnTheGpu) {
  MB_SKIP_WITHOUT_CUDA();
  testing::ScopedCudaMath mode(/*deterministic=*/true);
  resume_across(Device::cpu(), kGpu);
}

TEST(CheckpointGpu, ResumedOnTheGpuEqualsTheUninterruptedGpuRunBitForBit) {
  MB_SKIP_WITHOUT_CUDA();
  testing::ScopedCudaMath mode(/*deterministic=*/true);
  for (const OptimizerKind kind : {OptimizerKind::Sgd, OptimizerKind::AdamW}) {
    SCOPED_TRACE(optimizer_name(kind));
    auto straight = testing::small_cnn(testing::Extra::BatchNorm);
    Trainer reference(straight, options_for(kind, kGpu));
    run_steps(reference, 0, 4);

    TempDir dir(std::string("gpu_") + optimizer_name(kind));
    const std::string path = dir.file("small_cnn.safetensors");
    {
      auto first_model = testing::small_cnn(testing::Extra::BatchNorm);
      Trainer first(first_model, options_for(kind, kGpu));
      run_steps(first, 0, 2);
      save_checkpoint(path, first, "small_cnn", TrainingPosition{1, 0});
    }
    auto resumed_model = testing::small_cnn(testing::Extra::BatchNorm, /*seed=*/99);
    Trainer resumed(resumed_model, options_for(kind, kGpu));
    EXPECT_EQ(load_checkpoint(path, resumed, "small_cnn").step, 2);
    run_steps(resumed, 2, 2);
    expect_same_state(resumed, reference, "resumed on the GPU");
  }
}

}  // namespace
}  // namespace mb
