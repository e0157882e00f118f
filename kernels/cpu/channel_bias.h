// Per-channel bias on the CPU for tensors laid out [batch, channels, spatial] (NCHW with
// H*W flattened; spatial = 1 for Linear): the forward add and the gradient reduction.
// The CUDA twins (kernels/cuda/channel_bias.h) do the same through cuDNN; these are their
// reference. Contract: kernels/channel_bias.h.
#pragma once

#include <cstdint>

#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cpu {

// data[n][c][s] += bias[c]
void add_channel_bias(const Stream& stream, float* data, const float* bias, std::int64_t batch,
                      std::int64_t channels, std::int64_t spatial);

// Sums in double.
void channel_bias_grad(const Stream& stream, const float* grad, std::int64_t batch,
                       std::int64_t channels, std::int64_t spatial, float* bias_grad,
                       GradientMode mode);

}  // namespace mb::cpu
