// Functional elementwise and channel-routing ops used by composite modules (ResNet's
// residual add, U-Net's skip concat), over the ops of kernels/elementwise.h.
//
// All tensors are float32 and on one device; new tensors are MemoryTag::Activation on that
// device. Mismatched shapes or devices throw mb::InvalidArgument naming the op and both
// shapes.
#pragma once

#include <cstdint>
#include <utility>

#include "runtime/tensor.h"

namespace mb {

// a + b (same shape).
Tensor add(const Tensor& a, const Tensor& b);
// dst += src (same shape).
void add_into(Tensor& dst, const Tensor& src);
// [N, Ca, ...] and [N, Cb, ...] (same other axes) -> [N, Ca + Cb, ...].
Tensor concat_channels(const Tensor& a, const Tensor& b);
// The backward of concat_channels: [N, Ca + Cb, ...] -> ([N, Ca, ...], [N, Cb, ...]).
std::pair<Tensor, Tensor> split_channels(const Tensor& grad, std::int64_t channels_a);
// The ReLU input gradient from its output: grad where output > 0, else 0.
Tensor relu_backward_from_output(const Tensor& output, const Tensor& grad);

}  // namespace mb
