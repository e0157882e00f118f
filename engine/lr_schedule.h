// Learning-rate schedules for large batches: the linear scaling rule, linear warmup and
// cosine decay (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
#pragma once

#include <cstdint>

namespace mb {

// lr for batch `batch` when `base_lr` was tuned for `base_batch`: base_lr * batch / base_batch.
double linear_scaled_lr(double base_lr, std::int64_t base_batch, std::int64_t batch);

struct LrSchedule {
  double peak_lr = 0.1;
  std::int64_t warmup_steps = 0;  // linear from peak_lr * warmup_start_factor to peak_lr
  double warmup_start_factor = 0.0;
  std::int64_t total_steps = 0;  // cosine decay from the end of warmup to total_steps (0: constant)
  double final_lr = 0.0;

  // lr at step (0-based).
  double at(std::int64_t step) const;
};

}  // namespace mb
