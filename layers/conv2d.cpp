// Conv2d on both backends: im2col + GEMM on the CPU, cuDNN on CUDA.
#include "layers/conv2d.h"

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
namespace {

#if MB_WITH_CUDA
cuda::ConvGeometry geometry_of(const Shape& input, std::int64_t out_channels, int kernel,
                               int stride, int padding, int dilation, int groups) {
  cuda::ConvGeometry g;
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
#endif

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
      groups_(groups),
      use_bias_(bias) {
  if (in_channels <= 0 || out_channels <= 0 || kernel_size <= 0 || stride <= 0 || padding < 0 ||
      dilation <= 0 || groups <= 0) {
    MB_THROW(InvalidArgument, describe(),
             ": channels, kernel_size, stride, dilation and groups must be positive and "
             "padding non-negative");
  }
  if (in_channels % groups != 0 || out_channels % groups != 0) {
    MB_THROW(InvalidArgument, describe(), ": groups=", groups,
             " must divide in_channels=", in_channels, " and out_channels=", out_channels);
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
  return detail::concat("Conv2d(", in_channels_, ", ", out_channels_,
                        ", kernel_size=", kernel_size_, ", stride=", stride_,
                        ", padding=", padding_, ", dilation=", dilation_, ", groups=", groups_,
                        ", bias=", use_bias_ ? "true" : "false", ")");
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
  const std::int64_t out_h =
      cpu::conv_output_size(input[2], kernel_size_, stride_, padding_, dilation_);
  const std::int64_t out_w =
      cpu::conv_output_size(input[3], kernel_size_, stride_, padding_, dilation_);
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

std::size_t Conv2d::saved_bytes(const Shape& input) const {
  output_shape(input);  // validates
  return static_cast<std::size_t>(input.numel()) * sizeof(float);
}

void Conv2d::clear_cache() {
  cached_input_ = Tensor();
}

Tensor Conv2d::forward_impl(const Tensor& input, const RunState& /*state*/) {
  const Shape out_shape = output_shape(input.shape());
  Tensor output = Tensor::empty(out_shape, tensor_options(device_, MemoryTag::Activation));
  const std::int64_t batch = input.dim(0), height = input.dim(2), width = input.dim(3);
  const std::int64_t out_area = out_shape[2] * out_shape[3];

  if (device_.is_cuda()) {
#if MB_WITH_CUDA
    const cuda::ConvGeometry g = geometry_of(input.shape(), out_channels_, kernel_size_, stride_,
                                             padding_, dilation_, groups_);
    cuda::conv_forward(device_, g, input.data<float>(), weight_->value.data<float>(),
                       output.data<float>(), GradientMode::Overwrite);
    if (bias_ != nullptr) {
      cuda::add_channel_bias(device_, bias_->value.data<float>(), output.data<float>(), batch,
                             out_channels_, out_area);
    }
#else
    MB_THROW(InvalidArgument, describe(), ": built without the CUDA backend");
#endif
  } else {
    const std::int64_t group_in = in_channels_ / groups_;
    const std::int64_t group_out = out_channels_ / groups_;
    const std::int64_t patch = group_in * kernel_size_ * kernel_size_;
    const cpu::ConvWindow window{kernel_size_, kernel_size_, stride_,   stride_,
                                 padding_,     padding_,     dilation_, dilation_};
    // A 1x1, stride-1, unpadded convolution needs no lowering: the input is its own
    // column matrix.
    const bool pointwise = kernel_size_ == 1 && stride_ == 1 && padding_ == 0;
    Tensor columns;
    if (!pointwise)
      columns = Tensor::empty({patch, out_area}, tensor_options(device_, MemoryTag::Workspace));
    const float* x = input.data<float>();
    const float* w = weight_->value.data<float>();
    float* y = output.data<float>();
    for (std::int64_t n = 0; n < batch; ++n) {
      for (int g = 0; g < groups_; ++g) {
        const float* x_group = x + (n * in_channels_ + g * group_in) * height * width;
        const float* cols = x_group;
        if (!pointwise) {
          cpu::im2col(x_group, group_in, height, width, window, columns.data<float>());
          cols = columns.data<float>();
        }
        cpu::gemm(false, false, group_out, out_area, patch, 1.0f, w + g * group_out * patch, patch,
                  cols, out_area, 0.0f, y + (n * out_channels_ + g * group_out) * out_area,
                  out_area);
      }
    }
    if (bias_ != nullptr) {
      cpu::add_channel_bias(y, bias_->value.data<float>(), batch, out_channels_, out_area);
    }
  }
  cached_input_ = input;
  return output;
}

Tensor Conv2d::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  const Tensor input = take_cached_input(cached_input_, grad_output, describe());
  const Shape out_shape = output_shape(input.shape());
  const std::int64_t batch = input.dim(0), height = input.dim(2), width = input.dim(3);
  const std::int64_t out_area = out_shape[2] * out_shape[3];
  ensure_grad(*weight_);
  if (bias_ != nullptr) ensure_grad(*bias_);
  Tensor grad_input;
  if (state.need_input_grad) {
    grad_input = Tensor::empty(input.shape(), tensor_options(device_, MemoryTag::Activation));
  }

  if (device_.is_cuda()) {
#if MB_WITH_CUDA
    const cuda::ConvGeometry g = geometry_of(input.shape(), out_channels_, kernel_size_, stride_,
                                             padding_, dilation_, groups_);
    cuda::conv_backward_filter(device_, g, input.data<float>(), grad_output.data<float>(),
                               weight_->grad.data<float>(), state.mode);
    if (bias_ != nullptr) {
      cuda::channel_bias_grad(device_, grad_output.data<float>(), bias_->grad.data<float>(), batch,
                              out_channels_, out_area, state.mode);
    }
    if (state.need_input_grad) {
      cuda::conv_backward_data(device_, g, weight_->value.data<float>(), grad_output.data<float>(),
                               grad_input.data<float>(), GradientMode::Overwrite);
    }
#else
    MB_THROW(InvalidArgument, describe(), ": built without the CUDA backend");
#endif
    return grad_input;
  }

  const std::int64_t group_in = in_channels_ / groups_;
  const std::int64_t group_out = out_channels_ / groups_;
  const std::int64_t patch = group_in * kernel_size_ * kernel_size_;
  const cpu::ConvWindow window{kernel_size_, kernel_size_, stride_,   stride_,
                               padding_,     padding_,     dilation_, dilation_};
  const bool pointwise = kernel_size_ == 1 && stride_ == 1 && padding_ == 0;
  Tensor columns;
  if (!pointwise)
    columns = Tensor::empty({patch, out_area}, tensor_options(device_, MemoryTag::Workspace));
  const float* x = input.data<float>();
  const float* w = weight_->value.data<float>();
  const float* dy = grad_output.data<float>();
  float* dw = weight_->grad.data<float>();
  float* dx = state.need_input_grad ? grad_input.data<float>() : nullptr;
  if (state.mode == GradientMode::Overwrite) weight_->grad.zero();
  if (dx != nullptr && !pointwise) grad_input.zero();

  for (std::int64_t n = 0; n < batch; ++n) {
    for (int g = 0; g < groups_; ++g) {
      const float* x_group = x + (n * in_channels_ + g * group_in) * height * width;
      const float* dy_group = dy + (n * out_channels_ + g * group_out) * out_area;
      const float* w_group = w + g * group_out * patch;
      const float* cols = x_group;
      if (!pointwise) {
        cpu::im2col(x_group, group_in, height, width, window, columns.data<float>());
        cols = columns.data<float>();
      }
      // dW_g += dy_g [group_out, out_area] x cols^T [out_area, patch]
      cpu::gemm(false, true, group_out, patch, out_area, 1.0f, dy_group, out_area, cols, out_area,
                1.0f, dw + g * group_out * patch, patch);
      if (dx == nullptr) continue;
      float* dx_group = dx + (n * in_channels_ + g * group_in) * height * width;
      // dcols = W_g^T [patch, group_out] x dy_g [group_out, out_area]; dx_g = col2im(dcols)
      if (pointwise) {
        cpu::gemm(true, false, patch, out_area, group_out, 1.0f, w_group, patch, dy_group, out_area,
                  0.0f, dx_group, out_area);
      } else {
        cpu::gemm(true, false, patch, out_area, group_out, 1.0f, w_group, patch, dy_group, out_area,
                  0.0f, columns.data<float>(), out_area);
        cpu::col2im(columns.data<float>(), group_in, height, width, window, dx_group);
      }
    }
  }
  if (bias_ != nullptr) {
    cpu::channel_bias_grad(dy, batch, out_channels_, out_area, bias_->grad.data<float>(),
                           state.mode);
  }
  return grad_input;
}

}  // namespace mb
