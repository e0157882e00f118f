// 2-D pooling: dispatch to the CPU or CUDA twin.
#include "kernels/pooling.h"

#include "kernels/cpu/pooling.h"
#include "kernels/cuda/pooling.h"
#include "kernels/dispatch.h"

namespace mb {

void max_pool2d_forward(const Stream& stream, const float* x, const Pool2dGeometry& geometry,
                        float* y, std::uint8_t* argmax) {
  MB_DISPATCH(stream, max_pool2d_forward, x, geometry, y, argmax);
}

void max_pool2d_backward(const Stream& stream, const float* grad_y, const std::uint8_t* argmax,
                         const Pool2dGeometry& geometry, float* grad_x) {
  MB_DISPATCH(stream, max_pool2d_backward, grad_y, argmax, geometry, grad_x);
}

void avg_pool2d_forward(const Stream& stream, const float* x, const Pool2dGeometry& geometry,
                        float* y) {
  MB_DISPATCH(stream, avg_pool2d_forward, x, geometry, y);
}

void avg_pool2d_backward(const Stream& stream, const float* grad_y, const Pool2dGeometry& geometry,
                         float* grad_x) {
  MB_DISPATCH(stream, avg_pool2d_backward, grad_y, geometry, grad_x);
}

void global_avg_pool2d_forward(const Stream& stream, const float* x, std::int64_t planes,
                               std::int64_t plane_size, float* y) {
  MB_DISPATCH(stream, global_avg_pool2d_forward, x, planes, plane_size, y);
}

void global_avg_pool2d_backward(const Stream& stream, const float* grad_y, std::int64_t planes,
                                std::int64_t plane_size, float* grad_x) {
  MB_DISPATCH(stream, global_avg_pool2d_backward, grad_y, planes, plane_size, grad_x);
}

}  // namespace mb
