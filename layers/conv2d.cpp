// Conv2d over the convolution and bias ops of kernels/ (im2col + GEMM on the CPU, cuDNN on
// CUDA).
#include "layers/conv2d.h"

#include <cmath>

#include "kernels/channel_bias.h"
#include "kernels/conv.h"
#include "layers/init.h"
#include "runtime/error.h"

namespace mb {
namespace {

ConvGeometry geometry_of(const Shape& input, std::int64_t out_channels, int kernel, int stride,
                         int padding, int dilation, int groups) {
  ConvGeometry g;
  g.batch = input[0];
  g.in_channels = input[1];
  g.in_h = input[2];
  g.in_w = input[3];
  g.out_channels = out_channels;
  g.kernel_h = g.kernel_w = kernel;
  g.stride = stride;
  g.padding = padding;
  g.dilation = dilation;
  g.groups = groups;
  return g;
}

// "Conv2d(3, 64, kernel_size=7, stride=2, padding=3, dilation=1, groups=1, bias=false)"
std::string conv2d_name(std::int64_t in_channels, std::int64_t out_channels, int kernel_size,
                        int stride, int padding, int dilation, int groups, bool bias) {
  return detail::concat("Conv2d(", in_channels, ", ", out_channels, ", kernel_size=", kernel_size,
                        ", stride=", stride, ", padding=", padding, ", dilation=", dilation,
                        ", groups=", groups, ", bias=", bias ? "true" : "false", ")");
}

}  // namespace

Conv2d::Conv2d(std::int64_t in_channels, std::int64_t out_channels, int kernel_size, int stride,
               int padding, int dilation, int groups, bool bias)
    : Module("Conv2d"),
      in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_size_(kernel_size),
      stride_(stride),
      padding_(padding),
      dilation_(dilation),
      groups_(groups) {
  const std::string name =
      conv2d_name(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias);
  if (in_channels <= 0 || out_channels <= 0 || kernel_size <= 0 || stride <= 0 || padding < 0 ||
      dilation <= 0 || groups <= 0) {
    MB_THROW(InvalidArgument, name,
             ": channels, kernel_size, stride, dilation and groups must be positive and "
             "padding non-negative");
  }
  if (in_channels % groups != 0 || out_channels % groups != 0) {
    MB_THROW(InvalidArgument, name, ": groups=", groups, " must divide in_channels=", in_channels,
             " and out_channels=", out_channels);
  }
  TensorOptions param_options;
  param_options.tag = MemoryTag::Param;
  weight_ = &register_parameter(
      "weight",
      Tensor::empty({out_channels, in_channels / groups, kernel_size, kernel_size}, param_options),
      true);
  if (bias) {
    bias_ = &register_parameter("bias", Tensor::empty({out_channels}, param_options), false);
  }
  reset_parameters(kDefaultSeed);
}

void Conv2d::reset_parameters(std::uint64_t seed) {
  const std::int64_t fan_in = (in_channels_ / groups_) * kernel_size_ * kernel_size_;
  // Kaiming-uniform with a = sqrt(5) gives bound = sqrt(6 / ((1 + 5) fan_in)) = 1/sqrt(fan_in);
  // PyTorch uses the same bound for the bias.
  const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  fill_uniform(weight_->value, bound, seed, 0);
  if (bias_ != nullptr) fill_uniform(bias_->value, bound, seed, 1);
}

std::string Conv2d::describe() const {
  return conv2d_name(in_channels_, out_channels_, kernel_size_, stride_, padding_, dilation_,
                     groups_, bias_ != nullptr);
}

Shape Conv2d::output_shape(const Shape& input) const {
  if (input.ndim() != 4) {
    MB_THROW(InvalidArgument, describe(), ": expected a 4-D input [N, C, H, W], got ",
             input.to_string());
  }
  if (input[1] != in_channels_) {
    MB_THROW(InvalidArgument, describe(), ": input ", input.to_string(), " has ", input[1],
             " channels, expected ", in_channels_);
  }
  const std::int64_t out_h = conv_output_size(input[2], kernel_size_, stride_, padding_, dilation_);
  const std::int64_t out_w = conv_output_size(input[3], kernel_size_, stride_, padding_, dilation_);
  if (out_h <= 0 || out_w <= 0) {
    MB_THROW(InvalidArgument, describe(), ": the kernel (extent ",
             static_cast<std::int64_t>(dilation_) * (kernel_size_ - 1) + 1,
             " with dilation) is larger than the padded input ", input.to_string(), " (padding ",
             padding_, " each side)");
  }
  return Shape{input[0], out_channels_, out_h, out_w};
}

std::int64_t Conv2d::forward_flops(const Shape& input) const {
  const Shape out = output_shape(input);
  const std::int64_t macs_per_output = (in_channels_ / groups_) * kernel_size_ * kernel_size_;
  return 2 * out.numel() * macs_per_output;
}

MemoryTrace::Id Conv2d::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  const Shape out = output_shape(trace.shape(input));
  // The input, for the filter gradient; or, recomputed, only for the filter gradient's
  // moment in backward.
  if (recompute_source_ != nullptr) {
    return trace.layer(input, out, Keep::Nothing, std::size_t{0},
                       recompute_source_->recompute_bytes(trace.shape(input)));
  }
  return trace.layer(input, out, Keep::Input);
}

void Conv2d::clear_cache() {
  cached_input_ = Tensor();
  recompute_pending_ = false;
}

Tensor Conv2d::forward_impl(const Tensor& input, const RunState& state) {
  const Shape out_shape = output_shape(input.shape());
  Tensor output = Tensor::empty(out_shape, tensor_options(device_, MemoryTag::Activation));
  const ConvGeometry g = geometry_of(input.shape(), out_channels_, kernel_size_, stride_, padding_,
                                     dilation_, groups_);
  conv2d_forward(stream(), g, input.data<float>(), weight_->value.data<float>(),
                 output.data<float>(), GradientMode::Overwrite);
  if (bias_ != nullptr) {
    add_channel_bias(stream(), output.data<float>(), bias_->value.data<float>(), out_shape[0],
                     out_channels_, out_shape[2] * out_shape[3]);
  }
  recompute_pending_ =
      state.training && recompute_source_ != nullptr && recompute_source_->can_recompute(input);
  if (recompute_pending_) {
    cached_input_ = Tensor();
    recompute_shape_ = input.shape();
  } else {
    cached_input_ = input;
  }
  return output;
}

Tensor Conv2d::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  Tensor input;
  if (recompute_pending_) {
    MB_CHECK(grad_output.shape() == output_shape(recompute_shape_), describe(),
             ".backward: gradient ", grad_output.shape().to_string(),
             " does not match the forward output ", output_shape(recompute_shape_).to_string());
    input = recompute_source_->recompute_output();
    recompute_pending_ = false;
  } else {
    input = take_cached_input(cached_input_, grad_output, describe());
  }
  const Shape input_shape = input.shape();
  const Shape out_shape = output_shape(input_shape);
  const ConvGeometry g =
      geometry_of(input_shape, out_channels_, kernel_size_, stride_, padding_, dilation_, groups_);
  ensure_grad(*weight_);
  conv2d_backward_filter(stream(), g, input.data<float>(), grad_output.data<float>(),
                         weight_->grad.data<float>(), state.mode);
  if (bias_ != nullptr) {
    ensure_grad(*bias_);
    channel_bias_grad(stream(), grad_output.data<float>(), out_shape[0], out_channels_,
                      out_shape[2] * out_shape[3], bias_->grad.data<float>(), state.mode);
  }
  input = Tensor();  // a recomputed input is freed before the input gradient exists
  if (!state.need_input_grad) return Tensor();
  Tensor grad_input = Tensor::empty(input_shape, tensor_options(device_, MemoryTag::Activation));
  conv2d_backward_data(stream(), g, weight_->value.data<float>(), grad_output.data<float>(),
                       grad_input.data<float>(), GradientMode::Overwrite);
  return grad_input;
}

}  // namespace mb
