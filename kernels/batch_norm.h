// BatchNorm2d's kernels (twins: kernels/cpu/batch_norm.h, the reference, and
// kernels/cuda/batch_norm.h). Tensors are NCHW float32, viewed as [n, c, hw].
//
// Training normalizes with the batch's own mean and biased variance and adds the per-channel
// sums Σx and Σx² (fp64) to a statistics accumulator, from which the layer later derives the
// full-batch running statistics (docs/architecture.md, "Contracts"). Inference normalizes with
// the running statistics. Both store the per-channel mean and 1/sqrt(var + eps) they used,
// which backward needs.
#pragma once

#include <cstdint>

#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb {

// y = (x - mean_c) * invstd_c * weight_c + bias_c with the batch's mean and biased variance.
// save_mean/save_invstd: [c] outputs. statistics: [2c] fp64, statistics[ch] += Σx and
// statistics[c + ch] += Σx² over the batch; may be null.
void batch_norm_forward_training(const Stream& stream, const float* x, const float* weight,
                                 const float* bias, std::int64_t n, std::int64_t c, std::int64_t hw,
                                 float eps, float* y, float* save_mean, float* save_invstd,
                                 double* statistics);

// y = (x - running_mean_c) / sqrt(running_var_c + eps) * weight_c + bias_c; writes the
// mean and invstd it used to save_mean/save_invstd ([c]).
void batch_norm_forward_inference(const Stream& stream, const float* x, const float* running_mean,
                                  const float* running_var, const float* weight, const float* bias,
                                  std::int64_t n, std::int64_t c, std::int64_t hw, float eps,
                                  float* y, float* save_mean, float* save_invstd);

// Gradients of the forward above. batch_statistics: the forward normalized with the batch's
// statistics (training), so mean and invstd depend on x; otherwise they were constants.
// grad_x (may be null: not needed) is overwritten; grad_weight and grad_bias are overwritten
// or added to per `mode`.
void batch_norm_backward(const Stream& stream, const float* grad_y, const float* x,
                         const float* save_mean, const float* save_invstd, const float* weight,
                         std::int64_t n, std::int64_t c, std::int64_t hw, bool batch_statistics,
                         float* grad_x, float* grad_weight, float* grad_bias, GradientMode mode);

// committed[i] += pending[i]; pending[i] = 0 for i < count (a micro-batch's sums are kept).
void batch_norm_fold_statistics(const Stream& stream, double* committed, double* pending,
                                std::int64_t count);

}  // namespace mb
