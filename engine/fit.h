// fit(): the epoch loop. Batches from the loader, the learning-rate schedule, one Trainer
// step per batch, evaluation after every epoch, a checkpoint after every epoch, and reports
// through callbacks (the CLI prints them as text, a progress bar or JSON).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "data/dataset.h"
#include "data/loader.h"
#include "engine/checkpoint.h"
#include "engine/evaluate.h"
#include "engine/session.h"
#include "engine/trainer.h"
#include "runtime/memory_report.h"

namespace mb {

inline constexpr std::int64_t kNoStepLimit = -1;

struct FitOptions {
  std::int64_t batch_size = 256;
  int epochs = 1;
  // Where training stands (after --resume): the epoch and the batches of it already done.
  TrainingPosition start;
  // Optimizer steps this run may take: kNoStepLimit, or >= 0 (0 trains nothing, e.g. to
  // write only the initial checkpoint).
  std::int64_t max_steps = kNoStepLimit;
  double lr = 0.01;            // peak learning rate
  double warmup_epochs = 0.0;  // linear warmup
  bool cosine = true;          // cosine decay to 0 over all epochs; false: constant after warmup
  std::uint64_t seed = 0;      // shuffling and augmentation
  bool shuffle = true;         // false: every epoch visits the samples in data set order
  bool augment = false;        // random crop with padding and horizontal flip (in-memory sets;
                               // image folders always use their own transforms)
  // Streamed data sets (image folders): sample-making threads and what a bad image does.
  int workers = 1;
  int prefetch = 2;  // batches prepared ahead (LoaderOptions::prefetch)
  BadImagePolicy on_bad_image = BadImagePolicy::Skip;
  // Evaluation chunk (0: the plan's micro-batch, or 256 without one).
  std::int64_t eval_chunk = 0;
  // Checkpoint written after every epoch and where max_steps stops the run inside one
  // (empty: none), under this model name. Its metadata carries the position and the
  // sampler's settings (batch_size, seed, shuffle, train_samples), so a resumed run
  // continues with exactly the samples that come next.
  std::string checkpoint;
  // Written before the first step (empty: none): the weights training starts from.
  std::string initial_checkpoint;
  int keep_checkpoints = 1;  // the newest N checkpoints stay (save_checkpoint's keep)
  // Set (from a signal handler, say) to stop after the current step: the checkpoint is
  // written at the position reached and fit() returns with FitResult::interrupted.
  const std::atomic<bool>* stop_requested = nullptr;
  std::string model_name;
  std::map<std::string, std::string> checkpoint_metadata;
};

struct StepReport {
  int epoch = 0;                   // 0-based
  std::int64_t step_in_epoch = 0;  // 1-based
  std::int64_t steps_per_epoch = 0;
  float lr = 0.0f;
  StepResult step;
  MemoryUsage memory;
  std::vector<std::int64_t> sample_indices;  // data set index of each sample of the batch
  LoaderStats loader;                        // the epoch so far
};

struct EpochReport {
  int epoch = 0;  // 1-based: the epoch this report is about
  // False when max_steps stopped the run inside the epoch after step_in_epoch batches.
  bool complete = true;
  std::int64_t step_in_epoch = 0;
  double train_loss = 0.0;
  double train_accuracy = 0.0;
  EvalResult test;
  double seconds = 0.0;  // training time of the epoch, evaluation excluded
  std::int64_t samples = 0;
  std::int64_t steps = 0;  // optimizer steps so far
  FreeArenaReport memory;
  LoaderStats loader;  // the epoch's training batches: waits, images/s, bad images skipped
};

struct FitCallbacks {
  std::function<void(const StepReport&)> on_step;
  std::function<void(const EpochReport&)> on_epoch;
  std::function<void(const std::string& path)> on_checkpoint;
};

struct FitResult {
  double seconds = 0.0;
  std::int64_t steps = 0;     // optimizer steps in total (resumed ones included)
  bool interrupted = false;   // stop_requested ended the run
  TrainingPosition position;  // where training stands at the end
};

// The checkpoint metadata that pins the sampler: a position means nothing under another
// batch size, seed, shuffle setting or training set.
std::map<std::string, std::string> sampler_metadata(const FitOptions& options,
                                                    std::int64_t train_samples);
// Throws mb::InvalidArgument naming the flag to pass when a checkpoint's sampler metadata
// (where present) differs from this run's, or when its position is at or past the end of
// training (nothing left to do: pass a larger --epochs).
void check_resume(const CheckpointInfo& checkpoint, const FitOptions& options,
                  std::int64_t train_samples);

// Evaluates a streamed data set (Dataset::source: an image folder) batch by batch from a
// BatchLoader (workers, bad-image policy and seed from `loader_options`; batches of `chunk`,
// in order, each rank of `group` taking its part), normalizing 8-bit images with
// `normalization`; loss and counts are summed over the group.
EvalResult evaluate_streamed(Session& session, const Dataset& test, std::int64_t chunk,
                             const LossOptions& loss, const ChannelNormalization& normalization,
                             LoaderOptions loader_options, Communicator& group);

// The evaluation batch for a streamed test set of `samples` split over `ranks`: `chunk` (at
// least `ranks`), grown until the last, partial batch gives every rank a sample.
std::int64_t streamed_eval_batch(std::int64_t samples, std::int64_t chunk, int ranks);

// Trains session.trainer() (make it first) on `train`, evaluating on `test`.
FitResult fit(Session& session, const Dataset& train, const Dataset& test,
              const FitOptions& options, const FitCallbacks& callbacks = {});

}  // namespace mb
