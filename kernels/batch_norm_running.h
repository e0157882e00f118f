// One channel's running-statistics update, shared by both twins of batch_norm_update_running
// (kernels/batch_norm.h), so CPU and CUDA compute it with the same operations in the same
// order. On the device every multiply and add rounds on its own (__dmul_rn, __dadd_rn: nvcc
// would otherwise fuse them into FMAs); host builds target x86-64 without FMA.
#pragma once

#include <cstdint>

#include "runtime/philox.h"  // MB_HOST_DEVICE

namespace mb {

#if defined(__CUDA_ARCH__)
#define MB_DMUL(a, b) __dmul_rn((a), (b))
#define MB_DADD(a, b) __dadd_rn((a), (b))
#define MB_DSUB(a, b) __dsub_rn((a), (b))
#else
#define MB_DMUL(a, b) ((a) * (b))
#define MB_DADD(a, b) ((a) + (b))
#define MB_DSUB(a, b) ((a) - (b))
#endif

MB_HOST_DEVICE inline void running_statistics_of_channel(const double* statistics,
                                                         std::int64_t channels, std::int64_t ch,
                                                         std::int64_t count, double momentum,
                                                         float* running_mean, float* running_var) {
  // Pending plus committed sums (a standalone user need not commit).
  const double sum = MB_DADD(statistics[ch], statistics[2 * channels + ch]);
  const double sum_sq = MB_DADD(statistics[channels + ch], statistics[3 * channels + ch]);
  const double n = static_cast<double>(count);
  const double mean = sum / n;
  // Note: Σx²/n − mean² in fp64 loses about log10(mean²/var) of 16 digits, harmless for fp32
  // activations; the unbiased factor n/(n-1) matches PyTorch's running_var.
  double biased_var = MB_DSUB(sum_sq / n, MB_DMUL(mean, mean));
  if (biased_var < 0.0) biased_var = 0.0;  // NaN stays NaN
  const double unbiased_var = MB_DMUL(biased_var, n) / MB_DSUB(n, 1.0);
  const double keep = MB_DSUB(1.0, momentum);
  running_mean[ch] = static_cast<float>(
      MB_DADD(MB_DMUL(keep, static_cast<double>(running_mean[ch])), MB_DMUL(momentum, mean)));
  running_var[ch] = static_cast<float>(MB_DADD(MB_DMUL(keep, static_cast<double>(running_var[ch])),
                                               MB_DMUL(momentum, unbiased_var)));
}

#undef MB_DMUL
#undef MB_DADD
#undef MB_DSUB

}  // namespace mb
