// Pooling layers: validation and geometry, over the ops of kernels/pooling.h.
#include "layers/pooling.h"

#include "runtime/error.h"

namespace mb {
namespace {

void check_float(const Tensor& t, const std::string& layer, const char* what) {
  MB_CHECK(t.dtype() == DType::Float32, layer, ": ", what, " must be float32, got ",
           dtype_name(t.dtype()));
}

}  // namespace

// ---- WindowPool2d ----

WindowPool2d::WindowPool2d(const char* type_name, int kernel_size, int stride, int padding)
    : Module(type_name),
      kernel_size_(kernel_size),
      stride_(stride == -1 ? kernel_size : stride),
      padding_(padding) {
  MB_CHECK(kernel_size > 0, type_name, ": kernel_size must be positive, got ", kernel_size);
  MB_CHECK(stride_ > 0, type_name, ": stride must be positive (or -1 for kernel_size), got ",
           stride);
  MB_CHECK(padding >= 0 && padding <= kernel_size / 2, type_name, ": padding must be in [0, ",
           kernel_size / 2, "] (at most half of kernel_size ", kernel_size, "), got ", padding);
}

std::string WindowPool2d::describe() const {
  return type_name() + "(kernel_size=" + std::to_string(kernel_size_) +
         ", stride=" + std::to_string(stride_) + ", padding=" + std::to_string(padding_) + ")";
}

Pool2dGeometry WindowPool2d::geometry(const Shape& input) const {
  MB_CHECK(input.ndim() == 4, describe(), ": expected a 4-D input [N, C, H, W], got ",
           input.to_string());
  MB_CHECK(input[0] > 0 && input[1] > 0 && input[2] > 0 && input[3] > 0, describe(),
           ": empty input ", input.to_string());
  Pool2dGeometry g;
  g.batch = input[0];
  g.channels = input[1];
  g.in_h = input[2];
  g.in_w = input[3];
  g.kernel_h = g.kernel_w = kernel_size_;
  g.stride_h = g.stride_w = stride_;
  g.pad_h = g.pad_w = padding_;
  MB_CHECK(g.in_h + 2 * padding_ >= kernel_size_ && g.in_w + 2 * padding_ >= kernel_size_,
           describe(), ": kernel ", kernel_size_, "x", kernel_size_,
           " is bigger than the padded input ", input.to_string(), " (padded ",
           g.in_h + 2 * padding_, "x", g.in_w + 2 * padding_, ")");
  g.out_h = pool_output_size(g.in_h, kernel_size_, stride_, padding_);
  g.out_w = pool_output_size(g.in_w, kernel_size_, stride_, padding_);
  return g;
}

Shape WindowPool2d::output_shape(const Shape& input) const {
  const Pool2dGeometry g = geometry(input);
  return Shape{g.batch, g.channels, g.out_h, g.out_w};
}

std::int64_t WindowPool2d::forward_flops(const Shape& input) const {
  const Pool2dGeometry g = geometry(input);
  // One comparison or addition per window element.
  return g.batch * g.channels * g.out_h * g.out_w * kernel_size_ * kernel_size_;
}

MemoryTrace::Id WindowPool2d::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  return trace.layer(input, output_shape(trace.shape(input)), Keep::Nothing);
}

// ---- MaxPool2d ----

MaxPool2d::MaxPool2d(int kernel_size, int stride, int padding)
    : WindowPool2d("MaxPool2d", kernel_size, stride, padding) {
  MB_CHECK(kernel_size <= 16, "MaxPool2d: kernel_size ", kernel_size,
           " makes windows of more than ", kMaxPoolWindow,
           " elements, whose argmax would not fit a byte. Fix: use kernel_size <= 16");
}

MemoryTrace::Id MaxPool2d::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  // The one-byte argmax of each window, output-shaped; not the input.
  const Shape output = output_shape(trace.shape(input));
  return trace.layer(input, output, Keep::Nothing,
                     static_cast<std::size_t>(output.numel()) * sizeof(std::uint8_t));
}

void MaxPool2d::clear_cache() {
  argmax_ = Tensor();
}

Tensor MaxPool2d::forward_impl(const Tensor& input, const RunState& /*state*/) {
  const Pool2dGeometry g = geometry(input.shape());
  check_float(input, describe(), "input");
  const Shape out_shape{g.batch, g.channels, g.out_h, g.out_w};
  Tensor output = Tensor::empty(out_shape, tensor_options(device_, MemoryTag::Activation));
  argmax_ = Tensor::empty(out_shape, tensor_options(device_, MemoryTag::Activation, DType::UInt8));
  max_pool2d_forward(stream(), input.data<float>(), g, output.data<float>(),
                     argmax_.data<std::uint8_t>());
  cached_input_shape_ = input.shape();
  return output;
}

Tensor MaxPool2d::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  MB_CHECK(argmax_.defined(), describe(),
           ".backward: nothing cached. Fix: call forward() before each backward()");
  MB_CHECK(grad_output.shape() == argmax_.shape(), describe(), ".backward: gradient ",
           grad_output.shape().to_string(), " does not match the forward output ",
           argmax_.shape().to_string());
  check_float(grad_output, describe(), "gradient");
  Tensor grad_input;
  if (state.need_input_grad) {
    const Pool2dGeometry g = geometry(cached_input_shape_);
    grad_input = Tensor::empty(cached_input_shape_, tensor_options(device_, MemoryTag::Activation));
    max_pool2d_backward(stream(), grad_output.data<float>(), argmax_.data<std::uint8_t>(), g,
                        grad_input.data<float>());
  }
  clear_cache();
  return grad_input;
}

// ---- AvgPool2d ----

AvgPool2d::AvgPool2d(int kernel_size, int stride, int padding)
    : WindowPool2d("AvgPool2d", kernel_size, stride, padding) {}

void AvgPool2d::clear_cache() {
  cached_ = false;
}

Tensor AvgPool2d::forward_impl(const Tensor& input, const RunState& /*state*/) {
  const Pool2dGeometry g = geometry(input.shape());
  check_float(input, describe(), "input");
  Tensor output = Tensor::empty(Shape{g.batch, g.channels, g.out_h, g.out_w},
                                tensor_options(device_, MemoryTag::Activation));
  avg_pool2d_forward(stream(), input.data<float>(), g, output.data<float>());
  cached_input_shape_ = input.shape();
  cached_ = true;
  return output;
}

Tensor AvgPool2d::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  MB_CHECK(cached_, describe(),
           ".backward: nothing cached. Fix: call forward() before each backward()");
  const Pool2dGeometry g = geometry(cached_input_shape_);
  const Shape out_shape{g.batch, g.channels, g.out_h, g.out_w};
  MB_CHECK(grad_output.shape() == out_shape, describe(), ".backward: gradient ",
           grad_output.shape().to_string(), " does not match the forward output ",
           out_shape.to_string());
  check_float(grad_output, describe(), "gradient");
  Tensor grad_input;
  if (state.need_input_grad) {
    grad_input = Tensor::empty(cached_input_shape_, tensor_options(device_, MemoryTag::Activation));
    avg_pool2d_backward(stream(), grad_output.data<float>(), g, grad_input.data<float>());
  }
  clear_cache();
  return grad_input;
}

// ---- GlobalAvgPool2d ----

Shape GlobalAvgPool2d::output_shape(const Shape& input) const {
  MB_CHECK(input.ndim() == 4, "GlobalAvgPool2d: expected a 4-D input [N, C, H, W], got ",
           input.to_string());
  MB_CHECK(input[0] > 0 && input[1] > 0 && input[2] > 0 && input[3] > 0,
           "GlobalAvgPool2d: empty input ", input.to_string());
  return Shape{input[0], input[1], 1, 1};
}

std::int64_t GlobalAvgPool2d::forward_flops(const Shape& input) const {
  output_shape(input);
  return input.numel();
}

MemoryTrace::Id GlobalAvgPool2d::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  return trace.layer(input, output_shape(trace.shape(input)), Keep::Nothing);
}

void GlobalAvgPool2d::clear_cache() {
  cached_ = false;
}

Tensor GlobalAvgPool2d::forward_impl(const Tensor& input, const RunState& /*state*/) {
  const Shape out_shape = output_shape(input.shape());
  check_float(input, "GlobalAvgPool2d", "input");
  Tensor output = Tensor::empty(out_shape, tensor_options(device_, MemoryTag::Activation));
  const std::int64_t planes = input.dim(0) * input.dim(1);
  const std::int64_t plane_size = input.dim(2) * input.dim(3);
  global_avg_pool2d_forward(stream(), input.data<float>(), planes, plane_size,
                            output.data<float>());
  cached_input_shape_ = input.shape();
  cached_ = true;
  return output;
}

Tensor GlobalAvgPool2d::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  MB_CHECK(cached_, "GlobalAvgPool2d.backward: nothing cached. Fix: call forward() before each ",
           "backward()");
  const Shape out_shape = output_shape(cached_input_shape_);
  MB_CHECK(grad_output.shape() == out_shape, "GlobalAvgPool2d.backward: gradient ",
           grad_output.shape().to_string(), " does not match the forward output ",
           out_shape.to_string());
  check_float(grad_output, "GlobalAvgPool2d", "gradient");
  Tensor grad_input;
  if (state.need_input_grad) {
    grad_input = Tensor::empty(cached_input_shape_, tensor_options(device_, MemoryTag::Activation));
    const std::int64_t planes = cached_input_shape_[0] * cached_input_shape_[1];
    const std::int64_t plane_size = cached_input_shape_[2] * cached_input_shape_[3];
    global_avg_pool2d_backward(stream(), grad_output.data<float>(), planes, plane_size,
                               grad_input.data<float>());
  }
  clear_cache();
  return grad_input;
}

}  // namespace mb
