// The epoch loop.
#include "engine/fit.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "data/loader.h"
#include "engine/checkpoint.h"
#include "engine/lr_schedule.h"
#include "runtime/error.h"

namespace mb {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Data-parallel evaluation: each rank evaluates its contiguous part of the test set and the
// loss sums, correct and valid counts are summed, so every rank reports the global result.
EvalResult evaluate_sharded(Session& session, const Dataset& test, std::int64_t chunk,
                            const LossOptions& loss, const FitOptions& options) {
  if (test.streamed()) {
    LoaderOptions loader_options;
    loader_options.seed = options.seed;
    loader_options.workers = options.workers;
    loader_options.prefetch = options.prefetch;
    loader_options.on_bad_image = options.on_bad_image;
    return evaluate_streamed(session, test, chunk, loss,
                             session.trainer().options().input_normalization, loader_options,
                             session.trainer().communicator());
  }
  Communicator& group = session.trainer().communicator();
  if (!group.distributed()) return session.evaluate(test.images, test.labels, chunk, loss);
  const std::int64_t n = test.size();
  const std::int64_t begin = n * group.rank() / group.size();
  const std::int64_t end = n * (group.rank() + 1) / group.size();
  EvalResult part;
  if (end > begin) {
    part =
        session.evaluate(test.images.slice(begin, end), test.labels.slice(begin, end), chunk, loss);
  }
  double values[3] = {part.loss * static_cast<double>(part.valid),
                      static_cast<double>(part.correct), static_cast<double>(part.valid)};
  group.all_reduce_sum(values, 3);
  EvalResult total;
  total.valid = static_cast<std::int64_t>(values[2]);
  total.correct = static_cast<std::int64_t>(values[1]);
  total.loss = total.valid > 0 ? values[0] / values[2] : 0.0;
  total.chunk = part.chunk;  // this rank's
  total.halvings = part.halvings;
  return total;
}

}  // namespace

std::int64_t streamed_eval_batch(std::int64_t samples, std::int64_t chunk, int ranks) {
  MB_CHECK(samples >= 0 && chunk > 0 && ranks >= 1, "streamed_eval_batch(", samples, ", ", chunk,
           ", ", ranks, ")");
  std::int64_t batch = std::max<std::int64_t>(chunk, ranks);
  // Note: terminates by batch = samples at the latest (no remainder then).
  while (samples > batch && samples % batch != 0 && samples % batch < ranks) ++batch;
  return batch;
}

EvalResult evaluate_streamed(Session& session, const Dataset& test, std::int64_t chunk,
                             const LossOptions& loss, const ChannelNormalization& normalization,
                             LoaderOptions loader_options, Communicator& group) {
  MB_CHECK(chunk > 0, "evaluate: chunk must be positive, got ", chunk);
  loader_options.batch_size = streamed_eval_batch(test.size(), chunk, group.size());
  loader_options.shuffle = false;
  loader_options.drop_last = false;
  loader_options.shard = group.rank();
  loader_options.shards = group.size();
  BatchLoader loader(test, loader_options);
  loader.start_epoch(0);
  double loss_sum = 0.0;
  EvalResult total;
  total.chunk = chunk;
  Batch batch;
  while (loader.next(batch)) {
    if (batch.size() == 0) continue;
    const EvalResult part =
        session.evaluate(batch.images, batch.labels, chunk, loss, normalization);
    loss_sum += part.loss * static_cast<double>(part.valid);
    total.correct += part.correct;
    total.valid += part.valid;
    total.chunk = std::min(total.chunk, part.chunk);
    total.halvings += part.halvings;
  }
  double values[3] = {loss_sum, static_cast<double>(total.correct),
                      static_cast<double>(total.valid)};
  group.all_reduce_sum(values, 3);
  total.valid = static_cast<std::int64_t>(values[2]);
  total.correct = static_cast<std::int64_t>(values[1]);
  total.loss = total.valid > 0 ? values[0] / values[2] : 0.0;
  return total;
}

std::map<std::string, std::string> sampler_metadata(const FitOptions& options,
                                                    std::int64_t train_samples) {
  return {{"batch_size", std::to_string(options.batch_size)},
          {"seed", std::to_string(options.seed)},
          {"shuffle", options.shuffle ? "true" : "false"},
          {"train_samples", std::to_string(train_samples)}};
}

void check_resume(const CheckpointInfo& checkpoint, const FitOptions& options,
                  std::int64_t train_samples) {
  const std::map<std::string, std::string> ours = sampler_metadata(options, train_samples);
  const std::map<std::string, std::string> flags = {{"batch_size", "--batch-size"},
                                                    {"seed", "--seed"},
                                                    {"shuffle", "--no-shuffle"},
                                                    {"train_samples", "--train-limit"}};
  for (const auto& [key, value] : ours) {
    auto saved = checkpoint.metadata.find(key);
    if (saved == checkpoint.metadata.end() || saved->second == value) continue;
    const std::string fix =
        key == "shuffle" ? (saved->second == "false" ? "pass --no-shuffle" : "drop --no-shuffle")
                         : "pass " + flags.at(key) + " " + saved->second;
    MB_THROW(InvalidArgument, "the checkpoint was written with ", key, " ", saved->second,
             ", this run has ", value, "; its position (epoch ", checkpoint.position.epoch,
             ", step ", checkpoint.position.step_in_epoch,
             " in it) would name other samples. Fix: ", fix);
  }
  if (checkpoint.position.epoch >= options.epochs) {
    MB_THROW(InvalidArgument, "the checkpoint has ", checkpoint.position.epoch,
             " epoch(s) done, and --epochs is ", options.epochs,
             ": nothing left to train. Fix: pass --epochs larger than ", checkpoint.position.epoch);
  }
}

FitResult fit(Session& session, const Dataset& train, const Dataset& test,
              const FitOptions& options, const FitCallbacks& callbacks) {
  MB_CHECK(options.batch_size > 0, "fit: batch size must be positive, got ", options.batch_size);
  MB_CHECK(options.max_steps >= kNoStepLimit, "fit: max_steps must be >= 0 or kNoStepLimit, got ",
           options.max_steps);
  MB_CHECK(std::isfinite(options.warmup_epochs) && options.warmup_epochs >= 0.0 &&
               options.warmup_epochs <= options.epochs,
           "warmup of ", options.warmup_epochs, " epochs with ", options.epochs,
           " epochs of training. Fix: pass --warmup-epochs between 0 and --epochs");
  MB_CHECK(std::isfinite(options.lr) && options.lr >= 0.0, "learning rate ", options.lr,
           " is not a finite non-negative number. Fix: pass --lr > 0");
  Trainer& trainer = session.trainer();
  Communicator& group = trainer.communicator();
  const Shape sample = train.sample_shape();

  LoaderOptions loader_options;
  loader_options.batch_size = options.batch_size;
  loader_options.shuffle = options.shuffle;
  loader_options.drop_last = train.size() >= options.batch_size;
  loader_options.seed = options.seed;
  loader_options.shard = group.rank();
  loader_options.shards = group.size();
  loader_options.workers = options.workers;
  loader_options.prefetch = options.prefetch;
  loader_options.on_bad_image = options.on_bad_image;
  if (options.augment && !train.streamed()) {
    loader_options.augment.flip = true;
    loader_options.augment.crop_padding = sample[1] >= 32 ? 4 : 2;
  }
  BatchLoader loader(train, loader_options);
  const std::int64_t steps_per_epoch = loader.batches_per_epoch();
  MB_CHECK(options.start.step_in_epoch >= 0 && options.start.step_in_epoch <= steps_per_epoch,
           "fit: resuming at step ", options.start.step_in_epoch, " of an epoch of ",
           steps_per_epoch, " steps");
  LrSchedule schedule;
  schedule.peak_lr = options.lr;
  schedule.warmup_steps = static_cast<std::int64_t>(options.warmup_epochs * steps_per_epoch);
  schedule.total_steps = options.cosine ? steps_per_epoch * options.epochs : 0;

  std::map<std::string, std::string> metadata = options.checkpoint_metadata;
  for (const auto& [key, value] : sampler_metadata(options, train.size())) metadata[key] = value;
  // Data-parallel: the ranks must hold the same weights; rank 0 writes (atomically) and the
  // others wait for it, so every rank can resume from the checkpoint once fit() goes on.
  const auto save = [&](const std::string& path, const TrainingPosition& position) {
    trainer.check_ranks_agree("before the checkpoint at epoch " + std::to_string(position.epoch) +
                              ", step " + std::to_string(position.step_in_epoch));
    if (group.rank() == 0) {
      save_checkpoint(path, trainer, options.model_name, position, metadata,
                      options.keep_checkpoints);
      if (callbacks.on_checkpoint) callbacks.on_checkpoint(path);
    }
    group.barrier();
  };
  if (!options.initial_checkpoint.empty()) save(options.initial_checkpoint, options.start);

  const auto started = std::chrono::steady_clock::now();
  std::int64_t steps_this_run = 0;
  // Data-parallel: a stop on any rank stops every rank after the same step (one small
  // all-reduce per step, only when a stop can be requested).
  const auto stop = [&] {
    if (options.stop_requested == nullptr) return false;
    std::int64_t requested = options.stop_requested->load() ? 1 : 0;
    if (group.distributed()) group.all_reduce_sum(&requested, 1);
    return requested > 0;
  };
  const auto out_of_steps = [&] {
    return stop() || (options.max_steps != kNoStepLimit && steps_this_run >= options.max_steps);
  };
  FitResult result;
  result.position = options.start;
  for (int epoch = options.start.epoch; epoch < options.epochs && !out_of_steps(); ++epoch) {
    const auto epoch_started = std::chrono::steady_clock::now();
    const std::int64_t first_step = epoch == options.start.epoch ? options.start.step_in_epoch : 0;
    loader.start_epoch(epoch, first_step);
    Batch batch;
    double loss_sum = 0.0;
    std::int64_t samples = 0, correct = 0;
    StepReport report;
    report.epoch = epoch;
    report.steps_per_epoch = steps_per_epoch;
    report.step_in_epoch = first_step;
    while (!out_of_steps() && loader.next(batch)) {
      if (batch.size() == 0) {
        // Every image of the batch was bad (and skipped): no step, but the position moves on.
        ++report.step_in_epoch;
        continue;
      }
      report.lr = static_cast<float>(schedule.at(trainer.steps()));
      report.step = trainer.step(batch.images, batch.labels, report.lr, batch.shard_offset);
      report.sample_indices = batch.sample_indices;
      loss_sum += report.step.loss * static_cast<double>(report.step.samples);
      samples += report.step.samples;
      correct += report.step.correct;
      ++report.step_in_epoch;
      ++steps_this_run;
      report.memory = session.allocator().usage();
      if (callbacks.on_step) {
        report.loader = loader.stats();
        callbacks.on_step(report);
      }
    }
    const bool complete = report.step_in_epoch >= steps_per_epoch;
    result.position =
        complete ? TrainingPosition{epoch + 1, 0} : TrainingPosition{epoch, report.step_in_epoch};
    if (stop()) {
      // Interrupted: the checkpoint now, no evaluation (the user is waiting).
      if (!options.checkpoint.empty()) save(options.checkpoint, result.position);
      result.interrupted = true;
      break;
    }
    EpochReport done;
    done.epoch = epoch + 1;
    done.step_in_epoch = report.step_in_epoch;
    done.complete = complete;
    done.seconds = seconds_since(epoch_started);
    const std::int64_t plan_chunk = trainer.current_plan().micro_batch;
    const std::int64_t chunk =
        options.eval_chunk > 0 ? options.eval_chunk : (plan_chunk > 0 ? plan_chunk : 256);
    done.loader = loader.stats();
    done.test = evaluate_sharded(session, test, chunk, trainer.options().loss, options);
    done.samples = samples;
    done.train_loss = samples > 0 ? loss_sum / static_cast<double>(samples) : 0.0;
    done.train_accuracy =
        static_cast<double>(correct) / static_cast<double>(std::max<std::int64_t>(samples, 1));
    done.steps = trainer.steps();
    done.memory = session.allocator().report();
    if (callbacks.on_epoch) callbacks.on_epoch(done);
    if (!options.checkpoint.empty()) save(options.checkpoint, result.position);
  }
  trainer.model().clear_cache();
  result.seconds = seconds_since(started);
  result.steps = trainer.steps();
  return result;
}

}  // namespace mb
