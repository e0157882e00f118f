// Per-channel bias add and its gradient.
#include "kernels/cpu/channel_bias.h"

#include <vector>

namespace mb::cpu {

void add_channel_bias(const Stream& /*stream*/, float* data, const float* bias, std::int64_t batch,
                      std::int64_t channels, std::int64_t spatial) {
  for (std::int64_t n = 0; n < batch; ++n) {
    for (std::int64_t c = 0; c < channels; ++c) {
      float* row = data + (n * channels + c) * spatial;
      const float b = bias[c];
      for (std::int64_t s = 0; s < spatial; ++s) row[s] += b;
    }
  }
}

void channel_bias_grad(const Stream& /*stream*/, const float* grad, std::int64_t batch,
                       std::int64_t channels, std::int64_t spatial, float* bias_grad,
                       GradientMode mode) {
  std::vector<double> sums(static_cast<std::size_t>(channels), 0.0);
  for (std::int64_t n = 0; n < batch; ++n) {
    for (std::int64_t c = 0; c < channels; ++c) {
      const float* row = grad + (n * channels + c) * spatial;
      double sum = 0.0;
      for (std::int64_t s = 0; s < spatial; ++s) sum += row[s];
      sums[c] += sum;
    }
  }
  for (std::int64_t c = 0; c < channels; ++c) {
    const float value = static_cast<float>(sums[c]);
    bias_grad[c] = mode == GradientMode::Accumulate ? bias_grad[c] + value : value;
  }
}

}  // namespace mb::cpu
