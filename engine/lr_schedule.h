// Learning-rate schedules for large batches: linear warmup and cosine decay (Goyal et al. 2017,
// "Accurate, Large Minibatch SGD").
#pragma once

#include <cstdint>

namespace mb {

struct LrSchedule {
  double peak_lr = 0.1;
  std::int64_t warmup_steps = 0;  // linear from peak_lr * warmup_start_factor to peak_lr
  double warmup_start_factor = 0.0;
  std::int64_t total_steps = 0;  // cosine decay from the end of warmup to total_steps (0: constant)
  double final_lr = 0.0;

  // lr at step (0-based: the optimizer step about to be taken, as fit() calls it).
  // Warmup: peak_lr * (f + (1 - f) * (step + 1) / warmup_steps), f = warmup_start_factor,
  // so step 0 already trains (never lr 0 for f = 0) and step warmup_steps - 1 is at peak;
  // this is torch's LinearLR(start_factor=f, total_iters=warmup_steps) one step earlier.
  // Then cosine from peak_lr at step warmup_steps to final_lr at total_steps, final_lr
  // after it (not periodic). Throws mb::InvalidArgument for a negative step.
  double at(std::int64_t step) const;
};

}  // namespace mb
