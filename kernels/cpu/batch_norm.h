// BatchNorm2d on the CPU: the reference the CUDA kernels (kernels/cuda/batch_norm.h) are
// tested against. Contract: kernels/batch_norm.h.
#pragma once

#include <cstdint>

#include "kernels/batch_norm_activation.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cpu {

void batch_norm_forward_training(const Stream& stream, const float* x, const float* weight,
                                 const float* bias, const float* residual, BnActivation act,
                                 std::int64_t n, std::int64_t c, std::int64_t hw, float eps,
                                 float* y, float* save_mean, float* save_invstd,
                                 double* statistics);

void batch_norm_forward_inference(const Stream& stream, const float* x, const float* running_mean,
                                  const float* running_var, const float* weight, const float* bias,
                                  const float* residual, BnActivation act, std::int64_t n,
                                  std::int64_t c, std::int64_t hw, float eps, float* y,
                                  float* save_mean, float* save_invstd);

void batch_norm_apply(const Stream& stream, const float* x, const float* mean, const float* invstd,
                      const float* weight, const float* bias, const float* residual,
                      BnActivation act, std::int64_t n, std::int64_t c, std::int64_t hw, float* y);

void batch_norm_backward(const Stream& stream, const float* grad_y, const float* x,
                         const float* save_mean, const float* save_invstd, const float* weight,
                         const float* bias, BnActivation act, std::int64_t n, std::int64_t c,
                         std::int64_t hw, bool batch_statistics, float* grad_x, float* grad_weight,
                         float* grad_bias, GradientMode mode);

void batch_norm_fold_statistics(const Stream& stream, double* committed, double* pending,
                                std::int64_t count);

void batch_norm_update_running(const Stream& stream, const double* statistics,
                               std::int64_t channels, std::int64_t count, double momentum,
                               float* running_mean, float* running_var,
                               std::int32_t* num_batches_tracked);

}  // namespace mb::cpu
