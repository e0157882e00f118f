// batch_norm: dispatch to the CPU or CUDA twin.
#include "kernels/batch_norm.h"

#include "kernels/cpu/batch_norm.h"
#include "kernels/cuda/batch_norm.h"
#include "kernels/dispatch.h"

namespace mb {

void batch_norm_forward_training(const Stream& stream, const float* x, const float* weight,
                                 const float* bias, std::int64_t n, std::int64_t c, std::int64_t hw,
                                 float eps, float* y, float* save_mean, float* save_invstd,
                                 double* statistics) {
  MB_DISPATCH(stream, batch_norm_forward_training, x, weight, bias, n, c, hw, eps, y, save_mean,
              save_invstd, statistics);
}

void batch_norm_forward_inference(const Stream& stream, const float* x, const float* running_mean,
                                  const float* running_var, const float* weight, const float* bias,
                                  std::int64_t n, std::int64_t c, std::int64_t hw, float eps,
                                  float* y, float* save_mean, float* save_invstd) {
  MB_DISPATCH(stream, batch_norm_forward_inference, x, running_mean, running_var, weight, bias, n,
              c, hw, eps, y, save_mean, save_invstd);
}

void batch_norm_backward(const Stream& stream, const float* grad_y, const float* x,
                         const float* save_mean, const float* save_invstd, const float* weight,
                         std::int64_t n, std::int64_t c, std::int64_t hw, bool batch_statistics,
                         float* grad_x, float* grad_weight, float* grad_bias, GradientMode mode) {
  MB_DISPATCH(stream, batch_norm_backward, grad_y, x, save_mean, save_invstd, weight, n, c, hw,
              batch_statistics, grad_x, grad_weight, grad_bias, mode);
}

void batch_norm_fold_statistics(const Stream& stream, double* committed, double* pending,
                                std::int64_t count) {
  MB_DISPATCH(stream, batch_norm_fold_statistics, committed, pending, count);
}

}  // namespace mb
