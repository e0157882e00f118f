// Per-channel bias on CUDA through cuDNN (cudnnAddTensor, cudnnConvolutionBackwardBias).
// CPU twin: kernels/cpu/channel_bias.h; contract: kernels/channel_bias.h.
#pragma once

#include <cstdint>

#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cuda {

void add_channel_bias(const Stream& stream, float* data, const float* bias, std::int64_t batch,
                      std::int64_t channels, std::int64_t spatial);
void channel_bias_grad(const Stream& stream, const float* grad, std::int64_t batch,
                       std::int64_t channels, std::int64_t spatial, float* bias_grad,
                       GradientMode mode);

}  // namespace mb::cuda
