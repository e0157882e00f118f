// Elementwise and channel-routing kernels and their host launchers.
//
// The arithmetic ops share one kernel shape: an op functor applied over float4 vectors
// (when aligned) and then a scalar tail. Concat/split use one thread per element of the
// concatenated tensor, which keeps both the reads and the writes coalesced.
#include "kernels/cuda/elementwise.h"

#include <algorithm>

#include "kernels/cuda/launch.cuh"

namespace mb::cuda {
namespace {

// out[i] = op(a[i], b[i]); `a` or `b` may be unused (null) for unary/nullary ops.
struct AddOp {
  __device__ float operator()(float a, float b, float) const { return a + b; }
};
struct AddIntoOp {  // out == dst
  __device__ float operator()(float dst, float src, float) const { return dst + src; }
};

__device__ float4 load4(const float* p, std::int64_t i) {
  return p != nullptr ? reinterpret_cast<const float4*>(p)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
}
__device__ float load1(const float* p, std::int64_t i) {
  return p != nullptr ? p[i] : 0.0f;
}

template <typename Op>
__global__ void binary_kernel(const float* a, const float* b, float* out, float scalar,
                              std::int64_t count, bool vectorized, Op op) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int64_t scalar_begin = 0;
  if (vectorized) {
    const std::int64_t vectors = count / 4;
    auto* out4 = reinterpret_cast<float4*>(out);
    for (std::int64_t i = start; i < vectors; i += stride) {
      const float4 x = load4(a, i);
      const float4 y = load4(b, i);
      out4[i] = make_float4(op(x.x, y.x, scalar), op(x.y, y.y, scalar), op(x.z, y.z, scalar),
                            op(x.w, y.w, scalar));
    }
    scalar_begin = vectors * 4;
  }
  for (std::int64_t i = scalar_begin + start; i < count; i += stride) {
    out[i] = op(load1(a, i), load1(b, i), scalar);
  }
}

template <typename Op>
void launch_binary(const float* a, const float* b, float* out, float scalar, std::int64_t count,
                   cudaStream_t stream) {
  const bool vectorized = aligned16(a) && aligned16(b) && aligned16(out);
  const std::int64_t work = vectorized ? (count + 3) / 4 : count;
  binary_kernel<<<grid_for(work), kThreads, 0, stream>>>(a, b, out, scalar, count, vectorized,
                                                         Op{});
  MB_CUDA_LAUNCH_CHECK();
}

void check_count(const char* name, std::int64_t count) {
  MB_CHECK(count >= 0, name, ": negative element count ", count);
}

__global__ void concat_kernel(const float* a, const float* b, float* out, std::int64_t outer,
                              std::int64_t block_a, std::int64_t block_b) {
  const std::int64_t row = block_a + block_b;
  const std::int64_t total = outer * row;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t n = i / row;
    const std::int64_t r = i - n * row;
    out[i] = r < block_a ? a[n * block_a + r] : b[n * block_b + (r - block_a)];
  }
}

__global__ void split_kernel(const float* in, float* a, float* b, std::int64_t outer,
                             std::int64_t block_a, std::int64_t block_b) {
  const std::int64_t row = block_a + block_b;
  const std::int64_t total = outer * row;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t n = i / row;
    const std::int64_t r = i - n * row;
    if (r < block_a) {
      a[n * block_a + r] = in[i];
    } else {
      b[n * block_b + (r - block_a)] = in[i];
    }
  }
}

}  // namespace

void add(const Stream& where, const float* a, const float* b, float* out, std::int64_t count) {
  const cudaStream_t stream = cuda_stream(where);
  check_count("add", count);
  if (count == 0) return;
  MB_CHECK(a != nullptr && b != nullptr && out != nullptr, "add: null pointer");
  launch_binary<AddOp>(a, b, out, 0.0f, count, stream);
}

void add_into(const Stream& where, float* dst, const float* src, std::int64_t count) {
  const cudaStream_t stream = cuda_stream(where);
  check_count("add_into", count);
  if (count == 0) return;
  MB_CHECK(dst != nullptr && src != nullptr, "add_into: null pointer");
  launch_binary<AddIntoOp>(dst, src, dst, 0.0f, count, stream);
}

void concat_channels(const Stream& where, const float* a, const float* b, float* out,
                     std::int64_t outer, std::int64_t channels_a, std::int64_t channels_b,
                     std::int64_t inner) {
  const cudaStream_t stream = cuda_stream(where);
  MB_CHECK(outer >= 0 && channels_a >= 0 && channels_b >= 0 && inner >= 0,
           "concat_channels: negative sizes");
  const std::int64_t total = outer * (channels_a + channels_b) * inner;
  if (total == 0) return;
  MB_CHECK(out != nullptr && (a != nullptr || channels_a == 0) && (b != nullptr || channels_b == 0),
           "concat_channels: null pointer");
  concat_kernel<<<grid_for(total), kThreads, 0, stream>>>(a, b, out, outer, channels_a * inner,
                                                          channels_b * inner);
  MB_CUDA_LAUNCH_CHECK();
}

void split_channels(const Stream& where, const float* in, float* a, float* b, std::int64_t outer,
                    std::int64_t channels_a, std::int64_t channels_b, std::int64_t inner) {
  const cudaStream_t stream = cuda_stream(where);
  MB_CHECK(outer >= 0 && channels_a >= 0 && channels_b >= 0 && inner >= 0,
           "split_channels: negative sizes");
  const std::int64_t total = outer * (channels_a + channels_b) * inner;
  if (total == 0) return;
  MB_CHECK(in != nullptr && (a != nullptr || channels_a == 0) && (b != nullptr || channels_b == 0),
           "split_channels: null pointer");
  split_kernel<<<grid_for(total), kThreads, 0, stream>>>(in, a, b, outer, channels_a * inner,
                                                         channels_b * inner);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
