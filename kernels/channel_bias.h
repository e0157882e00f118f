// Per-channel bias for tensors laid out [batch, channels, spatial] (NCHW with H*W
// flattened; spatial = 1 for Linear): the forward add and the gradient reduction (twins:
// kernels/cpu/channel_bias.h, the reference; kernels/cuda/channel_bias.h, cuDNN's
// cudnnAddTensor and cudnnConvolutionBackwardBias).
#pragma once

#include <cstdint>

#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb {

// data[n][c][s] += bias[c]
void add_channel_bias(const Stream& stream, float* data, const float* bias, std::int64_t batch,
                      std::int64_t channels, std::int64_t spatial);
// bias_grad[c] = (or +=, per mode) sum over n, s of grad[n][c][s].
void channel_bias_grad(const Stream& stream, const float* grad, std::int64_t batch,
                       std::int64_t channels, std::int64_t spatial, float* bias_grad,
                       GradientMode mode);

}  // namespace mb
