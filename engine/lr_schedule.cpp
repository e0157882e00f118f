// Warmup and cosine decay.
#include "engine/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace mb {

double LrSchedule::at(std::int64_t step) const {
  MB_CHECK(step >= 0, "LrSchedule: negative step ", step);
  if (warmup_steps > 0 && step < warmup_steps) {
    const double t = static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    return peak_lr * (warmup_start_factor + (1.0 - warmup_start_factor) * t);
  }
  if (total_steps <= warmup_steps) return peak_lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) /
                                            static_cast<double>(total_steps - warmup_steps));
  const double kPi = 3.14159265358979323846;
  return final_lr + 0.5 * (peak_lr - final_lr) * (1.0 + std::cos(kPi * progress));
}

}  // namespace mb
