// BatchNorm2d reference kernels: plain loops, per-channel sums in double.
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/parallel.h"

#include <cmath>

namespace mb::cpu {
namespace {

// Sums over one plane in double with kLanes independent accumulators, so the additions
// vectorize instead of waiting on one another; lanes are added in a fixed order at the end.
constexpr int kLanes = 8;

struct LaneSums {
  double a[kLanes] = {};
  double b[kLanes] = {};
  double total_a() const { return reduce(a); }
  double total_b() const { return reduce(b); }
  static double reduce(const double* v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
  }
};

// a += x, b += x * x over the plane.
void add_sums(const float* x, std::int64_t size, LaneSums& s) {
  std::int64_t j = 0;
  for (; j + kLanes <= size; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double v = x[j + l];
      s.a[l] += v;
      s.b[l] += v * v;
    }
  }
  for (; j < size; ++j) {
    const double v = x[j];
    s.a[0] += v;
    s.b[0] += v * v;
  }
}

// a += (x - mean)^2 over the plane.
void add_centered(const float* x, std::int64_t size, double mean, LaneSums& s) {
  std::int64_t j = 0;
  for (; j + kLanes <= size; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double d = x[j + l] - mean;
      s.a[l] += d * d;
    }
  }
  for (; j < size; ++j) {
    const double d = x[j] - mean;
    s.a[0] += d * d;
  }
}

// a += g, b += g * xhat with xhat = (x - mean) * invstd, over the plane.
void add_grad_sums(const float* g, const float* x, std::int64_t size, double mean, double invstd,
                   LaneSums& s) {
  std::int64_t j = 0;
  for (; j + kLanes <= size; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double gv = g[j + l];
      s.a[l] += gv;
      s.b[l] += gv * ((x[j + l] - mean) * invstd);
    }
  }
  for (; j < size; ++j) {
    const double gv = g[j];
    s.a[0] += gv;
    s.b[0] += gv * ((x[j] - mean) * invstd);
  }
}

}  // namespace

void batch_norm_forward_training(const Stream& /*stream*/, const float* x, const float* weight,
                                 const float* bias, std::int64_t n, std::int64_t c, std::int64_t hw,
                                 float eps, float* y, float* save_mean, float* save_invstd,
                                 double* statistics) {
  const double count = static_cast<double>(n * hw);
  parallel_for(c, 3 * n * c * hw, [&](std::int64_t ch) {
    LaneSums raw;
    for (std::int64_t i = 0; i < n; ++i) add_sums(x + (i * c + ch) * hw, hw, raw);
    const double sum = raw.total_a();
    const double sum_sq = raw.total_b();
    const double mean = sum / count;
    // Note: the variance used for normalization is a second pass around the mean, which
    // keeps full precision when |mean| >> std; the raw Σx² is only for the running stats.
    LaneSums centered;
    for (std::int64_t i = 0; i < n; ++i) add_centered(x + (i * c + ch) * hw, hw, mean, centered);
    const double variance = centered.total_a() / count;
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
    LaneSums sums;
    for (std::int64_t i = 0; i < n; ++i) {
      add_grad_sums(grad_y + (i * c + ch) * hw, x + (i * c + ch) * hw, hw, mean, invstd, sums);
    }
    const double sum_g = sums.total_a();
    const double sum_g_xhat = sums.total_b();
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
