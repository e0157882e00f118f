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

// Masked variants, for a module that does not keep the output: forward also writes a bit
// mask, bit i % 32 of word i / 32 set where the activation passes the gradient (x > 0;
// 0 < x < 6 for ReLU6), and backward reads the mask instead of the output: 1 bit per
// element kept instead of 32. mask: activation_mask_words(count) words, every bit written
// (the last word's unused bits are 0).
inline std::int64_t activation_mask_words(std::int64_t count) {
  return (count + 31) / 32;
}
void relu_forward_masked(const Stream& stream, const float* input, float* output,
                         std::uint32_t* mask, std::int64_t count);
void relu6_forward_masked(const Stream& stream, const float* input, float* output,
                          std::uint32_t* mask, std::int64_t count);
// grad_input[i] = bit i of mask ? grad_output[i] : 0 (for either activation).
void activation_backward_masked(const Stream& stream, const std::uint32_t* mask,
                                const float* grad_output, float* grad_input, std::int64_t count);

}  // namespace mb
