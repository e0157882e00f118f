// BatchNorm2d's kernels (twins: kernels/cpu/batch_norm.h, the reference, and
// kernels/cuda/batch_norm.h). Tensors are NCHW float32, viewed as [n, c, hw].
//
// Training normalizes with the batch's own mean and biased variance and adds the per-channel
// sums Σx and Σx² (fp64) to a statistics accumulator, from which the layer later derives the
// full-batch running statistics (docs/architecture.md, "Contracts"). Inference normalizes with
// the running statistics. Both store the per-channel mean and 1/sqrt(var + eps) they used,
// which backward needs.
//
// Fusion (docs/architecture.md, "Memory"): the forwards may add a residual and apply ReLU or
// ReLU6 in the same pass (y = act(bn(x) [+ residual])), so BatchNorm + ReLU and BatchNorm +
// add + ReLU write one tensor instead of three. Without a residual the activation's mask is
// a function of x, so backward recomputes it from x (act != None) and nothing but x is kept;
// batch_norm_apply recomputes y itself for the layer that needs it (a convolution's filter
// gradient). Every variant evaluates z = (x - mean) * (invstd * weight) + bias with the same
// float operations, so recomputed values and masks equal the forward's bit for bit.
#pragma once

#include <cstdint>

#include "kernels/batch_norm_activation.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb {

// y = act((x - mean_c) * invstd_c * weight_c + bias_c [+ residual]) with the batch's mean
// and biased variance. residual: [n, c, hw] or null. save_mean/save_invstd: [c] outputs.
// statistics: [2c] fp64, statistics[ch] += Σx and statistics[c + ch] += Σx² over the batch;
// may be null.
void batch_norm_forward_training(const Stream& stream, const float* x, const float* weight,
                                 const float* bias, const float* residual, BnActivation act,
                                 std::int64_t n, std::int64_t c, std::int64_t hw, float eps,
                                 float* y, float* save_mean, float* save_invstd,
                                 double* statistics);

// y = act((x - running_mean_c) / sqrt(running_var_c + eps) * weight_c + bias_c [+ residual]);
// writes the mean and invstd it used to save_mean/save_invstd ([c]).
void batch_norm_forward_inference(const Stream& stream, const float* x, const float* running_mean,
                                  const float* running_var, const float* weight, const float* bias,
                                  const float* residual, BnActivation act, std::int64_t n,
                                  std::int64_t c, std::int64_t hw, float eps, float* y,
                                  float* save_mean, float* save_invstd);

// y = act((x - mean_c) * invstd_c * weight_c + bias_c [+ residual]) from the mean and invstd
// a forward saved: that forward's output again, bit for bit, given the same residual (or
// null).
void batch_norm_apply(const Stream& stream, const float* x, const float* mean, const float* invstd,
                      const float* weight, const float* bias, const float* residual,
                      BnActivation act, std::int64_t n, std::int64_t c, std::int64_t hw, float* y);

// Gradients of the forward above without a residual. act != None: grad_y is the gradient of
// act's output, masked here by act's derivative at z, recomputed from x (bias is read only
// then; it may be null for None). batch_statistics: the forward normalized with the batch's
// statistics (training), so mean and invstd depend on x; otherwise they were constants.
// grad_x (may be null: not needed) is overwritten; grad_weight and grad_bias are overwritten
// or added to per `mode`.
void batch_norm_backward(const Stream& stream, const float* grad_y, const float* x,
                         const float* save_mean, const float* save_invstd, const float* weight,
                         const float* bias, BnActivation act, std::int64_t n, std::int64_t c,
                         std::int64_t hw, bool batch_statistics, float* grad_x, float* grad_weight,
                         float* grad_bias, GradientMode mode);

// committed[i] += pending[i]; pending[i] = 0 for i < count (a micro-batch's sums are kept).
void batch_norm_fold_statistics(const Stream& stream, double* committed, double* pending,
                                std::int64_t count);

// The running statistics from a batch's sums where they live (no host round trip):
// statistics holds [pending Σx, pending Σx², committed Σx, committed Σx²], `channels` doubles
// each, over `count` (> 1) values per channel. In fp64, with Σ the pending plus committed sum:
//   mean = Σx / count,  var = max(Σx² / count - mean², 0) * count / (count - 1)
//   running = (1 - momentum) * running + momentum * batch, stored as float;
// and num_batches_tracked += 1. Every operation rounds on its own (no fused multiply-add), so
// both twins give the same bits.
void batch_norm_update_running(const Stream& stream, const double* statistics,
                               std::int64_t channels, std::int64_t count, double momentum,
                               float* running_mean, float* running_var,
                               std::int32_t* num_batches_tracked);

}  // namespace mb
