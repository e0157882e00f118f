// BatchNorm2d reference kernels: plain loops, per-channel sums in double.
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/parallel.h"

#include <cmath>

namespace mb::cpu {

void batch_norm_forward_training(const Stream& /*stream*/, const float* x, const float* weight,
                                 const float* bias, std::int64_t n, std::int64_t c, std::int64_t hw,
                                 float eps, float* y, float* save_mean, float* save_invstd,
                                 double* statistics) {
  const double count = static_cast<double>(n * hw);
  parallel_for(c, 3 * n * c * hw, [&](std::int64_t ch) {
    double sum = 0.0;
    double sum_sq = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      const float* plane = x + (i * c + ch) * hw;
      for (std::int64_t j = 0; j < hw; ++j) {
        const double v = plane[j];
        sum += v;
        sum_sq += v * v;
      }
    }
    const double mean = sum / count;
    // Note: the variance used for normalization is a second pass around the mean, which
    // keeps full precision when |mean| >> std; the raw Σx² is only for the running stats.
    double centered = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      const float* plane = x + (i * c + ch) * hw;
      for (std::int64_t j = 0; j < hw; ++j) {
        const double d = plane[j] - mean;
        centered += d * d;
      }
    }
    const double variance = centered / count;
    const float mean_f = static_cast<float>(mean);
    const float invstd = static_cast<float>(1.0 / std::sqrt(variance + eps));
    save_mean[ch] = mean_f;
    save_invstd[ch] = invstd;
    if (statistics != nullptr) {
      statistics[ch] += sum;
      statistics[c + ch] += sum_sq;
    }
    const float scale = invstd * weight[ch];
    const float shift = bias[ch];
    for (std::int64_t i = 0; i < n; ++i) {
      const float* in = x + (i * c + ch) * hw;
      float* out = y + (i * c + ch) * hw;
      for (std::int64_t j = 0; j < hw; ++j) out[j] = (in[j] - mean_f) * scale + shift;
    }
  });
}

void batch_norm_forward_inference(const Stream& /*stream*/, const float* x,
                                  const float* running_mean, const float* running_var,
                                  const float* weight, const float* bias, std::int64_t n,
                                  std::int64_t c, std::int64_t hw, float eps, float* y,
                                  float* save_mean, float* save_invstd) {
  parallel_for(c, 3 * n * c * hw, [&](std::int64_t ch) {
    const float mean = running_mean[ch];
    const float invstd =
        static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps));
    save_mean[ch] = mean;
    save_invstd[ch] = invstd;
    const float scale = invstd * weight[ch];
    const float shift = bias[ch];
    for (std::int64_t i = 0; i < n; ++i) {
      const float* in = x + (i * c + ch) * hw;
      float* out = y + (i * c + ch) * hw;
      for (std::int64_t j = 0; j < hw; ++j) out[j] = (in[j] - mean) * scale + shift;
    }
  });
}

void batch_norm_backward(const Stream& /*stream*/, const float* grad_y, const float* x,
                         const float* save_mean, const float* save_invstd, const float* weight,
                         std::int64_t n, std::int64_t c, std::int64_t hw, bool batch_statistics,
                         float* grad_x, float* grad_weight, float* grad_bias, GradientMode mode) {
  const double count = static_cast<double>(n * hw);
  parallel_for(c, 3 * n * c * hw, [&](std::int64_t ch) {
    const double mean = save_mean[ch];
    const double invstd = save_invstd[ch];
    double sum_g = 0.0;
    double sum_g_xhat = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      const float* g = grad_y + (i * c + ch) * hw;
      const float* in = x + (i * c + ch) * hw;
      for (std::int64_t j = 0; j < hw; ++j) {
        sum_g += g[j];
        sum_g_xhat += g[j] * ((in[j] - mean) * invstd);
      }
    }
    if (mode == GradientMode::Overwrite) {
      grad_weight[ch] = static_cast<float>(sum_g_xhat);
      grad_bias[ch] = static_cast<float>(sum_g);
    } else {
      grad_weight[ch] += static_cast<float>(sum_g_xhat);
      grad_bias[ch] += static_cast<float>(sum_g);
    }
    if (grad_x == nullptr) return;
    const double scale = invstd * weight[ch];
    // Training: dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat)); the batch's mean
    // and variance depend on x. Inference: they are constants, dx = w * invstd * g.
    const double mean_g = batch_statistics ? sum_g / count : 0.0;
    const double mean_g_xhat = batch_statistics ? sum_g_xhat / count : 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      const float* g = grad_y + (i * c + ch) * hw;
      const float* in = x + (i * c + ch) * hw;
      float* out = grad_x + (i * c + ch) * hw;
      for (std::int64_t j = 0; j < hw; ++j) {
        const double xhat = (in[j] - mean) * invstd;
        out[j] = static_cast<float>(scale * (g[j] - mean_g - xhat * mean_g_xhat));
      }
    }
  });
}

void batch_norm_fold_statistics(const Stream& /*stream*/, double* committed, double* pending,
                                std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      committed[i] += pending[i];
      pending[i] = 0.0;
    }
  });
}

}  // namespace mb::cpu
