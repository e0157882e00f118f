// batch_norm: dispatch to the CPU or CUDA twin.
#include "kernels/batch_norm.h"

#include "kernels/cpu/batch_norm.h"
#include "kernels/cuda/batch_norm.h"
#include "kernels/dispatch.h"
#include "runtime/error.h"

namespace mb {

void batch_norm_forward_training(const Stream& stream, const float* x, const float* weight,
                                 const float* bias, const float* residual, BnActivation act,
                                 std::int64_t n, std::int64_t c, std::int64_t hw, float eps,
                                 float* y, float* save_mean, float* save_invstd,
                                 double* statistics) {
  MB_DISPATCH(stream, batch_norm_forward_training, x, weight, bias, residual, act, n, c, hw, eps, y,
              save_mean, save_invstd, statistics);
}

void batch_norm_forward_inference(const Stream& stream, const float* x, const float* running_mean,
                                  const float* running_var, const float* weight, const float* bias,
                                  const float* residual, BnActivation act, std::int64_t n,
                                  std::int64_t c, std::int64_t hw, float eps, float* y,
                                  float* save_mean, float* save_invstd) {
  MB_DISPATCH(stream, batch_norm_forward_inference, x, running_mean, running_var, weight, bias,
              residual, act, n, c, hw, eps, y, save_mean, save_invstd);
}

void batch_norm_apply(const Stream& stream, const float* x, const float* mean, const float* invstd,
                      const float* weight, const float* bias, const float* residual,
                      BnActivation act, std::int64_t n, std::int64_t c, std::int64_t hw, float* y) {
  MB_DISPATCH(stream, batch_norm_apply, x, mean, invstd, weight, bias, residual, act, n, c, hw, y);
}

void batch_norm_backward(const Stream& stream, const float* grad_y, const float* x,
                         const float* save_mean, const float* save_invstd, const float* weight,
                         const float* bias, BnActivation act, std::int64_t n, std::int64_t c,
                         std::int64_t hw, bool batch_statistics, float* grad_x, float* grad_weight,
                         float* grad_bias, GradientMode mode) {
  MB_DISPATCH(stream, batch_norm_backward, grad_y, x, save_mean, save_invstd, weight, bias, act, n,
              c, hw, batch_statistics, grad_x, grad_weight, grad_bias, mode);
}

void batch_norm_fold_statistics(const Stream& stream, double* committed, double* pending,
                                std::int64_t count) {
  MB_DISPATCH(stream, batch_norm_fold_statistics, committed, pending, count);
}

void batch_norm_update_running(const Stream& stream, const double* statistics,
                               std::int64_t channels, std::int64_t count, double momentum,
                               float* running_mean, float* running_var,
                               std::int32_t* num_batches_tracked) {
  MB_CHECK(channels > 0 && count > 1, "batch_norm_update_running: ", channels, " channels, ", count,
           " values per channel (more than one needed)");
  MB_CHECK(statistics != nullptr && running_mean != nullptr && running_var != nullptr &&
               num_batches_tracked != nullptr,
           "batch_norm_update_running: null pointer argument");
  MB_DISPATCH(stream, batch_norm_update_running, statistics, channels, count, momentum,
              running_mean, running_var, num_batches_tracked);
}

}  // namespace mb
