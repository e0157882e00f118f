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

  // lr at step (0-based).
  double at(std::int64_t step) const;
};

}  // namespace mb
