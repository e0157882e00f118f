// Pooling layers over NCHW input: MaxPool2d, AvgPool2d and GlobalAvgPool2d, as PyTorch's
// MaxPool2d, AvgPool2d (count_include_pad = true, floor mode) and AdaptiveAvgPool2d(1).
//
// Output extent per axis: (in + 2 * padding - kernel_size) / stride + 1. Padding may be at
// most kernel_size / 2 (PyTorch's rule: every window then holds a real input element).
// MaxPool2d keeps the argmax of each window (one byte) for backward; the pooling layers have no
// parameters.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/pooling.h"
#include "layers/module.h"

namespace mb {

// Shared validation and geometry of the windowed pools.
class WindowPool2d : public Module {
 public:
  Shape output_shape(const Shape& input) const override;
  std::int64_t forward_flops(const Shape& input) const override;
  // Nothing but the input shape is kept (MaxPool2d overrides: it keeps the argmax).
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;

  int kernel_size() const { return kernel_size_; }
  int stride() const { return stride_; }
  int padding() const { return padding_; }

 protected:
  // stride -1 means stride = kernel_size.
  WindowPool2d(const char* type_name, int kernel_size, int stride, int padding);
  // Validates `input` and returns the window geometry; throws mb::InvalidArgument naming
  // the layer and the shapes.
  Pool2dGeometry geometry(const Shape& input) const;
  std::string describe() const;  // "MaxPool2d(kernel_size=3, stride=2, padding=1)"

  int kernel_size_;
  int stride_;
  int padding_;
};

class MaxPool2d : public WindowPool2d {
 public:
  explicit MaxPool2d(int kernel_size, int stride = -1 /* -1: = kernel_size */, int padding = 0);
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  void clear_cache() override;

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  Tensor argmax_;  // uint8 positions within the windows, output shape
  Shape cached_input_shape_;
};

class AvgPool2d : public WindowPool2d {
 public:
  explicit AvgPool2d(int kernel_size, int stride = -1 /* -1: = kernel_size */, int padding = 0);
  void clear_cache() override;

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  Shape cached_input_shape_;
  bool cached_ = false;
};

// [N, C, H, W] -> [N, C, 1, 1], the mean of each plane.
class GlobalAvgPool2d : public Module {
 public:
  GlobalAvgPool2d() : Module("GlobalAvgPool2d") {}
  Shape output_shape(const Shape& input) const override;
  std::int64_t forward_flops(const Shape& input) const override;
  // Nothing but the input shape is kept.
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  void clear_cache() override;

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  Shape cached_input_shape_;
  bool cached_ = false;
};

}  // namespace mb
