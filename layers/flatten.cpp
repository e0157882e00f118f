// Flatten: a view in both directions.
#include "layers/flatten.h"

#include "runtime/error.h"

namespace mb {

Shape Flatten::output_shape(const Shape& input) const {
  MB_CHECK(input.ndim() >= 1, "Flatten: input shape ", input.to_string(),
           " has no batch axis. Fix: pass [N, ...]");
  const std::int64_t batch = input[0];
  std::int64_t rest = 1;
  for (int axis = 1; axis < input.ndim(); ++axis) rest *= input[axis];
  return Shape{batch, rest};
}

Tensor Flatten::forward_impl(const Tensor& input, const RunState& /*state*/) {
  const Shape out = output_shape(input.shape());
  input_shape_ = input.shape();
  return input.view(out.dims());
}

Tensor Flatten::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  MB_CHECK(input_shape_.ndim() >= 1,
           "Flatten.backward: no forward pass to differentiate. Fix: call forward() first");
  MB_CHECK(grad_output.numel() == input_shape_.numel(), "Flatten.backward: gradient shape ",
           grad_output.shape().to_string(), " does not match the forward input shape ",
           input_shape_.to_string());
  if (!state.need_input_grad) return Tensor();
  return grad_output.view(input_shape_.dims());
}

}  // namespace mb
