// ReLU and ReLU6 modules. Each keeps one bit per element for backward (where the input was
// in the linear range), neither its input nor its output: 1/32 of a tensor, where the
// output is kept by the next layer anyway (a Conv2d's input), and all that is kept where it
// is not (before a MaxPool2d, which keeps only its argmax).
//
// Fusion (layers/fusion.h): when the BatchNorm2d before it applies the activation itself,
// the module is absorbed: forward and backward pass their tensor through unchanged and it
// keeps nothing (the BatchNorm keeps what backward needs).
#pragma once

#include "layers/module.h"

namespace mb {

// The shared module; ReLU and ReLU6 differ only in the function.
class PointwiseActivation : public Module {
 public:
  Shape output_shape(const Shape& input) const override { return input; }
  std::int64_t forward_flops(const Shape& input) const override;
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  void clear_cache() override { mask_ = Tensor(); }

  bool is_relu6() const { return relu6_; }
  // Absorbed into the preceding layer (which applies the activation): pass-through.
  void set_absorbed(bool absorbed) { absorbed_ = absorbed; }
  bool absorbed() const { return absorbed_; }

 protected:
  PointwiseActivation(const char* type_name, bool relu6) : Module(type_name), relu6_(relu6) {}
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  bool relu6_;
  bool absorbed_ = false;
  Tensor mask_;  // int32 words of bits (kernels/activation.h), until backward
  Shape output_shape_;
};

class ReLU : public PointwiseActivation {
 public:
  ReLU() : PointwiseActivation("ReLU", false) {}
};

// min(max(x, 0), 6), as in MobileNetV2.
class ReLU6 : public PointwiseActivation {
 public:
  ReLU6() : PointwiseActivation("ReLU6", true) {}
};

}  // namespace mb
