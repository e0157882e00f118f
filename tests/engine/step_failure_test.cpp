// A step that cannot be taken leaves the model as it was. A NaN in the batch makes the
// gradient's norm NaN; the step's one read of the device's totals (loss and norm, before the
// update) must stop it with an error that names the fix before it changes the weights, the
// optimizer's step count or BatchNorm's running statistics (updated at the end of a step).
// Truth: the values copied before the step.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "tests/mbp/mbp_test_util.h"

namespace mb {
namespace {

std::vector<std::vector<float>> buffer_values(Module& model) {
  std::vector<std::vector<float>> values;
  for (auto& [name, buffer] : model.named_buffers()) {
    if (buffer->dtype() == DType::Float32) values.push_back(buffer->to_vector());
  }
  return values;
}

TEST(StepFailure, ANanGradientStopsTheStepBeforeItChangesAnything) {
  auto model = testing::small_cnn(testing::Extra::BatchNorm);
  TrainerOptions options;
  options.micro_batch = 4;
  Trainer trainer(model, options);
  const testing::Batch good = testing::make_batch(8, 11);
  trainer.step(good.images, good.labels, 0.1f);  // running statistics move off their start

  const auto parameters = testing::parameter_values(*model);
  const auto buffers = buffer_values(*model);
  const std::int64_t steps = trainer.steps();
  testing::Batch bad = testing::make_batch(8, 12);
  std::vector<float> images = bad.images.to_vector();
  images[5 * 3 * 8 * 8 + 17] = std::numeric_limits<float>::quiet_NaN();  // sample 5 of the
                                                                         // second micro-batch
  bad.images = Tensor::from_vector(images, bad.images.shape());
  try {
    trainer.step(bad.images, bad.labels, 0.1f);
    FAIL() << "a step with a NaN gradient succeeded";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("gradient norm is nan"), std::string::npos) << message;
    EXPECT_NE(message.find("Fix:"), std::string::npos) << message;
  }
  EXPECT_EQ(trainer.steps(), steps);
  EXPECT_EQ(testing::parameter_values(*model), parameters);
  EXPECT_EQ(buffer_values(*model), buffers) << "BatchNorm's running statistics changed";

  // And the trainer goes on: the next good step trains.
  const StepResult next = trainer.step(good.images, good.labels, 0.1f);
  EXPECT_TRUE(std::isfinite(next.loss));
  EXPECT_EQ(trainer.steps(), steps + 1);
}

}  // namespace
}  // namespace mb
