// The epoch loop.
#include "engine/fit.h"

#include <algorithm>
#include <chrono>

#include "data/loader.h"
#include "engine/checkpoint.h"
#include "engine/lr_schedule.h"
#include "runtime/error.h"

namespace mb {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

FitResult fit(Session& session, const Dataset& train, const Dataset& test,
              const FitOptions& options, const FitCallbacks& callbacks) {
  MB_CHECK(options.batch_size > 0, "fit: batch size must be positive, got ", options.batch_size);
  Trainer& trainer = session.trainer();
  const Shape sample = train.sample_shape();

  LoaderOptions loader_options;
  loader_options.batch_size = options.batch_size;
  loader_options.shuffle = true;
  loader_options.drop_last = train.size() >= options.batch_size;
  loader_options.seed = options.seed;
  if (options.augment) {
    loader_options.augment.flip = true;
    loader_options.augment.crop_padding = sample[1] >= 32 ? 4 : 2;
  }
  BatchLoader loader(train, loader_options);
  const std::int64_t steps_per_epoch = loader.batches_per_epoch();
  LrSchedule schedule;
  schedule.peak_lr = options.lr;
  schedule.warmup_steps = static_cast<std::int64_t>(options.warmup_epochs * steps_per_epoch);
  schedule.total_steps = options.cosine ? steps_per_epoch * options.epochs : 0;

  const auto started = std::chrono::steady_clock::now();
  std::int64_t steps_this_run = 0;
  const auto out_of_steps = [&] {
    return options.max_steps > 0 && steps_this_run >= options.max_steps;
  };
  for (int epoch = options.start_epoch; epoch < options.epochs && !out_of_steps(); ++epoch) {
    const auto epoch_started = std::chrono::steady_clock::now();
    loader.start_epoch(epoch);
    Batch batch;
    double loss_sum = 0.0;
    std::int64_t samples = 0, correct = 0;
    StepReport report;
    report.epoch = epoch;
    report.steps_per_epoch = steps_per_epoch;
    while (!out_of_steps() && loader.next(batch)) {
      report.lr = static_cast<float>(schedule.at(trainer.steps()));
      report.step = trainer.step(batch.images, batch.labels, report.lr);
      loss_sum += report.step.loss * static_cast<double>(report.step.samples);
      samples += report.step.samples;
      correct += report.step.correct;
      ++report.step_in_epoch;
      ++steps_this_run;
      report.memory = session.allocator().report();
      if (callbacks.on_step) callbacks.on_step(report);
    }
    EpochReport done;
    done.epoch = epoch + 1;
    done.seconds = seconds_since(epoch_started);
    const std::int64_t plan_chunk = trainer.current_plan().micro_batch;
    const std::int64_t chunk =
        options.eval_chunk > 0 ? options.eval_chunk : (plan_chunk > 0 ? plan_chunk : 256);
    done.test = session.evaluate(test.images, test.labels, chunk, trainer.options().loss);
    done.samples = samples;
    done.train_loss = samples > 0 ? loss_sum / static_cast<double>(samples) : 0.0;
    done.train_accuracy =
        static_cast<double>(correct) / static_cast<double>(std::max<std::int64_t>(samples, 1));
    done.steps = trainer.steps();
    done.memory = session.allocator().report();
    if (callbacks.on_epoch) callbacks.on_epoch(done);
    if (!options.checkpoint.empty()) {
      save_checkpoint(options.checkpoint, trainer, options.model_name, epoch + 1,
                      options.checkpoint_metadata);
      if (callbacks.on_checkpoint) callbacks.on_checkpoint(options.checkpoint);
    }
  }
  trainer.model().clear_cache();
  FitResult result;
  result.seconds = seconds_since(started);
  result.steps = trainer.steps();
  return result;
}

}  // namespace mb
