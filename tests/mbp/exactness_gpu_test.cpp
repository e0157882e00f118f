// The exactness contract on CUDA in deterministic mode (label gpu; skips without a device):
// TF32 off, deterministic cuDNN algorithms pinned per layer, fixed-order reductions. Then
// (1) two fresh runs give the same bits, and (2) the splits [16], [8, 8], [7, 7, 2] and the
// automatic plan give the full batch's parameters within the CPU contract's tolerance (rtol
// 2e-5, atol 2e-6; see exactness_test.cpp for why), in both accumulation modes.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/context.h"
#include "tests/mbp/mbp_test_util.h"
#include "tests/test_util.h"

namespace mb {
namespace {

using testing::Extra;

constexpr std::int64_t kBatch = 16;

struct TrainingRun {
  std::vector<std::vector<float>> parameters;
  std::vector<double> losses;
  std::vector<std::int64_t> first_split;
};

TrainingRun train(Extra extra, std::int64_t micro_batch, AccumulationMode mode) {
  auto model = testing::small_cnn(extra);
  TrainerOptions options;
  options.device = Device::cuda(0);
  options.micro_batch = micro_batch;
  options.accumulation = mode;
  options.optimizer.kind = OptimizerKind::Sgd;
  options.optimizer.momentum = 0.9f;
  options.optimizer.weight_decay = 1e-3f;
  options.seed = 11;
  Trainer trainer(model, options);
  TrainingRun run;
  for (int s = 0; s < 3; ++s) {
    testing::Batch batch = testing::make_batch(kBatch, 100 + s);
    const StepResult step = trainer.step(batch.images, batch.labels, 0.1f);
    run.losses.push_back(step.loss);
    if (s == 0) run.first_split = step.micro_batches;
  }
  run.parameters = testing::parameter_values(*model);
  return run;
}

TEST(ExactnessGpu, DeterministicModeGivesTheSameBitsRunToRun) {
  MB_SKIP_WITHOUT_CUDA();
  testing::ScopedCudaMath mode(/*deterministic=*/true);
  for (const Extra extra : {Extra::None, Extra::Dropout}) {
    const TrainingRun a = train(extra, 7, AccumulationMode::InPlace);
    const TrainingRun b = train(extra, 7, AccumulationMode::InPlace);
    EXPECT_EQ(a.losses, b.losses);
    testing::expect_parameters_close(a.parameters, b.parameters, 0.0, 0.0, "run to run");
  }
}

TEST(ExactnessGpu, AnySplitEqualsFullBatchInBothAccumulationModes) {
  MB_SKIP_WITHOUT_CUDA();
  testing::ScopedCudaMath mode(/*deterministic=*/true);
  for (const AccumulationMode accumulation :
       {AccumulationMode::InPlace, AccumulationMode::Buffers}) {
    for (const Extra extra : {Extra::None, Extra::Dropout}) {
      const TrainingRun full = train(extra, kBatch, accumulation);
      EXPECT_EQ(full.first_split, (std::vector<std::int64_t>{16}));
      for (const std::int64_t m : {8, 7, 0}) {  // 0: the automatic plan
        const TrainingRun split = train(extra, m, accumulation);
        if (m == 7) {
          EXPECT_EQ(split.first_split, (std::vector<std::int64_t>{7, 7, 2}));
        }
        testing::expect_parameters_close(split.parameters, full.parameters, 2e-5, 2e-6,
                                         "micro-batch " + std::to_string(m));
        for (std::size_t s = 0; s < full.losses.size(); ++s) {
          EXPECT_NEAR(split.losses[s], full.losses[s], 1e-5 * std::fabs(full.losses[s]))
              << "step " << s << ", micro-batch " << m;
        }
      }
    }
  }
}

}  // namespace
}  // namespace mb
