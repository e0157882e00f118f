// Linear: y = x W^T + b for a 2-D input [N, in_features] -> [N, out_features].
//
// Parameters "weight" [out_features, in_features] (decayed) and, when bias is true, "bias"
// [out_features] (not decayed), initialized like PyTorch (U(-1/sqrt(in), 1/sqrt(in))).
// CPU: cpu::gemm (OpenBLAS); CUDA: cuBLAS on the context's handle and compute stream
// (TF32 per Context::allow_tf32()), bias through cuDNN.
#pragma once

#include <cstdint>
#include <string>

#include "layers/module.h"

namespace mb {

class Linear : public Module {
 public:
  static constexpr std::uint64_t kDefaultSeed = 0x11EA2;

  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true);

  // Re-draws weight and bias from a generator seeded with `seed`.
  void reset_parameters(std::uint64_t seed);

  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }
  bool has_bias() const { return bias_ != nullptr; }
  Parameter& weight() { return *weight_; }
  Parameter* bias() { return bias_; }

  Shape output_shape(const Shape& input) const override;
  std::int64_t forward_flops(const Shape& input) const override;
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  void clear_cache() override;
  WeightInit weight_init() const override { return WeightInit::Linear; }
  std::string describe() const;

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  std::int64_t in_features_;
  std::int64_t out_features_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Tensor cached_input_;
};

}  // namespace mb
