// Conv2d: 2-D convolution (cross-correlation, as in PyTorch) with stride, zero padding,
// dilation, groups and an optional bias.
//
// Input [N, in_channels, H, W] -> output [N, out_channels, OH, OW] with
// OH = floor((H + 2p - d(k-1) - 1) / s) + 1. Parameters "weight"
// [out_channels, in_channels / groups, k, k] (decayed) and, when bias is true, "bias"
// [out_channels] (not decayed); both initialized like PyTorch's default
// (Kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
//
// The ops are kernels/conv.h (CPU: im2col + GEMM per sample and group; CUDA: cuDNN with a
// per-shape algorithm cache). forward() caches the input (a handle, no
// copy) for backward(), which releases it. After recompute_input_from(source), a training
// forward whose input is the source's output (RecomputeSource::can_recompute: a BatchNorm2d,
// a fused residual block) keeps nothing: backward asks the source to recompute it for the
// filter gradient and frees it before the input gradient is allocated (fusion,
// docs/architecture.md "Memory").
#pragma once

#include <cstdint>

#include "layers/module.h"

namespace mb {

class Conv2d : public Module {
 public:
  static constexpr std::uint64_t kDefaultSeed = 0xC0271D;

  Conv2d(std::int64_t in_channels, std::int64_t out_channels, int kernel_size, int stride = 1,
         int padding = 0, int dilation = 1, int groups = 1, bool bias = true);

  // Re-draws weight and bias from a generator seeded with `seed` (same seed, same values).
  void reset_parameters(std::uint64_t seed);

  std::int64_t in_channels() const { return in_channels_; }
  std::int64_t out_channels() const { return out_channels_; }
  int kernel_size() const { return kernel_size_; }
  int stride() const { return stride_; }
  int padding() const { return padding_; }
  int dilation() const { return dilation_; }
  int groups() const { return groups_; }
  bool has_bias() const { return bias_ != nullptr; }
  Parameter& weight() { return *weight_; }
  Parameter* bias() { return bias_; }

  Shape output_shape(const Shape& input) const override;
  std::int64_t forward_flops(const Shape& input) const override;
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  void clear_cache() override;
  WeightInit weight_init() const override { return WeightInit::Convolution; }
  // `source` (borrowed: a module of the same model, which outlives this link) produces
  // this layer's input; null unlinks.
  bool recompute_input_from(RecomputeSource* source) override {
    recompute_source_ = source;
    return true;
  }
  bool recomputes_input() const { return recompute_source_ != nullptr; }
  // "Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=false)"
  std::string describe() const;

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  std::int64_t in_channels_;
  std::int64_t out_channels_;
  int kernel_size_;
  int stride_;
  int padding_;
  int dilation_;
  int groups_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Tensor cached_input_;
  RecomputeSource* recompute_source_ = nullptr;
  Shape recompute_shape_;  // the input's shape when it is to be recomputed
  bool recompute_pending_ = false;
};

}  // namespace mb
