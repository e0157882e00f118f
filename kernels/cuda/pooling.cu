// Pooling CUDA kernels and their host launchers: one thread per output element in forward,
// one per input element in backward (gather), one warp per plane for global average.
#include "kernels/cuda/pooling.h"

#include <algorithm>

#include "kernels/cuda/launch.cuh"

namespace mb::cuda {
namespace {

constexpr std::int64_t kPoolMaxBlocks = 65535LL * 32;

unsigned pool_grid(std::int64_t total) {
  return grid_for(total, kThreads, kPoolMaxBlocks);
}

// First output row/column whose window covers input position `i` (and one past the last).
__device__ __forceinline__ void covering_range(std::int64_t i, int kernel, int stride, int pad,
                                               std::int64_t out, std::int64_t* begin,
                                               std::int64_t* end) {
  const std::int64_t padded = i + pad;
  *begin = padded < kernel ? 0 : (padded - kernel) / stride + 1;
  *end = min(padded / stride + 1, out);
}

__global__ void max_forward_kernel(const float* __restrict__ x, Pool2dGeometry g,
                                   float* __restrict__ y, std::uint8_t* __restrict__ argmax) {
  const std::int64_t total = g.batch * g.channels * g.out_h * g.out_w;
  for (std::int64_t o = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t ow = o % g.out_w;
    const std::int64_t oh = (o / g.out_w) % g.out_h;
    const std::int64_t plane = o / (g.out_w * g.out_h);
    const float* in = x + plane * g.in_h * g.in_w;
    const std::int64_t h0 = oh * g.stride_h - g.pad_h;
    const std::int64_t w0 = ow * g.stride_w - g.pad_w;
    const std::int64_t h_begin = max(h0, std::int64_t{0});
    const std::int64_t h_end = min(h0 + g.kernel_h, g.in_h);
    const std::int64_t w_begin = max(w0, std::int64_t{0});
    const std::int64_t w_end = min(w0 + g.kernel_w, g.in_w);
    // Same rule as the CPU reference: the first maximum wins, the first NaN wins over all.
    std::int64_t best_index = h_begin * g.in_w + w_begin;
    float best = in[best_index];
    bool found_nan = isnan(best);
    for (std::int64_t ih = h_begin; ih < h_end && !found_nan; ++ih) {
      for (std::int64_t iw = w_begin; iw < w_end; ++iw) {
        const float v = in[ih * g.in_w + iw];
        if (isnan(v)) {
          best = v;
          best_index = ih * g.in_w + iw;
          found_nan = true;
          break;
        }
        if (v > best) {
          best = v;
          best_index = ih * g.in_w + iw;
        }
      }
    }
    y[o] = best;
    argmax[o] = static_cast<std::uint8_t>((best_index / g.in_w - h0) * g.kernel_w +
                                          (best_index % g.in_w - w0));
  }
}

__global__ void max_backward_kernel(const float* __restrict__ grad_y,
                                    const std::uint8_t* __restrict__ argmax, Pool2dGeometry g,
                                    float* __restrict__ grad_x) {
  const std::int64_t total = g.batch * g.channels * g.in_h * g.in_w;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t iw = i % g.in_w;
    const std::int64_t ih = (i / g.in_w) % g.in_h;
    const std::int64_t plane = i / (g.in_w * g.in_h);
    std::int64_t oh_begin, oh_end, ow_begin, ow_end;
    covering_range(ih, g.kernel_h, g.stride_h, g.pad_h, g.out_h, &oh_begin, &oh_end);
    covering_range(iw, g.kernel_w, g.stride_w, g.pad_w, g.out_w, &ow_begin, &ow_end);
    const std::int64_t base = plane * g.out_h * g.out_w;
    float sum = 0.0f;
    for (std::int64_t oh = oh_begin; oh < oh_end; ++oh) {
      for (std::int64_t ow = ow_begin; ow < ow_end; ++ow) {
        const std::int64_t o = base + oh * g.out_w + ow;
        // This input's position in window (oh, ow).
        const std::int64_t self =
            (ih - (oh * g.stride_h - g.pad_h)) * g.kernel_w + (iw - (ow * g.stride_w - g.pad_w));
        if (argmax[o] == self) sum += grad_y[o];
      }
    }
    grad_x[i] = sum;
  }
}

__global__ void avg_forward_kernel(const float* __restrict__ x, Pool2dGeometry g,
                                   float* __restrict__ y) {
  const std::int64_t total = g.batch * g.channels * g.out_h * g.out_w;
  const float inv_divisor = 1.0f / (static_cast<float>(g.kernel_h) * g.kernel_w);
  for (std::int64_t o = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t ow = o % g.out_w;
    const std::int64_t oh = (o / g.out_w) % g.out_h;
    const std::int64_t plane = o / (g.out_w * g.out_h);
    const float* in = x + plane * g.in_h * g.in_w;
    const std::int64_t h0 = oh * g.stride_h - g.pad_h;
    const std::int64_t w0 = ow * g.stride_w - g.pad_w;
    const std::int64_t h_end = min(h0 + g.kernel_h, g.in_h);
    const std::int64_t w_end = min(w0 + g.kernel_w, g.in_w);
    float sum = 0.0f;
    for (std::int64_t ih = max(h0, std::int64_t{0}); ih < h_end; ++ih) {
      for (std::int64_t iw = max(w0, std::int64_t{0}); iw < w_end; ++iw)
        sum += in[ih * g.in_w + iw];
    }
    y[o] = sum * inv_divisor;
  }
}

__global__ void avg_backward_kernel(const float* __restrict__ grad_y, Pool2dGeometry g,
                                    float* __restrict__ grad_x) {
  const std::int64_t total = g.batch * g.channels * g.in_h * g.in_w;
  const float inv_divisor = 1.0f / (static_cast<float>(g.kernel_h) * g.kernel_w);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t iw = i % g.in_w;
    const std::int64_t ih = (i / g.in_w) % g.in_h;
    const std::int64_t plane = i / (g.in_w * g.in_h);
    std::int64_t oh_begin, oh_end, ow_begin, ow_end;
    covering_range(ih, g.kernel_h, g.stride_h, g.pad_h, g.out_h, &oh_begin, &oh_end);
    covering_range(iw, g.kernel_w, g.stride_w, g.pad_w, g.out_w, &ow_begin, &ow_end);
    const float* gy = grad_y + plane * g.out_h * g.out_w;
    float sum = 0.0f;
    for (std::int64_t oh = oh_begin; oh < oh_end; ++oh) {
      for (std::int64_t ow = ow_begin; ow < ow_end; ++ow) sum += gy[oh * g.out_w + ow];
    }
    grad_x[i] = sum * inv_divisor;
  }
}

// One warp per plane.
__global__ void global_avg_forward_kernel(const float* __restrict__ x, std::int64_t planes,
                                          std::int64_t plane_size, float* __restrict__ y) {
  const std::int64_t warps_per_block = blockDim.x / 32;
  const std::int64_t plane = blockIdx.x * warps_per_block + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (plane >= planes) return;
  const float* in = x + plane * plane_size;
  float sum = 0.0f;
  for (std::int64_t i = lane; i < plane_size; i += 32) sum += in[i];
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  if (lane == 0) y[plane] = sum / static_cast<float>(plane_size);
}

__global__ void global_avg_backward_kernel(const float* __restrict__ grad_y, std::int64_t planes,
                                           std::int64_t plane_size, float* __restrict__ grad_x) {
  const std::int64_t total = planes * plane_size;
  const float inv_size = 1.0f / static_cast<float>(plane_size);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    grad_x[i] = grad_y[i / plane_size] * inv_size;
  }
}

void check_geometry(const char* what, const Pool2dGeometry& g) {
  MB_CHECK(g.batch > 0 && g.channels > 0 && g.in_h > 0 && g.in_w > 0 && g.out_h > 0 && g.out_w > 0,
           what, ": empty geometry");
  MB_CHECK(g.kernel_h > 0 && g.kernel_w > 0 && g.stride_h > 0 && g.stride_w > 0 && g.pad_h >= 0 &&
               g.pad_w >= 0,
           what, ": kernel and stride must be positive and padding non-negative");
  MB_CHECK(g.kernel_h * g.kernel_w <= kMaxPoolWindow, what, ": a ", g.kernel_h, "x", g.kernel_w,
           " window has more than ", kMaxPoolWindow,
           " elements, whose argmax needs more than a byte. Fix: use a smaller kernel");
}

}  // namespace

void max_pool2d_forward(const Stream& where, const float* x, const Pool2dGeometry& geometry,
                        float* y, std::uint8_t* argmax) {
  const cudaStream_t stream = cuda_stream(where);
  check_geometry("cuda::max_pool2d_forward", geometry);
  MB_CHECK(x && y && argmax, "cuda::max_pool2d_forward: null pointer argument");
  const std::int64_t total = geometry.batch * geometry.channels * geometry.out_h * geometry.out_w;
  max_forward_kernel<<<pool_grid(total), kThreads, 0, stream>>>(x, geometry, y, argmax);
  MB_CUDA_LAUNCH_CHECK();
}

void max_pool2d_backward(const Stream& where, const float* grad_y, const std::uint8_t* argmax,
                         const Pool2dGeometry& geometry, float* grad_x) {
  const cudaStream_t stream = cuda_stream(where);
  check_geometry("cuda::max_pool2d_backward", geometry);
  MB_CHECK(grad_y && argmax && grad_x, "cuda::max_pool2d_backward: null pointer argument");
  const std::int64_t total = geometry.batch * geometry.channels * geometry.in_h * geometry.in_w;
  max_backward_kernel<<<pool_grid(total), kThreads, 0, stream>>>(grad_y, argmax, geometry, grad_x);
  MB_CUDA_LAUNCH_CHECK();
}

void avg_pool2d_forward(const Stream& where, const float* x, const Pool2dGeometry& geometry,
                        float* y) {
  const cudaStream_t stream = cuda_stream(where);
  check_geometry("cuda::avg_pool2d_forward", geometry);
  MB_CHECK(x && y, "cuda::avg_pool2d_forward: null pointer argument");
  const std::int64_t total = geometry.batch * geometry.channels * geometry.out_h * geometry.out_w;
  avg_forward_kernel<<<pool_grid(total), kThreads, 0, stream>>>(x, geometry, y);
  MB_CUDA_LAUNCH_CHECK();
}

void avg_pool2d_backward(const Stream& where, const float* grad_y, const Pool2dGeometry& geometry,
                         float* grad_x) {
  const cudaStream_t stream = cuda_stream(where);
  check_geometry("cuda::avg_pool2d_backward", geometry);
  MB_CHECK(grad_y && grad_x, "cuda::avg_pool2d_backward: null pointer argument");
  const std::int64_t total = geometry.batch * geometry.channels * geometry.in_h * geometry.in_w;
  avg_backward_kernel<<<pool_grid(total), kThreads, 0, stream>>>(grad_y, geometry, grad_x);
  MB_CUDA_LAUNCH_CHECK();
}

void global_avg_pool2d_forward(const Stream& where, const float* x, std::int64_t planes,
                               std::int64_t plane_size, float* y) {
  const cudaStream_t stream = cuda_stream(where);
  MB_CHECK(planes > 0 && plane_size > 0, "cuda::global_avg_pool2d_forward: empty input");
  MB_CHECK(x && y, "cuda::global_avg_pool2d_forward: null pointer argument");
  constexpr std::int64_t kWarpsPerBlock = kThreads / 32;
  const std::int64_t blocks = (planes + kWarpsPerBlock - 1) / kWarpsPerBlock;
  MB_CHECK(blocks <= 0x7fffffff, "cuda::global_avg_pool2d_forward: ", planes,
           " planes are too many");
  global_avg_forward_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, planes,
                                                                                    plane_size, y);
  MB_CUDA_LAUNCH_CHECK();
}

void global_avg_pool2d_backward(const Stream& where, const float* grad_y, std::int64_t planes,
                                std::int64_t plane_size, float* grad_x) {
  const cudaStream_t stream = cuda_stream(where);
  MB_CHECK(planes > 0 && plane_size > 0, "cuda::global_avg_pool2d_backward: empty input");
  MB_CHECK(grad_y && grad_x, "cuda::global_avg_pool2d_backward: null pointer argument");
  global_avg_backward_kernel<<<pool_grid(planes * plane_size), kThreads, 0, stream>>>(
      grad_y, planes, plane_size, grad_x);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
