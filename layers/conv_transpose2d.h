// ConvTranspose2d: the transposed ("fractionally strided") 2-D convolution, i.e. the
// adjoint of Conv2d, as in PyTorch (no groups, no dilation).
//
// Input [N, in_channels, H, W] -> output [N, out_channels, OH, OW] with
// OH = (H - 1) s - 2p + (k - 1) + output_padding + 1 (output_padding < stride). Parameters
// "weight" [in_channels, out_channels, k, k] (PyTorch layout, decayed) and, when bias is
// true, "bias" [out_channels]; PyTorch's default init (bound 1/sqrt(out_channels k k)).
//
// Forward is the input gradient of the Conv2d from [N, out, OH, OW] to [N, in, H, W] with
// this weight; backward uses that Conv2d's forward (input grad) and filter gradient.
// Both backends through kernels/conv.h.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/conv.h"
#include "layers/module.h"

namespace mb {

class ConvTranspose2d : public Module {
 public:
  static constexpr std::uint64_t kDefaultSeed = 0xC0271D7;

  ConvTranspose2d(std::int64_t in_channels, std::int64_t out_channels, int kernel_size,
                  int stride = 1, int padding = 0, int output_padding = 0, bool bias = true);

  // Re-draws weight and bias from a generator seeded with `seed`.
  void reset_parameters(std::uint64_t seed);

  std::int64_t in_channels() const { return in_channels_; }
  std::int64_t out_channels() const { return out_channels_; }
  int kernel_size() const { return kernel_size_; }
  int stride() const { return stride_; }
  int padding() const { return padding_; }
  int output_padding() const { return output_padding_; }
  bool has_bias() const { return bias_ != nullptr; }
  Parameter& weight() { return *weight_; }
  Parameter* bias() { return bias_; }

  Shape output_shape(const Shape& input) const override;
  std::int64_t forward_flops(const Shape& input) const override;
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  void clear_cache() override;
  WeightInit weight_init() const override { return WeightInit::Convolution; }
  std::string describe() const;

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  // The Conv2d (for `input` of this layer) that this layer is the adjoint of.
  ConvGeometry adjoint_geometry(const Shape& input) const;

  std::int64_t in_channels_;
  std::int64_t out_channels_;
  int kernel_size_;
  int stride_;
  int padding_;
  int output_padding_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Tensor cached_input_;
};

}  // namespace mb
