// BatchNorm2d CUDA kernels and their host launchers (see batch_norm.h for the design).
#include "kernels/cuda/batch_norm.h"

#include <algorithm>

#include "kernels/cuda/launch.cuh"

namespace mb::cuda {
namespace {

constexpr int kBlockThreads = 512;

// Sums `value` over the block; every thread gets the total. `shared` holds kBlockThreads / 32.
__device__ double block_sum(double value, double* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();  // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kBlockThreads / 32; ++w) total += shared[w];
  return total;
}

// Element j of channel ch in an [n, c, hw] tensor, j in [0, n * hw). Index is uint32 when
// the whole tensor fits (the common case: 64-bit division is several times slower).
template <typename Index>
__device__ __forceinline__ Index element(Index j, Index ch, Index c, Index hw) {
  const Index sample = j / hw;
  return (sample * c + ch) * hw + (j - sample * hw);
}

// z = (x - mean) * scale + shift with one rounding (fma), the expression every kernel here
// evaluates, so recomputed values and backward's masks equal the forward's.
__device__ __forceinline__ float normalized(float x, float mean, float scale, float shift) {
  return fmaf(x - mean, scale, shift);
}

__device__ __forceinline__ float activate(float z, BnActivation act) {
  if (act == BnActivation::ReLU) return z > 0.0f ? z : 0.0f;
  if (act == BnActivation::ReLU6) return z > 0.0f ? (z < 6.0f ? z : 6.0f) : 0.0f;
  return z;
}

// act'(z) as a 0/1 factor: 0 outside the linear range and at the kinks.
__device__ __forceinline__ bool passes(float z, BnActivation act) {
  if (act == BnActivation::ReLU) return z > 0.0f;
  if (act == BnActivation::ReLU6) return z > 0.0f && z < 6.0f;
  return true;
}

template <typename Index>
__global__ void __launch_bounds__(kBlockThreads)
    forward_training_kernel(const float* __restrict__ x, const float* __restrict__ weight,
                            const float* __restrict__ bias, const float* __restrict__ residual,
                            BnActivation act, std::int64_t n, std::int64_t c, std::int64_t hw,
                            float eps, float* __restrict__ y, float* __restrict__ save_mean,
                            float* __restrict__ save_invstd, double* __restrict__ statistics) {
  __shared__ double shared[kBlockThreads / 32];
  const Index ch = blockIdx.x;
  const Index count = static_cast<Index>(n * hw);
  const Index channels = static_cast<Index>(c), plane = static_cast<Index>(hw);
  double sum = 0.0;
  double sum_sq = 0.0;
  for (Index j = threadIdx.x; j < count; j += kBlockThreads) {
    const double v = x[element<Index>(j, ch, channels, plane)];
    sum += v;
    sum_sq += v * v;
  }
  sum = block_sum(sum, shared);
  sum_sq = block_sum(sum_sq, shared);
  const double mean = sum / static_cast<double>(count);
  const double variance = fmax(sum_sq / static_cast<double>(count) - mean * mean, 0.0);
  const float mean_f = static_cast<float>(mean);
  const float invstd = static_cast<float>(1.0 / sqrt(variance + static_cast<double>(eps)));
  if (threadIdx.x == 0) {
    save_mean[ch] = mean_f;
    save_invstd[ch] = invstd;
    if (statistics != nullptr) {
      statistics[ch] += sum;
      statistics[c + ch] += sum_sq;
    }
  }
  const float scale = invstd * weight[ch];
  const float shift = bias[ch];
  for (Index j = threadIdx.x; j < count; j += kBlockThreads) {
    const Index e = element<Index>(j, ch, channels, plane);
    const float z = normalized(x[e], mean_f, scale, shift);
    y[e] = activate(residual != nullptr ? z + residual[e] : z, act);
  }
}

__global__ void inference_statistics_kernel(const float* __restrict__ running_mean,
                                            const float* __restrict__ running_var, std::int64_t c,
                                            float eps, float* __restrict__ save_mean,
                                            float* __restrict__ save_invstd) {
  const std::int64_t ch = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (ch >= c) return;
  save_mean[ch] = running_mean[ch];
  save_invstd[ch] = static_cast<float>(
      1.0 / sqrt(static_cast<double>(running_var[ch]) + static_cast<double>(eps)));
}

__global__ void normalize_kernel(const float* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ invstd, const float* __restrict__ weight,
                                 const float* __restrict__ bias, const float* __restrict__ residual,
                                 BnActivation act, std::int64_t total, std::int64_t c,
                                 std::int64_t hw, float* __restrict__ y) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t ch = (i / hw) % c;
    const float z = normalized(x[i], mean[ch], invstd[ch] * weight[ch], bias[ch]);
    y[i] = activate(residual != nullptr ? z + residual[i] : z, act);
  }
}

template <typename Index>
__global__ void __launch_bounds__(kBlockThreads)
    backward_kernel(const float* __restrict__ grad_y, const float* __restrict__ x,
                    const float* __restrict__ save_mean, const float* __restrict__ save_invstd,
                    const float* __restrict__ weight, const float* __restrict__ bias,
                    BnActivation act, std::int64_t n, std::int64_t c, std::int64_t hw,
                    bool batch_statistics, float* __restrict__ grad_x,
                    float* __restrict__ grad_weight, float* __restrict__ grad_bias,
                    bool accumulate) {
  __shared__ double shared[kBlockThreads / 32];
  const Index ch = blockIdx.x;
  const Index count = static_cast<Index>(n * hw);
  const Index channels = static_cast<Index>(c), plane = static_cast<Index>(hw);
  const double mean = save_mean[ch];
  const double invstd = save_invstd[ch];
  // With a fused activation the gradient is masked by act'(z), z recomputed from x as the
  // forward computed it.
  const float mean_f = save_mean[ch];
  const float scale_f = save_invstd[ch] * weight[ch];
  const float shift_f = act == BnActivation::None ? 0.0f : bias[ch];
  const auto masked = [&](Index e) {
    const float g = grad_y[e];
    if (act == BnActivation::None) return g;
    return passes(normalized(x[e], mean_f, scale_f, shift_f), act) ? g : 0.0f;
  };
  double sum_g = 0.0;
  double sum_g_xhat = 0.0;
  for (Index j = threadIdx.x; j < count; j += kBlockThreads) {
    const Index e = element<Index>(j, ch, channels, plane);
    const double g = masked(e);
    sum_g += g;
    sum_g_xhat += g * ((x[e] - mean) * invstd);
  }
  sum_g = block_sum(sum_g, shared);
  sum_g_xhat = block_sum(sum_g_xhat, shared);
  if (threadIdx.x == 0) {
    if (accumulate) {
      grad_weight[ch] += static_cast<float>(sum_g_xhat);
      grad_bias[ch] += static_cast<float>(sum_g);
    } else {
      grad_weight[ch] = static_cast<float>(sum_g_xhat);
      grad_bias[ch] = static_cast<float>(sum_g);
    }
  }
  if (grad_x == nullptr) return;
  const double scale = invstd * weight[ch];
  const double mean_g = batch_statistics ? sum_g / static_cast<double>(count) : 0.0;
  const double mean_g_xhat = batch_statistics ? sum_g_xhat / static_cast<double>(count) : 0.0;
  for (Index j = threadIdx.x; j < count; j += kBlockThreads) {
    const Index e = element<Index>(j, ch, channels, plane);
    const double xhat = (x[e] - mean) * invstd;
    grad_x[e] = static_cast<float>(scale * (masked(e) - mean_g - xhat * mean_g_xhat));
  }
}

__global__ void fold_statistics_kernel(double* __restrict__ committed, double* __restrict__ pending,
                                       std::int64_t count) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  committed[i] += pending[i];
  pending[i] = 0.0;
}

void check_sizes(const char* what, std::int64_t n, std::int64_t c, std::int64_t hw) {
  MB_CHECK(n > 0 && c > 0 && hw > 0, what, ": empty or negative size n=", n, " c=", c, " hw=", hw);
  MB_CHECK(c <= 0x7fffffff, what, ": ", c, " channels exceed the grid limit");
}

// Whether every element index (and j + kBlockThreads past the end) fits 32 bits.
bool fits_uint32(std::int64_t n, std::int64_t c, std::int64_t hw) {
  return n * c * hw + kBlockThreads < (std::int64_t{1} << 32);
}

unsigned elementwise_blocks(std::int64_t total, int threads) {
  const std::int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned>(std::min<std::int64_t>(blocks, 65535LL * 32));
}

}  // namespace

void batch_norm_forward_training(const Stream& where, const float* x, const float* weight,
                                 const float* bias, const float* residual, BnActivation act,
                                 std::int64_t n, std::int64_t c, std::int64_t hw, float eps,
                                 float* y, float* save_mean, float* save_invstd,
                                 double* statistics) {
  const cudaStream_t stream = cuda_stream(where);
  check_sizes("cuda::batch_norm_forward_training", n, c, hw);
  MB_CHECK(x && weight && bias && y && save_mean && save_invstd,
           "cuda::batch_norm_forward_training: null pointer argument");
  if (fits_uint32(n, c, hw)) {
    forward_training_kernel<std::uint32_t><<<static_cast<unsigned>(c), kBlockThreads, 0, stream>>>(
        x, weight, bias, residual, act, n, c, hw, eps, y, save_mean, save_invstd, statistics);
  } else {
    forward_training_kernel<std::int64_t><<<static_cast<unsigned>(c), kBlockThreads, 0, stream>>>(
        x, weight, bias, residual, act, n, c, hw, eps, y, save_mean, save_invstd, statistics);
  }
  MB_CUDA_LAUNCH_CHECK();
}

void batch_norm_forward_inference(const Stream& where, const float* x, const float* running_mean,
                                  const float* running_var, const float* weight, const float* bias,
                                  const float* residual, BnActivation act, std::int64_t n,
                                  std::int64_t c, std::int64_t hw, float eps, float* y,
                                  float* save_mean, float* save_invstd) {
  const cudaStream_t stream = cuda_stream(where);
  check_sizes("cuda::batch_norm_forward_inference", n, c, hw);
  MB_CHECK(x && running_mean && running_var && weight && bias && y && save_mean && save_invstd,
           "cuda::batch_norm_forward_inference: null pointer argument");
  constexpr int kSmallThreads = 256;
  inference_statistics_kernel<<<static_cast<unsigned>((c + kSmallThreads - 1) / kSmallThreads),
                                kSmallThreads, 0, stream>>>(running_mean, running_var, c, eps,
                                                            save_mean, save_invstd);
  MB_CUDA_LAUNCH_CHECK();
  const std::int64_t total = n * c * hw;
  normalize_kernel<<<elementwise_blocks(total, kSmallThreads), kSmallThreads, 0, stream>>>(
      x, save_mean, save_invstd, weight, bias, residual, act, total, c, hw, y);
  MB_CUDA_LAUNCH_CHECK();
}

void batch_norm_apply(const Stream& where, const float* x, const float* mean, const float* invstd,
                      const float* weight, const float* bias, const float* residual,
                      BnActivation act, std::int64_t n, std::int64_t c, std::int64_t hw, float* y) {
  const cudaStream_t stream = cuda_stream(where);
  check_sizes("cuda::batch_norm_apply", n, c, hw);
  MB_CHECK(x && mean && invstd && weight && bias && y,
           "cuda::batch_norm_apply: null pointer argument");
  constexpr int kSmallThreads = 256;
  const std::int64_t total = n * c * hw;
  normalize_kernel<<<elementwise_blocks(total, kSmallThreads), kSmallThreads, 0, stream>>>(
      x, mean, invstd, weight, bias, residual, act, total, c, hw, y);
  MB_CUDA_LAUNCH_CHECK();
}

void batch_norm_backward(const Stream& where, const float* grad_y, const float* x,
                         const float* save_mean, const float* save_invstd, const float* weight,
                         const float* bias, BnActivation act, std::int64_t n, std::int64_t c,
                         std::int64_t hw, bool batch_statistics, float* grad_x, float* grad_weight,
                         float* grad_bias, GradientMode mode) {
  const cudaStream_t stream = cuda_stream(where);
  check_sizes("cuda::batch_norm_backward", n, c, hw);
  MB_CHECK(grad_y && x && save_mean && save_invstd && weight && grad_weight && grad_bias &&
               (act == BnActivation::None || bias),
           "cuda::batch_norm_backward: null pointer argument");
  const bool accumulate = mode == GradientMode::Accumulate;
  if (fits_uint32(n, c, hw)) {
    backward_kernel<std::uint32_t><<<static_cast<unsigned>(c), kBlockThreads, 0, stream>>>(
        grad_y, x, save_mean, save_invstd, weight, bias, act, n, c, hw, batch_statistics, grad_x,
        grad_weight, grad_bias, accumulate);
  } else {
    backward_kernel<std::int64_t><<<static_cast<unsigned>(c), kBlockThreads, 0, stream>>>(
        grad_y, x, save_mean, save_invstd, weight, bias, act, n, c, hw, batch_statistics, grad_x,
        grad_weight, grad_bias, accumulate);
  }
  MB_CUDA_LAUNCH_CHECK();
}

void batch_norm_fold_statistics(const Stream& where, double* committed, double* pending,
                                std::int64_t count) {
  const cudaStream_t stream = cuda_stream(where);
  if (count == 0) return;
  MB_CHECK(committed && pending, "cuda::batch_norm_fold_statistics: null pointer argument");
  constexpr int kSmallThreads = 256;
  fold_statistics_kernel<<<static_cast<unsigned>((count + kSmallThreads - 1) / kSmallThreads),
                           kSmallThreads, 0, stream>>>(committed, pending, count);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
