// BatchNorm2d on CUDA: the same operations and arguments as kernels/cpu/batch_norm.h (the
// reference they are tested against). Tensors are NCHW float32 on the device.
//
// Note: one thread block per channel does the channel's reduction and then its elementwise
// pass, so no grid-wide synchronization or scratch memory is needed. Per-thread sums are
// fp64 (Σx, Σx², and in backward Σg, Σg·x̂), so the batch statistics and the fp64
// accumulator that feeds the running statistics keep full precision even for large
// micro-batches; the batch variance is Σx²/M − mean² in fp64, clamped at zero.
#pragma once

#include <cstdint>

#include "kernels/batch_norm_activation.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cuda {

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

}  // namespace mb::cuda
