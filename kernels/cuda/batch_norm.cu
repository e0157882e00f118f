// BatchNorm2d CUDA kernels and their host launchers (see batch_norm.h for the design).
#include "kernels/batch_norm_running.h"
#include "kernels/cuda/batch_norm.h"

#include <algorithm>
#include <initializer_list>

#include "kernels/cuda/launch.cuh"
#include "runtime/allocator.h"
#include "runtime/allocator_registry.h"

namespace mb::cuda {
namespace {

// Every pass works on rows: a row is one (sample, channel) plane of hw contiguous floats,
// row r = sample * c + channel. A warp takes a row and its lanes stride along it, four floats
// per load where hw % 4 == 0 and the pointers are 16-byte aligned, so no element needs a
// division to find its channel (one modulo per row does).
constexpr int kRowThreads = 256;
constexpr int kRowWarps = kRowThreads / 32;
// The statistics passes give each channel `chunks` blocks, each a contiguous range of the
// samples, so about this many blocks fill the device whatever the channel count. The count
// depends on n and c only: the same shapes reduce in the same order on every device.
constexpr std::int64_t kStatisticsBlocks = 1024;

// Sums `value` over the block; thread 0 gets the total. `shared` holds kRowWarps doubles.
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
  if (threadIdx.x == 0) {
    for (int w = 0; w < kRowWarps; ++w) total += shared[w];
  }
  return total;
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

__device__ __forceinline__ float4 load4(const float* p, std::int64_t i) {
  return reinterpret_cast<const float4*>(p)[i];
}

// The samples [first, last) of `chunk` out of `chunks` over n.
__device__ __forceinline__ void chunk_samples(std::int64_t n, int chunk, int chunks,
                                              std::int64_t& first, std::int64_t& last) {
  first = n * chunk / chunks;
  last = n * (chunk + 1) / chunks;
}

// partials[(ch * chunks + chunk) * 2 + {0, 1}] = Σx, Σx² over the chunk's rows of channel ch
// (blockIdx.x = ch, blockIdx.y = chunk), in fp64.
template <bool kVector>
__global__ void __launch_bounds__(kRowThreads)
    partial_statistics_kernel(const float* __restrict__ x, std::int64_t n, std::int64_t c,
                              std::int64_t hw, int chunks, double* __restrict__ partials) {
  __shared__ double shared[kRowWarps];
  const std::int64_t ch = blockIdx.x;
  const int chunk = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  std::int64_t first = 0, last = 0;
  chunk_samples(n, chunk, chunks, first, last);
  double sum = 0.0, sum_sq = 0.0;
  for (std::int64_t sample = first + warp; sample < last; sample += kRowWarps) {
    const float* row = x + (sample * c + ch) * hw;
    if (kVector) {
      for (std::int64_t i = lane; i < hw / 4; i += 32) {
        const float4 v = load4(row, i);
        const double a = v.x, b = v.y, d = v.z, e = v.w;
        sum += (a + b) + (d + e);
        sum_sq += (a * a + b * b) + (d * d + e * e);
      }
    } else {
      for (std::int64_t i = lane; i < hw; i += 32) {
        const double v = row[i];
        sum += v;
        sum_sq += v * v;
      }
    }
  }
  sum = block_sum(sum, shared);
  sum_sq = block_sum(sum_sq, shared);
  if (threadIdx.x == 0) {
    partials[(ch * chunks + chunk) * 2] = sum;
    partials[(ch * chunks + chunk) * 2 + 1] = sum_sq;
  }
}

// One thread per channel: the chunks' sums in chunk order, then the batch mean and invstd,
// and the fp64 accumulator of the running statistics.
__global__ void finish_statistics_kernel(const double* __restrict__ partials, int chunks,
                                         std::int64_t c, std::int64_t count, float eps,
                                         float* __restrict__ save_mean,
                                         float* __restrict__ save_invstd,
                                         double* __restrict__ statistics) {
  const std::int64_t ch = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (ch >= c) return;
  double sum = 0.0, sum_sq = 0.0;
  for (int k = 0; k < chunks; ++k) {
    sum += partials[(ch * chunks + k) * 2];
    sum_sq += partials[(ch * chunks + k) * 2 + 1];
  }
  const double mean = sum / static_cast<double>(count);
  const double variance = fmax(sum_sq / static_cast<double>(count) - mean * mean, 0.0);
  save_mean[ch] = static_cast<float>(mean);
  save_invstd[ch] = static_cast<float>(1.0 / sqrt(variance + static_cast<double>(eps)));
  if (statistics != nullptr) {
    statistics[ch] += sum;
    statistics[c + ch] += sum_sq;
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

// y = act(normalized(x) [+ residual]), a warp per row.
template <bool kVector>
__global__ void __launch_bounds__(kRowThreads)
    normalize_rows_kernel(const float* __restrict__ x, const float* __restrict__ mean,
                          const float* __restrict__ invstd, const float* __restrict__ weight,
                          const float* __restrict__ bias, const float* __restrict__ residual,
                          BnActivation act, std::int64_t rows, std::int64_t c, std::int64_t hw,
                          float* __restrict__ y) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowWarps + warp; row < rows;
       row += static_cast<std::int64_t>(gridDim.x) * kRowWarps) {
    const std::int64_t ch = row % c;
    const float m = mean[ch], scale = invstd[ch] * weight[ch], shift = bias[ch];
    const std::int64_t base = row * hw;
    if (kVector) {
      for (std::int64_t i = lane; i < hw / 4; i += 32) {
        const float4 v = load4(x + base, i);
        float4 z{normalized(v.x, m, scale, shift), normalized(v.y, m, scale, shift),
                 normalized(v.z, m, scale, shift), normalized(v.w, m, scale, shift)};
        if (residual != nullptr) {
          const float4 r = load4(residual + base, i);
          z.x += r.x;
          z.y += r.y;
          z.z += r.z;
          z.w += r.w;
        }
        reinterpret_cast<float4*>(y + base)[i] =
            float4{activate(z.x, act), activate(z.y, act), activate(z.z, act), activate(z.w, act)};
      }
    } else {
      for (std::int64_t i = lane; i < hw; i += 32) {
        const float z = normalized(x[base + i], m, scale, shift);
        y[base + i] = activate(residual != nullptr ? z + residual[base + i] : z, act);
      }
    }
  }
}

// Backward's per-channel constants, read by every element of a row.
struct BackwardChannel {
  float mean_f, scale_f, shift_f;  // the forward's normalized() arguments (the mask)
  double mean, invstd;
};

__device__ __forceinline__ BackwardChannel backward_channel(std::int64_t ch, const float* save_mean,
                                                            const float* save_invstd,
                                                            const float* weight, const float* bias,
                                                            BnActivation act) {
  BackwardChannel k;
  k.mean_f = save_mean[ch];
  k.scale_f = save_invstd[ch] * weight[ch];
  k.shift_f = act == BnActivation::None ? 0.0f : bias[ch];
  k.mean = save_mean[ch];
  k.invstd = save_invstd[ch];
  return k;
}

// The incoming gradient masked by act'(z), z recomputed from x as the forward computed it.
__device__ __forceinline__ float masked(float g, float x, const BackwardChannel& k,
                                        BnActivation act) {
  if (act == BnActivation::None) return g;
  return passes(normalized(x, k.mean_f, k.scale_f, k.shift_f), act) ? g : 0.0f;
}

// partials[(ch * chunks + chunk) * 2 + {0, 1}] = Σg, Σg·x̂ over the chunk's rows, in fp64.
template <bool kVector>
__global__ void __launch_bounds__(kRowThreads)
    partial_backward_kernel(const float* __restrict__ grad_y, const float* __restrict__ x,
                            const float* __restrict__ save_mean,
                            const float* __restrict__ save_invstd, const float* __restrict__ weight,
                            const float* __restrict__ bias, BnActivation act, std::int64_t n,
                            std::int64_t c, std::int64_t hw, int chunks,
                            double* __restrict__ partials) {
  __shared__ double shared[kRowWarps];
  const std::int64_t ch = blockIdx.x;
  const int chunk = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const BackwardChannel k = backward_channel(ch, save_mean, save_invstd, weight, bias, act);
  std::int64_t first = 0, last = 0;
  chunk_samples(n, chunk, chunks, first, last);
  double sum_g = 0.0, sum_g_xhat = 0.0;
  const auto add = [&](float g_raw, float xv) {
    const double g = masked(g_raw, xv, k, act);
    sum_g += g;
    sum_g_xhat += g * ((xv - k.mean) * k.invstd);
  };
  for (std::int64_t sample = first + warp; sample < last; sample += kRowWarps) {
    const std::int64_t base = (sample * c + ch) * hw;
    if (kVector) {
      for (std::int64_t i = lane; i < hw / 4; i += 32) {
        const float4 g = load4(grad_y + base, i);
        const float4 v = load4(x + base, i);
        add(g.x, v.x);
        add(g.y, v.y);
        add(g.z, v.z);
        add(g.w, v.w);
      }
    } else {
      for (std::int64_t i = lane; i < hw; i += 32) add(grad_y[base + i], x[base + i]);
    }
  }
  sum_g = block_sum(sum_g, shared);
  sum_g_xhat = block_sum(sum_g_xhat, shared);
  if (threadIdx.x == 0) {
    partials[(ch * chunks + chunk) * 2] = sum_g;
    partials[(ch * chunks + chunk) * 2 + 1] = sum_g_xhat;
  }
}

// One thread per channel: the parameter gradients, and in `coefficients` (3 per channel) what
// grad_x needs: scale = invstd * weight, mean of g, mean of g·x̂ (0 with running statistics).
__global__ void finish_backward_kernel(const double* __restrict__ partials, int chunks,
                                       std::int64_t c, std::int64_t count,
                                       const float* __restrict__ save_invstd,
                                       const float* __restrict__ weight, bool batch_statistics,
                                       float* __restrict__ grad_weight,
                                       float* __restrict__ grad_bias, bool accumulate,
                                       double* __restrict__ coefficients) {
  const std::int64_t ch = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (ch >= c) return;
  double sum_g = 0.0, sum_g_xhat = 0.0;
  for (int k = 0; k < chunks; ++k) {
    sum_g += partials[(ch * chunks + k) * 2];
    sum_g_xhat += partials[(ch * chunks + k) * 2 + 1];
  }
  if (accumulate) {
    grad_weight[ch] += static_cast<float>(sum_g_xhat);
    grad_bias[ch] += static_cast<float>(sum_g);
  } else {
    grad_weight[ch] = static_cast<float>(sum_g_xhat);
    grad_bias[ch] = static_cast<float>(sum_g);
  }
  if (coefficients == nullptr) return;
  coefficients[3 * ch] = static_cast<double>(save_invstd[ch]) * weight[ch];
  coefficients[3 * ch + 1] = batch_statistics ? sum_g / static_cast<double>(count) : 0.0;
  coefficients[3 * ch + 2] = batch_statistics ? sum_g_xhat / static_cast<double>(count) : 0.0;
}

// grad_x = scale * (g - mean(g) - x̂ * mean(g·x̂)), a warp per row.
template <bool kVector>
__global__ void __launch_bounds__(kRowThreads)
    grad_input_rows_kernel(const float* __restrict__ grad_y, const float* __restrict__ x,
                           const float* __restrict__ save_mean,
                           const float* __restrict__ save_invstd, const float* __restrict__ weight,
                           const float* __restrict__ bias, BnActivation act,
                           const double* __restrict__ coefficients, std::int64_t rows,
                           std::int64_t c, std::int64_t hw, float* __restrict__ grad_x) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowWarps + warp; row < rows;
       row += static_cast<std::int64_t>(gridDim.x) * kRowWarps) {
    const std::int64_t ch = row % c;
    const BackwardChannel k = backward_channel(ch, save_mean, save_invstd, weight, bias, act);
    const double scale = coefficients[3 * ch];
    const double mean_g = coefficients[3 * ch + 1];
    const double mean_g_xhat = coefficients[3 * ch + 2];
    const auto value = [&](float g, float xv) {
      const double xhat = (xv - k.mean) * k.invstd;
      return static_cast<float>(scale * (masked(g, xv, k, act) - mean_g - xhat * mean_g_xhat));
    };
    const std::int64_t base = row * hw;
    if (kVector) {
      for (std::int64_t i = lane; i < hw / 4; i += 32) {
        const float4 g = load4(grad_y + base, i);
        const float4 v = load4(x + base, i);
        reinterpret_cast<float4*>(grad_x + base)[i] =
            float4{value(g.x, v.x), value(g.y, v.y), value(g.z, v.z), value(g.w, v.w)};
      }
    } else {
      for (std::int64_t i = lane; i < hw; i += 32) {
        grad_x[base + i] = value(grad_y[base + i], x[base + i]);
      }
    }
  }
}

__global__ void fold_statistics_kernel(double* __restrict__ committed, double* __restrict__ pending,
                                       std::int64_t count) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  committed[i] += pending[i];
  pending[i] = 0.0;
}

__global__ void update_running_kernel(const double* statistics, std::int64_t channels,
                                      std::int64_t count, double momentum, float* running_mean,
                                      float* running_var, std::int32_t* num_batches_tracked) {
  const std::int64_t ch = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (ch == 0) *num_batches_tracked += 1;
  if (ch >= channels) return;
  running_statistics_of_channel(statistics, channels, ch, count, momentum, running_mean,
                                running_var);
}

void check_sizes(const char* what, std::int64_t n, std::int64_t c, std::int64_t hw) {
  MB_CHECK(n > 0 && c > 0 && hw > 0, what, ": empty or negative size n=", n, " c=", c, " hw=", hw);
  MB_CHECK(c <= 0x7fffffff, what, ": ", c, " channels exceed the grid limit");
}

// Blocks per channel for the statistics passes (at most one per sample, 65535 in y).
int statistics_chunks(std::int64_t n, std::int64_t c) {
  const std::int64_t wanted = (kStatisticsBlocks + c - 1) / c;
  return static_cast<int>(std::max<std::int64_t>(1, std::min({wanted, n, std::int64_t{65535}})));
}

unsigned row_blocks(std::int64_t rows) {
  return static_cast<unsigned>(
      std::min<std::int64_t>((rows + kRowWarps - 1) / kRowWarps, std::int64_t{1} << 20));
}

unsigned channel_blocks(std::int64_t c) {
  return static_cast<unsigned>((c + kThreads - 1) / kThreads);
}

// Four floats per load: rows of a multiple of four floats from 16-byte aligned tensors.
bool vectorizable(std::int64_t hw, std::initializer_list<const float*> pointers) {
  if (hw % 4 != 0) return false;
  for (const float* p : pointers) {
    if (p != nullptr && !aligned16(p)) return false;
  }
  return true;
}

// Workspace doubles for the passes, from the device's allocator, freed in stream order.
DeviceBuffer scratch(const Stream& where, std::int64_t doubles) {
  return DeviceBuffer(allocator_for(where.device()),
                      static_cast<std::size_t>(doubles) * sizeof(double), MemoryTag::Workspace,
                      where.handle());
}

void launch_normalize(cudaStream_t stream, bool vector, const float* x, const float* mean,
                      const float* invstd, const float* weight, const float* bias,
                      const float* residual, BnActivation act, std::int64_t n, std::int64_t c,
                      std::int64_t hw, float* y) {
  const std::int64_t rows = n * c;
  if (vector) {
    normalize_rows_kernel<true><<<row_blocks(rows), kRowThreads, 0, stream>>>(
        x, mean, invstd, weight, bias, residual, act, rows, c, hw, y);
  } else {
    normalize_rows_kernel<false><<<row_blocks(rows), kRowThreads, 0, stream>>>(
        x, mean, invstd, weight, bias, residual, act, rows, c, hw, y);
  }
  MB_CUDA_LAUNCH_CHECK();
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
  const int chunks = statistics_chunks(n, c);
  DeviceBuffer partials = scratch(where, 2 * c * chunks);
  auto* sums = static_cast<double*>(partials.get());
  const dim3 grid(static_cast<unsigned>(c), static_cast<unsigned>(chunks));
  const bool vector = vectorizable(hw, {x, y, residual});
  if (vector) {
    partial_statistics_kernel<true><<<grid, kRowThreads, 0, stream>>>(x, n, c, hw, chunks, sums);
  } else {
    partial_statistics_kernel<false><<<grid, kRowThreads, 0, stream>>>(x, n, c, hw, chunks, sums);
  }
  MB_CUDA_LAUNCH_CHECK();
  finish_statistics_kernel<<<channel_blocks(c), kThreads, 0, stream>>>(
      sums, chunks, c, n * hw, eps, save_mean, save_invstd, statistics);
  MB_CUDA_LAUNCH_CHECK();
  launch_normalize(stream, vector, x, save_mean, save_invstd, weight, bias, residual, act, n, c, hw,
                   y);
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
  inference_statistics_kernel<<<channel_blocks(c), kThreads, 0, stream>>>(
      running_mean, running_var, c, eps, save_mean, save_invstd);
  MB_CUDA_LAUNCH_CHECK();
  launch_normalize(stream, vectorizable(hw, {x, y, residual}), x, save_mean, save_invstd, weight,
                   bias, residual, act, n, c, hw, y);
}

void batch_norm_apply(const Stream& where, const float* x, const float* mean, const float* invstd,
                      const float* weight, const float* bias, const float* residual,
                      BnActivation act, std::int64_t n, std::int64_t c, std::int64_t hw, float* y) {
  const cudaStream_t stream = cuda_stream(where);
  check_sizes("cuda::batch_norm_apply", n, c, hw);
  MB_CHECK(x && mean && invstd && weight && bias && y,
           "cuda::batch_norm_apply: null pointer argument");
  launch_normalize(stream, vectorizable(hw, {x, y, residual}), x, mean, invstd, weight, bias,
                   residual, act, n, c, hw, y);
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
  const int chunks = statistics_chunks(n, c);
  // The chunks' partial sums, then 3 coefficients per channel for grad_x.
  DeviceBuffer workspace = scratch(where, 2 * c * chunks + (grad_x != nullptr ? 3 * c : 0));
  auto* partials = static_cast<double*>(workspace.get());
  double* coefficients = grad_x != nullptr ? partials + 2 * c * chunks : nullptr;
  const dim3 grid(static_cast<unsigned>(c), static_cast<unsigned>(chunks));
  const bool vector = vectorizable(hw, {grad_y, x, grad_x});
  if (vector) {
    partial_backward_kernel<true><<<grid, kRowThreads, 0, stream>>>(
        grad_y, x, save_mean, save_invstd, weight, bias, act, n, c, hw, chunks, partials);
  } else {
    partial_backward_kernel<false><<<grid, kRowThreads, 0, stream>>>(
        grad_y, x, save_mean, save_invstd, weight, bias, act, n, c, hw, chunks, partials);
  }
  MB_CUDA_LAUNCH_CHECK();
  finish_backward_kernel<<<channel_blocks(c), kThreads, 0, stream>>>(
      partials, chunks, c, n * hw, save_invstd, weight, batch_statistics, grad_weight, grad_bias,
      accumulate, coefficients);
  MB_CUDA_LAUNCH_CHECK();
  if (grad_x == nullptr) return;
  const std::int64_t rows = n * c;
  if (vector) {
    grad_input_rows_kernel<true><<<row_blocks(rows), kRowThreads, 0, stream>>>(
        grad_y, x, save_mean, save_invstd, weight, bias, act, coefficients, rows, c, hw, grad_x);
  } else {
    grad_input_rows_kernel<false><<<row_blocks(rows), kRowThreads, 0, stream>>>(
        grad_y, x, save_mean, save_invstd, weight, bias, act, coefficients, rows, c, hw, grad_x);
  }
  MB_CUDA_LAUNCH_CHECK();
}

void batch_norm_fold_statistics(const Stream& where, double* committed, double* pending,
                                std::int64_t count) {
  const cudaStream_t stream = cuda_stream(where);
  if (count == 0) return;
  MB_CHECK(committed && pending, "cuda::batch_norm_fold_statistics: null pointer argument");
  fold_statistics_kernel<<<static_cast<unsigned>((count + kThreads - 1) / kThreads), kThreads, 0,
                           stream>>>(committed, pending, count);
  MB_CUDA_LAUNCH_CHECK();
}

void batch_norm_update_running(const Stream& stream, const double* statistics,
                               std::int64_t channels, std::int64_t count, double momentum,
                               float* running_mean, float* running_var,
                               std::int32_t* num_batches_tracked) {
  update_running_kernel<<<channel_blocks(channels), kThreads, 0, cuda_stream(stream)>>>(
      statistics, channels, count, momentum, running_mean, running_var, num_batches_tracked);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
