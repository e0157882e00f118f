// Functional elementwise ops on tensors: validation, then kernels/elementwise.
#include "layers/elementwise.h"

#include "kernels/activation.h"
#include "kernels/elementwise.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace mb {
namespace {

void check_defined_float(const Tensor& t, const char* op, const char* which) {
  MB_CHECK(t.defined(), op, ": ", which, " is undefined");
  MB_CHECK(t.dtype() == DType::Float32, op, ": ", which, " is ", dtype_name(t.dtype()),
           ", expected float32");
}

void check_same(const Tensor& a, const Tensor& b, const char* op) {
  check_defined_float(a, op, "first operand");
  check_defined_float(b, op, "second operand");
  MB_CHECK(a.shape() == b.shape(), op, ": shapes ", a.shape().to_string(), " and ",
           b.shape().to_string(), " differ. Fix: both operands must have the same shape");
  MB_CHECK(a.device() == b.device(), op, ": operands on ", a.device().str(), " and ",
           b.device().str(), ". Fix: move both to one device");
}

Stream stream_of(const Tensor& t) {
  return Stream::compute(t.device());
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  check_same(a, b, "add");
  Tensor out = Tensor::empty(a.shape(), tensor_options(a.device(), MemoryTag::Activation));
  mb::add(stream_of(a), a.data<float>(), b.data<float>(), out.data<float>(), a.numel());
  return out;
}

void add_into(Tensor& dst, const Tensor& src) {
  check_same(dst, src, "add_into");
  mb::add_into(stream_of(dst), dst.data<float>(), src.data<float>(), dst.numel());
}

Tensor concat_channels(const Tensor& a, const Tensor& b) {
  check_defined_float(a, "concat_channels", "first operand");
  check_defined_float(b, "concat_channels", "second operand");
  bool compatible = a.ndim() >= 2 && a.ndim() == b.ndim() && a.dim(0) == b.dim(0);
  for (int axis = 2; compatible && axis < a.ndim(); ++axis) {
    compatible = a.dim(axis) == b.dim(axis);
  }
  MB_CHECK(compatible, "concat_channels: shapes ", a.shape().to_string(), " and ",
           b.shape().to_string(),
           " cannot be concatenated along channels. Fix: both must be [N, C, ...] with equal N "
           "and equal axes after C");
  MB_CHECK(a.device() == b.device(), "concat_channels: operands on ", a.device().str(), " and ",
           b.device().str(), ". Fix: move both to one device");
  std::vector<std::int64_t> dims = a.shape().dims();
  dims[1] = a.dim(1) + b.dim(1);
  Tensor out = Tensor::empty(Shape(dims), tensor_options(a.device(), MemoryTag::Activation));
  const std::int64_t outer = a.dim(0);
  std::int64_t spatial = 1;
  for (int axis = 2; axis < a.ndim(); ++axis) spatial *= a.dim(axis);
  mb::concat_channels(stream_of(a), a.data<float>(), b.data<float>(), out.data<float>(), outer,
                      a.dim(1), b.dim(1), spatial);
  return out;
}

std::pair<Tensor, Tensor> split_channels(const Tensor& grad, std::int64_t channels_a) {
  check_defined_float(grad, "split_channels", "gradient");
  MB_CHECK(grad.ndim() >= 2, "split_channels: shape ", grad.shape().to_string(),
           " has no channel axis. Fix: pass [N, C, ...]");
  MB_CHECK(channels_a >= 0 && channels_a <= grad.dim(1), "split_channels: cannot take ", channels_a,
           " channels from shape ", grad.shape().to_string());
  std::vector<std::int64_t> dims_a = grad.shape().dims();
  std::vector<std::int64_t> dims_b = dims_a;
  dims_a[1] = channels_a;
  dims_b[1] = grad.dim(1) - channels_a;
  Tensor a = Tensor::empty(Shape(dims_a), tensor_options(grad.device(), MemoryTag::Activation));
  Tensor b = Tensor::empty(Shape(dims_b), tensor_options(grad.device(), MemoryTag::Activation));
  std::int64_t spatial = 1;
  for (int axis = 2; axis < grad.ndim(); ++axis) spatial *= grad.dim(axis);
  mb::split_channels(stream_of(grad), grad.data<float>(), a.data<float>(), b.data<float>(),
                     grad.dim(0), dims_a[1], dims_b[1], spatial);
  return {a, b};
}

Tensor relu_backward_from_output(const Tensor& output, const Tensor& grad) {
  check_same(output, grad, "relu_backward_from_output");
  Tensor grad_input =
      Tensor::empty(output.shape(), tensor_options(output.device(), MemoryTag::Activation));
  relu_backward(stream_of(output), output.data<float>(), grad.data<float>(),
                grad_input.data<float>(), output.numel());
  return grad_input;
}

}  // namespace mb
