// Gradient accumulation and norms on the CPU (reference implementations).
#include "kernels/cpu/accumulate_grads.h"
#include "kernels/cpu/parallel.h"

#include <cmath>

namespace mb::cpu {
namespace {

// Sum of squares of one buffer in double. Four independent accumulators let the compiler
// keep several additions in flight; the result differs from a single serial sum only by
// double round-off.
double buffer_sum_of_squares(const float* data, std::int64_t size) {
  double lanes[4] = {0.0, 0.0, 0.0, 0.0};
  std::int64_t i = 0;
  for (; i + 4 <= size; i += 4) {
    for (int lane = 0; lane < 4; ++lane) {
      const double value = data[i + lane];
      lanes[lane] += value * value;
    }
  }
  for (; i < size; ++i) {
    const double value = data[i];
    lanes[0] += value * value;
  }
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

}  // namespace

void accumulate_grads(const Stream& /*stream*/, const GradSlot* slots, int count, float factor,
                      GradientMode mode) {
  detail::check_grad_slots(slots, count, factor);
  for (int s = 0; s < count; ++s) {
    const float* grad = slots[s].grad;
    float* accum = slots[s].accum;
    const std::int64_t size = slots[s].size;
    parallel_elements(size, [&](std::int64_t begin, std::int64_t end) {
      if (mode == GradientMode::Overwrite) {
        for (std::int64_t i = begin; i < end; ++i) accum[i] = factor * grad[i];
      } else {
        for (std::int64_t i = begin; i < end; ++i) accum[i] += factor * grad[i];
      }
    });
  }
}

double sum_of_squares(const Stream& /*stream*/, const ConstBufferSlot* slots, int count) {
  detail::check_buffer_slots(slots, count, "sum_of_squares");
  double total = 0.0;
  for (int s = 0; s < count; ++s) {
    const float* data = slots[s].data;
    total += parallel_sum(slots[s].size, [&](std::int64_t begin, std::int64_t end) {
      return buffer_sum_of_squares(data + begin, end - begin);
    });
  }
  return total;
}

void sum_of_squares_into(const Stream& stream, const ConstBufferSlot* slots, int count,
                         double* total) {
  *total = cpu::sum_of_squares(stream, slots, count);
}

}  // namespace mb::cpu
