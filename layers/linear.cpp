// Linear over kernels/gemm.h (OpenBLAS on the CPU, cuBLAS on CUDA) and the bias ops.
#include "layers/linear.h"

#include <cmath>

#include "kernels/channel_bias.h"
#include "kernels/gemm.h"
#include "layers/init.h"
#include "runtime/error.h"

namespace mb {
namespace {

std::string linear_name(std::int64_t in_features, std::int64_t out_features, bool bias) {
  return detail::concat("Linear(in_features=", in_features, ", out_features=", out_features,
                        ", bias=", bias ? "true" : "false", ")");
}

}  // namespace

Linear::Linear(std::int64_t in_features, std::int64_t out_features, bool bias)
    : Module("Linear"), in_features_(in_features), out_features_(out_features) {
  if (in_features <= 0 || out_features <= 0) {
    MB_THROW(InvalidArgument, linear_name(in_features, out_features, bias),
             ": in_features and out_features must be positive");
  }
  TensorOptions param_options;
  param_options.tag = MemoryTag::Param;
  weight_ = &register_parameter("weight", Tensor::empty({out_features, in_features}, param_options),
                                true);
  if (bias) {
    bias_ = &register_parameter("bias", Tensor::empty({out_features}, param_options), false);
  }
  reset_parameters(kDefaultSeed);
}

void Linear::reset_parameters(std::uint64_t seed) {
  // Kaiming-uniform with a = sqrt(5): bound = 1/sqrt(fan_in), the same for the bias.
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_features_));
  fill_uniform(weight_->value, bound, seed, 0);
  if (bias_ != nullptr) fill_uniform(bias_->value, bound, seed, 1);
}

std::string Linear::describe() const {
  return linear_name(in_features_, out_features_, bias_ != nullptr);
}

Shape Linear::output_shape(const Shape& input) const {
  if (input.ndim() != 2) {
    MB_THROW(InvalidArgument, describe(), ": expected a 2-D input [N, ", in_features_, "], got ",
             input.to_string(), ". Fix: flatten the input first");
  }
  if (input[1] != in_features_) {
    MB_THROW(InvalidArgument, describe(), ": input ", input.to_string(), " has ", input[1],
             " features, expected ", in_features_);
  }
  return Shape{input[0], out_features_};
}

std::int64_t Linear::forward_flops(const Shape& input) const {
  output_shape(input);
  return 2 * input[0] * in_features_ * out_features_;
}

MemoryTrace::Id Linear::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  // The input, for the weight gradient.
  return trace.layer(input, output_shape(trace.shape(input)), Keep::Input);
}

void Linear::clear_cache() {
  cached_input_ = Tensor();
}

Tensor Linear::forward_impl(const Tensor& input, const RunState& /*state*/) {
  const Shape out_shape = output_shape(input.shape());
  Tensor output = Tensor::empty(out_shape, tensor_options(device_, MemoryTag::Activation));
  const std::int64_t batch = input.dim(0);
  // y [N, out] = x [N, in] W^T [in, out]
  gemm(stream(), false, true, batch, out_features_, in_features_, input.data<float>(), in_features_,
       weight_->value.data<float>(), in_features_, output.data<float>(), out_features_,
       GradientMode::Overwrite);
  if (bias_ != nullptr) {
    add_channel_bias(stream(), output.data<float>(), bias_->value.data<float>(), batch,
                     out_features_, 1);
  }
  cached_input_ = input;
  return output;
}

Tensor Linear::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  const Tensor input = take_cached_input(cached_input_, grad_output, describe());
  const std::int64_t batch = input.dim(0);
  const float* dy = grad_output.data<float>();
  ensure_grad(*weight_);
  // dW [out, in] (+)= dy^T [out, N] x [N, in]
  gemm(stream(), true, false, out_features_, in_features_, batch, dy, out_features_,
       input.data<float>(), in_features_, weight_->grad.data<float>(), in_features_, state.mode);
  if (bias_ != nullptr) {
    ensure_grad(*bias_);
    channel_bias_grad(stream(), dy, batch, out_features_, 1, bias_->grad.data<float>(), state.mode);
  }
  if (!state.need_input_grad) return Tensor();
  // dx [N, in] = dy [N, out] W [out, in]
  Tensor grad_input = Tensor::empty(input.shape(), tensor_options(device_, MemoryTag::Activation));
  gemm(stream(), false, false, batch, in_features_, out_features_, dy, out_features_,
       weight_->value.data<float>(), in_features_, grad_input.data<float>(), in_features_,
       GradientMode::Overwrite);
  return grad_input;
}

}  // namespace mb
