// ReLU and ReLU6 kernels and their host launchers.
//
// One templated kernel per direction: the activation is a functor, the body handles four
// elements at a time (float4) when the pointers allow, and a scalar tail otherwise.
#include "kernels/cuda/activation.h"

#include <algorithm>

#include "kernels/cuda/launch.cuh"

namespace mb::cuda {
namespace {

struct Relu {
  __device__ float forward(float x) const { return x > 0.0f ? x : 0.0f; }
  __device__ bool passes(float x) const { return x > 0.0f; }
  __device__ float backward(float y, float dy) const { return y > 0.0f ? dy : 0.0f; }
};

struct Relu6 {
  __device__ float forward(float x) const { return x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f; }
  __device__ bool passes(float x) const { return x > 0.0f && x < 6.0f; }
  __device__ float backward(float y, float dy) const { return (y > 0.0f && y < 6.0f) ? dy : 0.0f; }
};

template <typename Op>
__global__ void forward_kernel(const float* input, float* output, std::int64_t count,
                               bool vectorized, Op op) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int64_t scalar_begin = 0;
  if (vectorized) {
    const std::int64_t vectors = count / 4;
    const auto* in4 = reinterpret_cast<const float4*>(input);
    auto* out4 = reinterpret_cast<float4*>(output);
    for (std::int64_t i = start; i < vectors; i += stride) {
      float4 v = in4[i];
      v.x = op.forward(v.x);
      v.y = op.forward(v.y);
      v.z = op.forward(v.z);
      v.w = op.forward(v.w);
      out4[i] = v;
    }
    scalar_begin = vectors * 4;
  }
  for (std::int64_t i = scalar_begin + start; i < count; i += stride) {
    output[i] = op.forward(input[i]);
  }
}

template <typename Op>
__global__ void backward_kernel(const float* output, const float* grad_output, float* grad_input,
                                std::int64_t count, bool vectorized, Op op) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int64_t scalar_begin = 0;
  if (vectorized) {
    const std::int64_t vectors = count / 4;
    const auto* y4 = reinterpret_cast<const float4*>(output);
    const auto* dy4 = reinterpret_cast<const float4*>(grad_output);
    auto* dx4 = reinterpret_cast<float4*>(grad_input);
    for (std::int64_t i = start; i < vectors; i += stride) {
      const float4 y = y4[i];
      float4 g = dy4[i];
      g.x = op.backward(y.x, g.x);
      g.y = op.backward(y.y, g.y);
      g.z = op.backward(y.z, g.z);
      g.w = op.backward(y.w, g.w);
      dx4[i] = g;
    }
    scalar_begin = vectors * 4;
  }
  for (std::int64_t i = scalar_begin + start; i < count; i += stride) {
    grad_input[i] = op.backward(output[i], grad_output[i]);
  }
}

// y = op(x) and the mask: one element per thread, a warp's 32 passes gathered by a ballot
// into one word (each warp's elements are 32 consecutive ones, word-aligned: the grid
// stride is a multiple of 32 and every warp stays in the loop while any of its lanes has an
// element, so the ballot sees the whole warp).
template <typename Op>
__global__ void forward_masked_kernel(const float* __restrict__ input, float* __restrict__ output,
                                      std::uint32_t* __restrict__ mask, std::int64_t count, Op op) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const int lane = threadIdx.x & 31;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i - lane < count; i += stride) {
    bool pass = false;
    if (i < count) {
      const float x = input[i];
      output[i] = op.forward(x);
      pass = op.passes(x);
    }
    const unsigned bits = __ballot_sync(0xffffffffu, pass);
    if (lane == 0) mask[i / 32] = bits;
  }
}

__global__ void backward_masked_kernel(const std::uint32_t* __restrict__ mask,
                                       const float* __restrict__ grad_output,
                                       float* __restrict__ grad_input, std::int64_t count) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const float g = grad_output[i];
    grad_input[i] = (mask[i / 32] >> (i % 32)) & 1u ? g : 0.0f;
  }
}

template <typename Op>
void launch_forward_masked(const char* name, const float* input, float* output, std::uint32_t* mask,
                           std::int64_t count, cudaStream_t stream) {
  MB_CHECK(count >= 0, name, ": negative element count ", count);
  if (count == 0) return;
  MB_CHECK(input != nullptr && output != nullptr && mask != nullptr, name, ": null pointer");
  static_assert(kThreads % 32 == 0, "whole warps: the mask's ballot needs every lane");
  forward_masked_kernel<<<grid_for(count), kThreads, 0, stream>>>(input, output, mask, count, Op{});
  MB_CUDA_LAUNCH_CHECK();
}

template <typename Op>
void launch_forward(const char* name, const float* input, float* output, std::int64_t count,
                    cudaStream_t stream) {
  MB_CHECK(count >= 0, name, ": negative element count ", count);
  if (count == 0) return;
  MB_CHECK(input != nullptr && output != nullptr, name, ": null pointer");
  const bool vectorized = aligned16(input) && aligned16(output);
  const std::int64_t work = vectorized ? (count + 3) / 4 : count;
  forward_kernel<<<grid_for(work), kThreads, 0, stream>>>(input, output, count, vectorized, Op{});
  MB_CUDA_LAUNCH_CHECK();
}

template <typename Op>
void launch_backward(const char* name, const float* output, const float* grad_output,
                     float* grad_input, std::int64_t count, cudaStream_t stream) {
  MB_CHECK(count >= 0, name, ": negative element count ", count);
  if (count == 0) return;
  MB_CHECK(output != nullptr && grad_output != nullptr && grad_input != nullptr, name,
           ": null pointer");
  const bool vectorized = aligned16(output) && aligned16(grad_output) && aligned16(grad_input);
  const std::int64_t work = vectorized ? (count + 3) / 4 : count;
  backward_kernel<<<grid_for(work), kThreads, 0, stream>>>(output, grad_output, grad_input, count,
                                                           vectorized, Op{});
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace

void relu_forward(const Stream& where, const float* input, float* output, std::int64_t count) {
  const cudaStream_t stream = cuda_stream(where);
  launch_forward<Relu>("relu_forward", input, output, count, stream);
}

void relu_backward(const Stream& where, const float* output, const float* grad_output,
                   float* grad_input, std::int64_t count) {
  const cudaStream_t stream = cuda_stream(where);
  launch_backward<Relu>("relu_backward", output, grad_output, grad_input, count, stream);
}

void relu6_forward(const Stream& where, const float* input, float* output, std::int64_t count) {
  const cudaStream_t stream = cuda_stream(where);
  launch_forward<Relu6>("relu6_forward", input, output, count, stream);
}

void relu6_backward(const Stream& where, const float* output, const float* grad_output,
                    float* grad_input, std::int64_t count) {
  const cudaStream_t stream = cuda_stream(where);
  launch_backward<Relu6>("relu6_backward", output, grad_output, grad_input, count, stream);
}

void relu_forward_masked(const Stream& where, const float* input, float* output,
                         std::uint32_t* mask, std::int64_t count) {
  launch_forward_masked<Relu>("relu_forward_masked", input, output, mask, count,
                              cuda_stream(where));
}

void relu6_forward_masked(const Stream& where, const float* input, float* output,
                          std::uint32_t* mask, std::int64_t count) {
  launch_forward_masked<Relu6>("relu6_forward_masked", input, output, mask, count,
                               cuda_stream(where));
}

void activation_backward_masked(const Stream& where, const std::uint32_t* mask,
                                const float* grad_output, float* grad_input, std::int64_t count) {
  MB_CHECK(count >= 0, "activation_backward_masked: negative element count ", count);
  if (count == 0) return;
  MB_CHECK(mask != nullptr && grad_output != nullptr && grad_input != nullptr,
           "activation_backward_masked: null pointer");
  backward_masked_kernel<<<grid_for(count), kThreads, 0, cuda_stream(where)>>>(mask, grad_output,
                                                                               grad_input, count);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
