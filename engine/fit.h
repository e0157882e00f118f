// fit(): the epoch loop. Batches from the loader, the learning-rate schedule, one Trainer
// step per batch, evaluation after every epoch, a checkpoint after every epoch, and reports
// through callbacks (the CLI prints them as text, a progress bar or JSON).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "data/dataset.h"
#include "engine/evaluate.h"
#include "engine/session.h"
#include "engine/trainer.h"
#include "runtime/memory_report.h"

namespace mb {

struct FitOptions {
  std::int64_t batch_size = 256;
  int epochs = 1;
  int start_epoch = 0;         // epochs already done (after --resume)
  std::int64_t max_steps = 0;  // stop after this many steps of this run (0: no limit)
  double lr = 0.01;            // peak learning rate
  double warmup_epochs = 0.0;  // linear warmup
  bool cosine = true;          // cosine decay to 0 over all epochs; false: constant after warmup
  std::uint64_t seed = 0;      // shuffling and augmentation
  bool augment = false;        // random crop with padding and horizontal flip
  // Evaluation chunk (0: the plan's micro-batch, or 256 without one).
  std::int64_t eval_chunk = 0;
  // Checkpoint written after every epoch (empty: none), under this model name.
  std::string checkpoint;
  std::string model_name;
  std::map<std::string, std::string> checkpoint_metadata;
};

struct StepReport {
  int epoch = 0;                   // 0-based
  std::int64_t step_in_epoch = 0;  // 1-based
  std::int64_t steps_per_epoch = 0;
  float lr = 0.0f;
  StepResult step;
  FreeArenaReport memory;
};

struct EpochReport {
  int epoch = 0;  // 1-based: epochs done
  double train_loss = 0.0;
  double train_accuracy = 0.0;
  EvalResult test;
  double seconds = 0.0;  // training time of the epoch, evaluation excluded
  std::int64_t samples = 0;
  std::int64_t steps = 0;  // optimizer steps so far
  FreeArenaReport memory;
};

struct FitCallbacks {
  std::function<void(const StepReport&)> on_step;
  std::function<void(const EpochReport&)> on_epoch;
  std::function<void(const std::string& path)> on_checkpoint;
};

struct FitResult {
  double seconds = 0.0;
  std::int64_t steps = 0;  // optimizer steps in total (resumed ones included)
};

// Trains session.trainer() (make it first) on `train`, evaluating on `test`.
FitResult fit(Session& session, const Dataset& train, const Dataset& test,
              const FitOptions& options, const FitCallbacks& callbacks = {});

}  // namespace mb
