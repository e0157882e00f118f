// Per-channel bias on the CPU for tensors laid out [batch, channels, spatial] (NCHW with
// H*W flattened; spatial = 1 for Linear): the forward add and the gradient reduction.
// The CUDA backend does the same through cudnnAddTensor / cudnnConvolutionBackwardBias
// (layers/cuda/cudnn_conv.h); these are its reference.
#pragma once

#include <cstdint>

#include "runtime/gradient_mode.h"

namespace mb::cpu {

// data[n][c][s] += bias[c]
void add_channel_bias(float* data, const float* bias, std::int64_t batch, std::int64_t channels,
                      std::int64_t spatial);

// bias_grad[c] = (or +=, per mode) sum over n, s of grad[n][c][s], summed in double.
void channel_bias_grad(const float* grad, std::int64_t batch, std::int64_t channels,
                       std::int64_t spatial, float* bias_grad, GradientMode mode);

}  // namespace mb::cpu
