// Dropout: inverted dropout (kept elements scaled by 1 / (1 - p)) while training, the
// identity in evaluation.
//
// The mask of element e of the micro-batch's sample i is
//   philox_element_uniform(state.seed, stream_id, state.step, state.sample_offset + i, e) >= p
// so it depends on the global sample index, never on how the batch was split, and is the
// same on CPU and CUDA. Backward recomputes the mask from the keys remembered by forward
// (nothing is stored per element). Give each Dropout in a model its own stream_id.
#pragma once

#include <cstdint>

#include "layers/module.h"

namespace mb {

class Dropout : public Module {
 public:
  // Throws mb::InvalidArgument unless 0 <= p <= 1.
  explicit Dropout(float p, std::uint32_t stream_id = 0);

  float p() const { return p_; }
  std::uint32_t stream_id() const { return stream_id_; }

  Shape output_shape(const Shape& input) const override { return input; }
  std::int64_t forward_flops(const Shape& input) const override { return input.numel(); }
  // The mask is recomputed in backward: nothing per element is kept.
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  void clear_cache() override { has_forward_ = false; }

 protected:
  // In evaluation (or with p == 0) returns the input itself.
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  float p_;
  std::uint32_t stream_id_;
  // Remembered by forward for backward.
  bool has_forward_ = false;
  bool applied_ = false;  // training with p > 0
  RunState state_;
  Shape input_shape_;
};

}  // namespace mb
