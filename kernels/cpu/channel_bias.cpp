// Per-channel bias add and its gradient.
#include "kernels/cpu/channel_bias.h"
#include "kernels/cpu/parallel.h"

#include <vector>

namespace mb::cpu {

void add_channel_bias(const Stream& /*stream*/, float* data, const float* bias, std::int64_t batch,
                      std::int64_t channels, std::int64_t spatial) {
  parallel_for(batch * channels, batch * channels * spatial, [&](std::int64_t plane) {
    float* row = data + plane * spatial;
    const float b = bias[plane % channels];
    for (std::int64_t s = 0; s < spatial; ++s) row[s] += b;
  });
}

void channel_bias_grad(const Stream& /*stream*/, const float* grad, std::int64_t batch,
                       std::int64_t channels, std::int64_t spatial, float* bias_grad,
                       GradientMode mode) {
  // One channel per iteration, its samples in order: the same sum for any thread count.
  parallel_for(channels, batch * channels * spatial, [&](std::int64_t c) {
    double total = 0.0;
    for (std::int64_t n = 0; n < batch; ++n) {
      const float* row = grad + (n * channels + c) * spatial;
      double sum = 0.0;
      for (std::int64_t s = 0; s < spatial; ++s) sum += row[s];
      total += sum;
    }
    const float value = static_cast<float>(total);
    bias_grad[c] = mode == GradientMode::Accumulate ? bias_grad[c] + value : value;
  });
}

}  // namespace mb::cpu
