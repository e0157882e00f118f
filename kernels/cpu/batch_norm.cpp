// BatchNorm2d reference kernels: plain loops, per-channel sums in double.
#include "kernels/cpu/batch_norm.h"
#include "kernels/batch_norm_running.h"
#include "kernels/cpu/parallel.h"

#include <cmath>
#include <vector>

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

// z = (x - mean) * scale + shift, the one expression every variant evaluates (forward,
// recomputation, backward's mask), so all of them see the same float values.
inline float normalized(float x, float mean, float scale, float shift) {
  return (x - mean) * scale + shift;
}

// The activation and its 0/1 derivative as compile-time choices, so each plane loop is one
// branch-free expression that vectorizes (a switch per element did not: it made fused
// BatchNorm + ReLU slower than BatchNorm and ReLU apart).
template <BnActivation Act>
inline float activate(float z) {
  if constexpr (Act == BnActivation::ReLU) return z > 0.0f ? z : 0.0f;
  if constexpr (Act == BnActivation::ReLU6) return z > 0.0f ? (z < 6.0f ? z : 6.0f) : 0.0f;
  return z;
}

template <BnActivation Act>
inline bool passes(float z) {
  if constexpr (Act == BnActivation::ReLU6) return (z > 0.0f) & (z < 6.0f);
  return z > 0.0f;
}

// One plane of y = act(z [+ residual]).
template <BnActivation Act, bool kResidual>
void normalize_plane(const float* in, const float* residual, float mean, float scale, float shift,
                     std::int64_t size, float* out) {
  for (std::int64_t j = 0; j < size; ++j) {
    float z = normalized(in[j], mean, scale, shift);
    if constexpr (kResidual) z = z + residual[j];
    out[j] = activate<Act>(z);
  }
}

template <BnActivation Act>
void normalize_channel_as(const float* x, float mean, float scale, float shift,
                          const float* residual, std::int64_t n, std::int64_t c, std::int64_t hw,
                          std::int64_t ch, float* y) {
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t base = (i * c + ch) * hw;
    if (residual != nullptr) {
      normalize_plane<Act, true>(x + base, residual + base, mean, scale, shift, hw, y + base);
    } else {
      normalize_plane<Act, false>(x + base, nullptr, mean, scale, shift, hw, y + base);
    }
  }
}

// One channel of y = act(z [+ residual]).
void normalize_channel(const float* x, float mean, float scale, float shift, const float* residual,
                       BnActivation act, std::int64_t n, std::int64_t c, std::int64_t hw,
                       std::int64_t ch, float* y) {
  switch (act) {
    case BnActivation::None:
      normalize_channel_as<BnActivation::None>(x, mean, scale, shift, residual, n, c, hw, ch, y);
      return;
    case BnActivation::ReLU:
      normalize_channel_as<BnActivation::ReLU>(x, mean, scale, shift, residual, n, c, hw, ch, y);
      return;
    case BnActivation::ReLU6:
      normalize_channel_as<BnActivation::ReLU6>(x, mean, scale, shift, residual, n, c, hw, ch, y);
      return;
  }
}

// out = grad * act'(z) over one plane: grad where z is in act's linear range, else 0 (at the
// kinks too, as the unfused activations' backward).
template <BnActivation Act>
void mask_plane_as(const float* grad, const float* x, float mean, float scale, float shift,
                   std::int64_t size, float* out) {
  for (std::int64_t j = 0; j < size; ++j) {
    const float g = grad[j];
    out[j] = passes<Act>(normalized(x[j], mean, scale, shift)) ? g : 0.0f;
  }
}

void mask_plane(const float* grad, const float* x, float mean, float scale, float shift,
                BnActivation act, std::int64_t size, float* out) {
  if (act == BnActivation::ReLU6) {
    mask_plane_as<BnActivation::ReLU6>(grad, x, mean, scale, shift, size, out);
  } else {
    mask_plane_as<BnActivation::ReLU>(grad, x, mean, scale, shift, size, out);
  }
}

}  // namespace

void batch_norm_forward_training(const Stream& /*stream*/, const float* x, const float* weight,
                                 const float* bias, const float* residual, BnActivation act,
                                 std::int64_t n, std::int64_t c, std::int64_t hw, float eps,
                                 float* y, float* save_mean, float* save_invstd,
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
    normalize_channel(x, mean_f, invstd * weight[ch], bias[ch], residual, act, n, c, hw, ch, y);
  });
}

void batch_norm_forward_inference(const Stream& /*stream*/, const float* x,
                                  const float* running_mean, const float* running_var,
                                  const float* weight, const float* bias, const float* residual,
                                  BnActivation act, std::int64_t n, std::int64_t c, std::int64_t hw,
                                  float eps, float* y, float* save_mean, float* save_invstd) {
  parallel_for(c, 3 * n * c * hw, [&](std::int64_t ch) {
    const float mean = running_mean[ch];
    const float invstd =
        static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps));
    save_mean[ch] = mean;
    save_invstd[ch] = invstd;
    normalize_channel(x, mean, invstd * weight[ch], bias[ch], residual, act, n, c, hw, ch, y);
  });
}

void batch_norm_apply(const Stream& /*stream*/, const float* x, const float* mean,
                      const float* invstd, const float* weight, const float* bias,
                      const float* residual, BnActivation act, std::int64_t n, std::int64_t c,
                      std::int64_t hw, float* y) {
  parallel_for(c, 2 * n * c * hw, [&](std::int64_t ch) {
    normalize_channel(x, mean[ch], invstd[ch] * weight[ch], bias[ch], residual, act, n, c, hw, ch,
                      y);
  });
}

void batch_norm_backward(const Stream& /*stream*/, const float* grad_y, const float* x,
                         const float* save_mean, const float* save_invstd, const float* weight,
                         const float* bias, BnActivation act, std::int64_t n, std::int64_t c,
                         std::int64_t hw, bool batch_statistics, float* grad_x, float* grad_weight,
                         float* grad_bias, GradientMode mode) {
  const double count = static_cast<double>(n * hw);
  const std::int64_t plane_values = act == BnActivation::None ? 0 : hw;
  parallel_for(c, 3 * n * c * hw, [&](std::int64_t ch) {
    const double mean = save_mean[ch];
    const double invstd = save_invstd[ch];
    // With a fused activation, one plane of the masked gradient at a time (act'(z) * grad_y,
    // z recomputed from x), so the sums and grad_x read exactly the values an unfused
    // activation's backward would have written.
    std::vector<float> masked(static_cast<std::size_t>(plane_values));
    const auto plane_grad = [&](std::int64_t i) -> const float* {
      const float* g = grad_y + (i * c + ch) * hw;
      if (act == BnActivation::None) return g;
      mask_plane(g, x + (i * c + ch) * hw, save_mean[ch], save_invstd[ch] * weight[ch], bias[ch],
                 act, hw, masked.data());
      return masked.data();
    };
    LaneSums sums;
    for (std::int64_t i = 0; i < n; ++i) {
      add_grad_sums(plane_grad(i), x + (i * c + ch) * hw, hw, mean, invstd, sums);
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
      const float* g = plane_grad(i);
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

void batch_norm_update_running(const Stream& /*stream*/, const double* statistics,
                               std::int64_t channels, std::int64_t count, double momentum,
                               float* running_mean, float* running_var,
                               std::int32_t* num_batches_tracked) {
  for (std::int64_t ch = 0; ch < channels; ++ch) {
    running_statistics_of_channel(statistics, channels, ch, count, momentum, running_mean,
                                  running_var);
  }
  *num_batches_tracked += 1;
}

}  // namespace mb::cpu
