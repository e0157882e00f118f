// Dropout over kernels/dropout.h.
#include "layers/dropout.h"

#include "kernels/dropout.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace mb {
namespace {

// Applies the mask and scale of (p, stream_id, state) to `input` (one sample per row).
Tensor apply_mask(const Tensor& input, float p, std::uint32_t stream_id, const RunState& state) {
  Tensor output =
      Tensor::empty(input.shape(), tensor_options(input.device(), MemoryTag::Activation));
  const std::int64_t samples = input.ndim() > 0 ? input.dim(0) : 1;
  const std::int64_t per_sample = samples > 0 ? input.numel() / samples : 0;
  DropoutKey key;
  key.p = p;
  key.seed = state.seed;
  key.stream_id = stream_id;
  key.step = state.step;
  key.sample_offset = state.sample_offset;
  dropout_apply(Stream::compute(input.device()), input.data<float>(), output.data<float>(), samples,
                per_sample, key);
  return output;
}

}  // namespace

Dropout::Dropout(float p, std::uint32_t stream_id)
    : Module("Dropout"), p_(p), stream_id_(stream_id) {
  MB_CHECK(p >= 0.0f && p <= 1.0f, "Dropout: p = ", p,
           " is not a probability. Fix: pass a drop probability in [0, 1]");
}

MemoryTrace::Id Dropout::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  // Note: with p == 0 forward returns its input (a view in the trace); the copy of the
  // gradient its backward makes is a transient the trace does not count.
  if (p_ == 0.0f) return trace.view(input, trace.shape(input));
  return trace.layer(input, trace.shape(input), Keep::Nothing);
}

Tensor Dropout::forward_impl(const Tensor& input, const RunState& state) {
  MB_CHECK(input.dtype() == DType::Float32, "Dropout.forward: expected float32, got ",
           dtype_name(input.dtype()));
  MB_CHECK(state.sample_offset >= 0, "Dropout.forward: negative sample_offset ",
           state.sample_offset);
  has_forward_ = true;
  applied_ = state.training && p_ > 0.0f;
  state_ = state;
  input_shape_ = input.shape();
  if (!applied_) return input;
  return apply_mask(input, p_, stream_id_, state);
}

Tensor Dropout::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  MB_CHECK(has_forward_,
           "Dropout.backward: no forward pass to differentiate. Fix: call "
           "forward() before backward()");
  MB_CHECK(grad_output.shape() == input_shape_, "Dropout.backward: gradient shape ",
           grad_output.shape().to_string(), " does not match the forward input shape ",
           input_shape_.to_string());
  has_forward_ = false;
  if (!state.need_input_grad) return Tensor();
  // Note: the identity case returns a copy so callers may accumulate into the result
  // without touching the gradient they passed in.
  if (!applied_) return grad_output.clone();
  return apply_mask(grad_output, p_, stream_id_, state_);
}

}  // namespace mb
