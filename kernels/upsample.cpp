// Nearest-neighbour upsampling: dispatch to the CPU or CUDA twin.
#include "kernels/upsample.h"

#include "kernels/cpu/upsample.h"
#include "kernels/cuda/upsample.h"
#include "kernels/dispatch.h"

namespace mb {

void upsample_nearest2d_forward(const Stream& stream, const float* input, float* output,
                                std::int64_t planes, std::int64_t height, std::int64_t width,
                                int scale) {
  MB_DISPATCH(stream, upsample_nearest2d_forward, input, output, planes, height, width, scale);
}

void upsample_nearest2d_backward(const Stream& stream, const float* grad_output, float* grad_input,
                                 std::int64_t planes, std::int64_t height, std::int64_t width,
                                 int scale) {
  MB_DISPATCH(stream, upsample_nearest2d_backward, grad_output, grad_input, planes, height, width,
              scale);
}

}  // namespace mb
