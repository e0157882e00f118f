// cuDNN convolution and cuBLAS GEMM helpers for the CUDA backend of Conv2d,
// ConvTranspose2d and Linear.
//
// The interface uses raw device pointers and plain sizes so that the layer .cpp files need
// no CUDA headers. Every call runs on the device's compute stream with its cuDNN / cuBLAS
// handle (runtime/cuda_context.h). `mode` picks beta: Overwrite writes the destination,
// Accumulate adds to it (beta = 1).
//
// Note: the convolution algorithm is chosen once per shape key (geometry, direction, TF32
// flag) from cuDNN's heuristics (cudnnGet*Algorithm_v7), taking the fastest candidate whose
// workspace fits what the allocator can still give (report().available()), and cached.
// The heuristic query runs nothing on the device, so it cannot clobber an output that is
// being accumulated into (cudnnFind*AlgorithmEx writes its output buffers). Workspaces come
// from our allocator, tagged Workspace, never from cudaMalloc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/device.h"
#include "runtime/gradient_mode.h"

namespace mb::cuda {

// A grouped, dilated 2-D convolution: input [batch, in_channels, in_h, in_w] (x), filter
// [out_channels, in_channels / groups, kernel_h, kernel_w] (w), output
// [batch, out_channels, out_h, out_w] (y), with out_h/out_w from the usual formula.
struct ConvGeometry {
  std::int64_t batch = 0;
  std::int64_t in_channels = 0;
  std::int64_t in_h = 0, in_w = 0;
  std::int64_t out_channels = 0;
  int kernel_h = 1, kernel_w = 1;
  int stride = 1, padding = 0, dilation = 1, groups = 1;

  std::int64_t out_h() const;
  std::int64_t out_w() const;
  std::string to_string() const;
};

// y (+)= conv(x, w)
void conv_forward(const Device& device, const ConvGeometry& geometry, const float* x,
                  const float* w, float* y, GradientMode mode);
// dx (+)= conv^T(dy, w): the input gradient.
void conv_backward_data(const Device& device, const ConvGeometry& geometry, const float* w,
                        const float* dy, float* dx, GradientMode mode);
// dw (+)= the filter gradient from x and dy.
void conv_backward_filter(const Device& device, const ConvGeometry& geometry, const float* x,
                          const float* dy, float* dw, GradientMode mode);

// data[n][c][s] += bias[c] for data [batch, channels, spatial].
void add_channel_bias(const Device& device, const float* bias, float* data, std::int64_t batch,
                      std::int64_t channels, std::int64_t spatial);
// bias_grad[c] (+)= sum over n, s of grad[n][c][s].
void channel_bias_grad(const Device& device, const float* grad, float* bias_grad,
                       std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                       GradientMode mode);

// Row-major C[m, n] (+)= op(A) op(B) through cuBLAS, where op(A) is m x k and op(B) is
// k x n; lda/ldb/ldc are row strides as stored (the same contract as cpu::gemm).
void gemm(const Device& device, bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n,
          std::int64_t k, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
          float* c, std::int64_t ldc, GradientMode mode);

// Number of algorithm choices cached so far (for tests and logs).
std::size_t conv_algorithm_cache_size();

}  // namespace mb::cuda
