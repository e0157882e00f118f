// BatchNorm2d on CUDA: the same operations and arguments as kernels/cpu/batch_norm.h (the
// reference they are tested against). Tensors are NCHW float32 on the device.
//
// Note: three passes each way, all on rows (one (sample, channel) plane, hw contiguous
// floats; a warp per row, four floats per load where hw % 4 == 0 and the tensors are 16-byte
// aligned, one modulo per row to find the channel). Forward: partial Σx, Σx² per channel and
// chunk of samples (about 1024 blocks whatever the channel count, so a 64-channel layer
// fills the device), one thread per channel sums the chunks in order (mean, invstd, the
// running statistics' fp64 accumulator), then the normalization. Backward: partial Σg,
// Σg·x̂; the parameter gradients and grad_x's coefficients; grad_x. Sums are fp64 per thread,
// so the batch statistics keep full precision for large micro-batches; the batch variance is
// Σx²/M − mean² in fp64, clamped at zero. The chunking depends on n and c only, so the
// same shapes reduce in the same order on every device and every run.
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

void batch_norm_update_running(const Stream& stream, const double* statistics,
                               std::int64_t channels, std::int64_t count, double momentum,
                               float* running_mean, float* running_var,
                               std::int32_t* num_batches_tracked);

}  // namespace mb::cuda
