// Per-channel bias: dispatch to the CPU or CUDA twin.
#include "kernels/channel_bias.h"

#include "kernels/cpu/channel_bias.h"
#include "kernels/cuda/channel_bias.h"
#include "kernels/dispatch.h"

namespace mb {

void add_channel_bias(const Stream& stream, float* data, const float* bias, std::int64_t batch,
                      std::int64_t channels, std::int64_t spatial) {
  MB_DISPATCH(stream, add_channel_bias, data, bias, batch, channels, spatial);
}

void channel_bias_grad(const Stream& stream, const float* grad, std::int64_t batch,
                       std::int64_t channels, std::int64_t spatial, float* bias_grad,
                       GradientMode mode) {
  MB_DISPATCH(stream, channel_bias_grad, grad, batch, channels, spatial, bias_grad, mode);
}

}  // namespace mb
