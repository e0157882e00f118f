// ConvTranspose2d on both backends: GEMM + col2im on the CPU, cuDNN on CUDA.
#include "layers/conv_transpose2d.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/channel_bias.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/im2col.h"
#include "layers/init.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/philox.h"

#if MB_WITH_CUDA
#include "layers/cuda/cudnn_conv.h"
#endif

namespace mb {

ConvTranspose2d::ConvTranspose2d(std::int64_t in_channels, std::int64_t out_channels,
                                 int kernel_size, int stride, int padding, int output_padding,
                                 bool bias)
    : Module("ConvTranspose2d"),
      in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_size_(kernel_size),
      stride_(stride),
      padding_(padding),
      output_padding_(output_padding),
      use_bias_(bias) {
  if (in_channels <= 0 || out_channels <= 0 || kernel_size <= 0 || stride <= 0 || padding < 0 ||
      output_padding < 0) {
    MB_THROW(InvalidArgument, describe(),
             ": channels, kernel_size and stride must be positive, padding and output_padding "
             "non-negative");
  }
  if (output_padding >= stride) {
    MB_THROW(InvalidArgument, describe(), ": output_padding=", output_padding,
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
  return detail::concat("ConvTranspose2d(", in_channels_, ", ", out_channels_,
                        ", kernel_size=", kernel_size_, ", stride=", stride_,
                        ", padding=", padding_, ", output_padding=", output_padding_,
                        ", bias=", use_bias_ ? "true" : "false", ")");
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

std::size_t ConvTranspose2d::saved_bytes(const Shape& input) const {
  output_shape(input);
  return static_cast<std::size_t>(input.numel()) * sizeof(float);
}

void ConvTranspose2d::clear_cache() {
  cached_input_ = Tensor();
}

Tensor ConvTranspose2d::forward_impl(const Tensor& input, const RunState& /*state*/) {
  const Shape out_shape = output_shape(input.shape());
  Tensor output = Tensor::empty(out_shape, tensor_options(device_, MemoryTag::Activation));
  const std::int64_t batch = input.dim(0);
  const std::int64_t in_area = input.dim(2) * input.dim(3);
  const std::int64_t out_h = out_shape[2], out_w = out_shape[3];

  if (device_.is_cuda()) {
#if MB_WITH_CUDA
    // The Conv2d whose input gradient this is: [N, out, OH, OW] -> [N, in, H, W].
    cuda::ConvGeometry g;
    g.batch = batch;
    g.in_channels = out_channels_;
    g.in_h = out_h;
    g.in_w = out_w;
    g.out_channels = in_channels_;
    g.kernel_h = g.kernel_w = kernel_size_;
    g.stride = stride_;
    g.padding = padding_;
    cuda::conv_backward_data(device_, g, weight_->value.data<float>(), input.data<float>(),
                             output.data<float>(), GradientMode::Overwrite);
    if (bias_ != nullptr) {
      cuda::add_channel_bias(device_, bias_->value.data<float>(), output.data<float>(), batch,
                             out_channels_, out_h * out_w);
    }
#else
    MB_THROW(InvalidArgument, describe(), ": built without the CUDA backend");
#endif
  } else {
    const std::int64_t patch = out_channels_ * kernel_size_ * kernel_size_;
    const cpu::ConvWindow window{kernel_size_, kernel_size_, stride_, stride_,
                                 padding_,     padding_,     1,       1};
    const bool pointwise = kernel_size_ == 1 && stride_ == 1 && padding_ == 0;
    Tensor columns;
    if (!pointwise)
      columns = Tensor::empty({patch, in_area}, tensor_options(device_, MemoryTag::Workspace));
    const float* x = input.data<float>();
    const float* w = weight_->value.data<float>();
    float* y = output.data<float>();
    if (!pointwise) output.zero();
    for (std::int64_t n = 0; n < batch; ++n) {
      const float* x_n = x + n * in_channels_ * in_area;
      float* y_n = y + n * out_channels_ * out_h * out_w;
      // cols [patch, in_area] = W^T [patch, in] x x_n [in, in_area]; y_n = col2im(cols)
      float* cols = pointwise ? y_n : columns.data<float>();
      cpu::gemm(true, false, patch, in_area, in_channels_, 1.0f, w, patch, x_n, in_area, 0.0f, cols,
                in_area);
      if (!pointwise) cpu::col2im(cols, out_channels_, out_h, out_w, window, y_n);
    }
    if (bias_ != nullptr) {
      cpu::add_channel_bias(y, bias_->value.data<float>(), batch, out_channels_, out_h * out_w);
    }
  }
  cached_input_ = input;
  return output;
}

Tensor ConvTranspose2d::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  const Tensor input = take_cached_input(cached_input_, grad_output, describe());
  const Shape out_shape = output_shape(input.shape());
  const std::int64_t batch = input.dim(0);
  const std::int64_t in_area = input.dim(2) * input.dim(3);
  const std::int64_t out_h = out_shape[2], out_w = out_shape[3];
  ensure_grad(*weight_);
  if (bias_ != nullptr) ensure_grad(*bias_);
  Tensor grad_input;
  if (state.need_input_grad) {
    grad_input = Tensor::empty(input.shape(), tensor_options(device_, MemoryTag::Activation));
  }

  if (device_.is_cuda()) {
#if MB_WITH_CUDA
    cuda::ConvGeometry g;
    g.batch = batch;
    g.in_channels = out_channels_;
    g.in_h = out_h;
    g.in_w = out_w;
    g.out_channels = in_channels_;
    g.kernel_h = g.kernel_w = kernel_size_;
    g.stride = stride_;
    g.padding = padding_;
    // In the underlying Conv2d, grad_output is the image and the input is the "output".
    cuda::conv_backward_filter(device_, g, grad_output.data<float>(), input.data<float>(),
                               weight_->grad.data<float>(), state.mode);
    if (bias_ != nullptr) {
      cuda::channel_bias_grad(device_, grad_output.data<float>(), bias_->grad.data<float>(), batch,
                              out_channels_, out_h * out_w, state.mode);
    }
    if (state.need_input_grad) {
      cuda::conv_forward(device_, g, grad_output.data<float>(), weight_->value.data<float>(),
                         grad_input.data<float>(), GradientMode::Overwrite);
    }
#else
    MB_THROW(InvalidArgument, describe(), ": built without the CUDA backend");
#endif
    return grad_input;
  }

  const std::int64_t patch = out_channels_ * kernel_size_ * kernel_size_;
  const cpu::ConvWindow window{kernel_size_, kernel_size_, stride_, stride_,
                               padding_,     padding_,     1,       1};
  const bool pointwise = kernel_size_ == 1 && stride_ == 1 && padding_ == 0;
  Tensor columns;
  if (!pointwise)
    columns = Tensor::empty({patch, in_area}, tensor_options(device_, MemoryTag::Workspace));
  const float* x = input.data<float>();
  const float* w = weight_->value.data<float>();
  const float* dy = grad_output.data<float>();
  float* dw = weight_->grad.data<float>();
  float* dx = state.need_input_grad ? grad_input.data<float>() : nullptr;
  if (state.mode == GradientMode::Overwrite) weight_->grad.zero();
  for (std::int64_t n = 0; n < batch; ++n) {
    const float* dy_n = dy + n * out_channels_ * out_h * out_w;
    const float* cols = dy_n;
    if (!pointwise) {
      cpu::im2col(dy_n, out_channels_, out_h, out_w, window, columns.data<float>());
      cols = columns.data<float>();
    }
    // dW [in, patch] += x_n [in, in_area] x cols^T [in_area, patch]
    cpu::gemm(false, true, in_channels_, patch, in_area, 1.0f, x + n * in_channels_ * in_area,
              in_area, cols, in_area, 1.0f, dw, patch);
    // dx_n [in, in_area] = W [in, patch] x cols [patch, in_area]
    if (dx != nullptr) {
      cpu::gemm(false, false, in_channels_, in_area, patch, 1.0f, w, patch, cols, in_area, 0.0f,
                dx + n * in_channels_ * in_area, in_area);
    }
  }
  if (bias_ != nullptr) {
    cpu::channel_bias_grad(dy, batch, out_channels_, out_h * out_w, bias_->grad.data<float>(),
                           state.mode);
  }
  return grad_input;
}

}  // namespace mb
