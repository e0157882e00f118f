// ReLU and ReLU6, forward and backward (twins: kernels/cpu/activation.h, the reference, and
// kernels/cuda/activation.h).
//
// Backward reads the forward *output*: y > 0 exactly where x > 0 (and 0 < y < 6 exactly
// where 0 < x < 6), so a module keeps only its output, which the next layer often keeps
// anyway. At the kinks the gradient is 0, as in PyTorch.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb {

void relu_forward(const Stream& stream, const float* input, float* output, std::int64_t count);
void relu_backward(const Stream& stream, const float* output, const float* grad_output,
                   float* grad_input, std::int64_t count);
void relu6_forward(const Stream& stream, const float* input, float* output, std::int64_t count);
void relu6_backward(const Stream& stream, const float* output, const float* grad_output,
                    float* grad_input, std::int64_t count);

}  // namespace mb
