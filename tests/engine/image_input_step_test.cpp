// 8-bit batches (image folders): a training step and an evaluation that take uint8 images
// and TrainerOptions::input_normalization give exactly what the same steps give on float32
// images normalized in the test by torchvision's formula, (v / 255 - mean) / std, with
// uneven micro-batches and a re-plan when the input type changes.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "engine/evaluate.h"
#include "engine/trainer.h"
#include "tests/mbp/mbp_test_util.h"

namespace mb {
namespace {

ChannelNormalization normalization() {
  ChannelNormalization n;
  n.channels = 3;
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
  for (int c = 0; c < 3; ++c) {
    n.mean[c] = mean[c];
    n.std[c] = std[c];
  }
  return n;
}

struct Pair {
  Tensor bytes;   // uint8 [n, 3, 8, 8]
  Tensor floats;  // the same, normalized here
  Tensor labels;
};

Pair make_pair(std::int64_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  TensorOptions byte_options;
  byte_options.dtype = DType::UInt8;
  Pair p;
  p.bytes = Tensor::empty(Shape{n, 3, 8, 8}, byte_options);
  p.floats = Tensor::empty(Shape{n, 3, 8, 8});
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  const ChannelNormalization norm = normalization();
  auto* b = p.bytes.data<std::uint8_t>();
  float* f = p.floats.data<float>();
  for (std::int64_t i = 0; i < p.bytes.numel(); ++i) {
    b[i] = static_cast<std::uint8_t>(rng() & 0xFF);
    const int c = static_cast<int>((i / 64) % 3);
    f[i] = (static_cast<float>(b[i]) / 255.0f - norm.mean[c]) / norm.std[c];
  }
  for (auto& l : labels) l = static_cast<std::int32_t>(rng() % 5);
  p.labels = Tensor::from_vector_int(labels, {n});
  return p;
}

TEST(ImageInputStep, Uint8StepsEqualNormalizedFloatSteps) {
  TrainerOptions options;
  options.micro_batch = 4;  // 10 samples: 4 + 4 + 2
  options.optimizer.kind = OptimizerKind::Sgd;
  options.optimizer.momentum = 0.9f;
  auto float_model = testing::small_cnn(testing::Extra::BatchNorm);
  auto byte_model = testing::small_cnn(testing::Extra::BatchNorm);
  Trainer float_trainer(float_model, options);
  options.input_normalization = normalization();
  Trainer byte_trainer(byte_model, options);
  for (int s = 0; s < 3; ++s) {
    const Pair batch = make_pair(10, 100 + s);
    const StepResult a = float_trainer.step(batch.floats, batch.labels, 0.05f);
    const StepResult b = byte_trainer.step(batch.bytes, batch.labels, 0.05f);
    EXPECT_EQ(a.loss, b.loss) << "step " << s;
    EXPECT_EQ(b.micro_batches, (std::vector<std::int64_t>{4, 4, 2}));
  }
  testing::expect_parameters_close(testing::parameter_values(*byte_model),
                                   testing::parameter_values(*float_model), 0.0, 0.0,
                                   "uint8 vs float32 input");
  // Evaluation takes the same normalization.
  const Pair test = make_pair(9, 7);
  const EvalResult fe =
      evaluate(*float_model, Device::cpu(), test.floats, test.labels, 4, LossOptions{});
  const EvalResult be = evaluate(*byte_model, Device::cpu(), test.bytes, test.labels, 4,
                                 LossOptions{}, normalization());
  EXPECT_EQ(fe.loss, be.loss);
  EXPECT_EQ(fe.correct, be.correct);
}

TEST(ImageInputStep, WithoutANormalizationUint8IsScaledTo01) {
  const Pair p = make_pair(2, 3);
  const Tensor out = model_input(p.bytes, ChannelNormalization{}, Stream());
  ASSERT_EQ(out.dtype(), DType::Float32);
  const float* f = out.data<float>();
  const auto* b = p.bytes.data<std::uint8_t>();
  for (std::int64_t i = 0; i < out.numel(); ++i) ASSERT_EQ(f[i], static_cast<float>(b[i]) / 255.0f);
}

}  // namespace
}  // namespace mb
