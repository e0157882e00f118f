// ConvTranspose2d as the adjoint of a Conv2d, over the convolution and bias ops of kernels/:
// its forward is that convolution's backward-data, its input gradient the convolution's
// forward, its weight gradient the convolution's filter gradient with the roles of image and
// output gradient swapped. The same on both backends.
#include "layers/conv_transpose2d.h"

#include <cmath>

#include "kernels/channel_bias.h"
#include "kernels/conv.h"
#include "layers/init.h"
#include "runtime/error.h"

namespace mb {
namespace {

std::string conv_transpose2d_name(std::int64_t in_channels, std::int64_t out_channels,
                                  int kernel_size, int stride, int padding, int output_padding,
                                  bool bias) {
  return detail::concat("ConvTranspose2d(", in_channels, ", ", out_channels,
                        ", kernel_size=", kernel_size, ", stride=", stride, ", padding=", padding,
                        ", output_padding=", output_padding, ", bias=", bias ? "true" : "false",
                        ")");
}

}  // namespace

ConvTranspose2d::ConvTranspose2d(std::int64_t in_channels, std::int64_t out_channels,
                                 int kernel_size, int stride, int padding, int output_padding,
                                 bool bias)
    : Module("ConvTranspose2d"),
      in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_size_(kernel_size),
      stride_(stride),
      padding_(padding),
      output_padding_(output_padding) {
  const std::string name = conv_transpose2d_name(in_channels, out_channels, kernel_size, stride,
                                                 padding, output_padding, bias);
  if (in_channels <= 0 || out_channels <= 0 || kernel_size <= 0 || stride <= 0 || padding < 0 ||
      output_padding < 0) {
    MB_THROW(InvalidArgument, name,
             ": channels, kernel_size and stride must be positive, padding and output_padding "
             "non-negative");
  }
  if (output_padding >= stride) {
    MB_THROW(InvalidArgument, name, ": output_padding=", output_padding,
             " must be smaller than stride=", stride);
  }
  TensorOptions param_options;
  param_options.tag = MemoryTag::Param;
  weight_ = &register_parameter(
      "weight", Tensor::empty({in_channels, out_channels, kernel_size, kernel_size}, param_options),
      true);
  if (bias) {
    bias_ = &register_parameter("bias", Tensor::empty({out_channels}, param_options), false);
  }
  reset_parameters(kDefaultSeed);
}

void ConvTranspose2d::reset_parameters(std::uint64_t seed) {
  // PyTorch computes fan_in from weight dimension 1 (out_channels) times the kernel area.
  const std::int64_t fan_in = out_channels_ * kernel_size_ * kernel_size_;
  const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  fill_uniform(weight_->value, bound, seed, 0);
  if (bias_ != nullptr) fill_uniform(bias_->value, bound, seed, 1);
}

std::string ConvTranspose2d::describe() const {
  return conv_transpose2d_name(in_channels_, out_channels_, kernel_size_, stride_, padding_,
                               output_padding_, bias_ != nullptr);
}

Shape ConvTranspose2d::output_shape(const Shape& input) const {
  if (input.ndim() != 4) {
    MB_THROW(InvalidArgument, describe(), ": expected a 4-D input [N, C, H, W], got ",
             input.to_string());
  }
  if (input[1] != in_channels_) {
    MB_THROW(InvalidArgument, describe(), ": input ", input.to_string(), " has ", input[1],
             " channels, expected ", in_channels_);
  }
  const auto extent = [&](std::int64_t in) {
    return (in - 1) * stride_ - 2 * static_cast<std::int64_t>(padding_) + (kernel_size_ - 1) +
           output_padding_ + 1;
  };
  const std::int64_t out_h = extent(input[2]), out_w = extent(input[3]);
  if (input[2] <= 0 || input[3] <= 0 || out_h <= 0 || out_w <= 0) {
    MB_THROW(InvalidArgument, describe(), ": input ", input.to_string(), " gives an empty output (",
             out_h, " x ", out_w, "). Fix: reduce padding=", padding_);
  }
  return Shape{input[0], out_channels_, out_h, out_w};
}

std::int64_t ConvTranspose2d::forward_flops(const Shape& input) const {
  output_shape(input);
  return 2 * input.numel() * out_channels_ * kernel_size_ * kernel_size_;
}

MemoryTrace::Id ConvTranspose2d::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  // The input, for the filter gradient.
  return trace.layer(input, output_shape(trace.shape(input)), Keep::Input);
}

void ConvTranspose2d::clear_cache() {
  cached_input_ = Tensor();
}

ConvGeometry ConvTranspose2d::adjoint_geometry(const Shape& input) const {
  // The Conv2d whose input gradient this layer computes: [N, out, OH, OW] -> [N, in, H, W].
  const Shape out_shape = output_shape(input);
  ConvGeometry g;
  g.batch = input[0];
  g.in_channels = out_channels_;
  g.in_h = out_shape[2];
  g.in_w = out_shape[3];
  g.out_channels = in_channels_;
  g.kernel_h = g.kernel_w = kernel_size_;
  g.stride = stride_;
  g.padding = padding_;
  return g;
}

Tensor ConvTranspose2d::forward_impl(const Tensor& input, const RunState& /*state*/) {
  const Shape out_shape = output_shape(input.shape());
  Tensor output = Tensor::empty(out_shape, tensor_options(device_, MemoryTag::Activation));
  conv2d_backward_data(stream(), adjoint_geometry(input.shape()), weight_->value.data<float>(),
                       input.data<float>(), output.data<float>(), GradientMode::Overwrite);
  if (bias_ != nullptr) {
    add_channel_bias(stream(), output.data<float>(), bias_->value.data<float>(), out_shape[0],
                     out_channels_, out_shape[2] * out_shape[3]);
  }
  cached_input_ = input;
  return output;
}

Tensor ConvTranspose2d::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  const Tensor input = take_cached_input(cached_input_, grad_output, describe());
  const Shape out_shape = output_shape(input.shape());
  const ConvGeometry g = adjoint_geometry(input.shape());
  ensure_grad(*weight_);
  // In the adjoint Conv2d, grad_output is the image and the input is the output gradient.
  conv2d_backward_filter(stream(), g, grad_output.data<float>(), input.data<float>(),
                         weight_->grad.data<float>(), state.mode);
  if (bias_ != nullptr) {
    ensure_grad(*bias_);
    channel_bias_grad(stream(), grad_output.data<float>(), out_shape[0], out_channels_,
                      out_shape[2] * out_shape[3], bias_->grad.data<float>(), state.mode);
  }
  if (!state.need_input_grad) return Tensor();
  Tensor grad_input = Tensor::empty(input.shape(), tensor_options(device_, MemoryTag::Activation));
  conv2d_forward(stream(), g, grad_output.data<float>(), weight_->value.data<float>(),
                 grad_input.data<float>(), GradientMode::Overwrite);
  return grad_input;
}

}  // namespace mb
