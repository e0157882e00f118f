// Functional elementwise ops: validation, then kernels/cpu/elementwise or
// kernels/cuda/elementwise.
#include "layers/elementwise.h"

#include "kernels/cpu/activation.h"
#include "kernels/cpu/elementwise.h"
#include "runtime/context.h"
#include "runtime/error.h"

#if MB_WITH_CUDA
#include "kernels/cuda/activation.h"
#include "kernels/cuda/elementwise.h"
#include "runtime/cuda_context.h"
#endif

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

#if MB_WITH_CUDA
cudaStream_t stream_of(const Tensor& t) {
  return compute_stream(t.device());
}
#endif

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  check_same(a, b, "add");
  Tensor out = Tensor::empty(a.shape(), tensor_options(a.device(), MemoryTag::Activation));
  if (a.device().is_cpu()) {
    cpu::add(a.data<float>(), b.data<float>(), out.data<float>(), a.numel());
  } else {
#if MB_WITH_CUDA
    cuda::add(a.data<float>(), b.data<float>(), out.data<float>(), a.numel(), stream_of(a));
#endif
  }
  return out;
}

void add_into(Tensor& dst, const Tensor& src) {
  check_same(dst, src, "add_into");
  if (dst.device().is_cpu()) {
    cpu::add_into(dst.data<float>(), src.data<float>(), dst.numel());
  } else {
#if MB_WITH_CUDA
    cuda::add_into(dst.data<float>(), src.data<float>(), dst.numel(), stream_of(dst));
#endif
  }
}

void scale_inplace(Tensor& t, float factor) {
  check_defined_float(t, "scale_inplace", "tensor");
  if (t.device().is_cpu()) {
    cpu::scale(t.data<float>(), factor, t.numel());
  } else {
#if MB_WITH_CUDA
    cuda::scale(t.data<float>(), factor, t.numel(), stream_of(t));
#endif
  }
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
  if (a.device().is_cpu()) {
    cpu::concat_channels(a.data<float>(), b.data<float>(), out.data<float>(), outer, a.dim(1),
                         b.dim(1), spatial);
  } else {
#if MB_WITH_CUDA
    cuda::concat_channels(a.data<float>(), b.data<float>(), out.data<float>(), outer, a.dim(1),
                          b.dim(1), spatial, stream_of(a));
#endif
  }
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
  if (grad.device().is_cpu()) {
    cpu::split_channels(grad.data<float>(), a.data<float>(), b.data<float>(), grad.dim(0),
                        dims_a[1], dims_b[1], spatial);
  } else {
#if MB_WITH_CUDA
    cuda::split_channels(grad.data<float>(), a.data<float>(), b.data<float>(), grad.dim(0),
                         dims_a[1], dims_b[1], spatial, stream_of(grad));
#endif
  }
  return {a, b};
}

Tensor relu_backward_from_output(const Tensor& output, const Tensor& grad) {
  check_same(output, grad, "relu_backward_from_output");
  Tensor grad_input =
      Tensor::empty(output.shape(), tensor_options(output.device(), MemoryTag::Activation));
  if (output.device().is_cpu()) {
    cpu::relu_backward(output.data<float>(), grad.data<float>(), grad_input.data<float>(),
                       output.numel());
  } else {
#if MB_WITH_CUDA
    cuda::relu_backward(output.data<float>(), grad.data<float>(), grad_input.data<float>(),
                        output.numel(), stream_of(output));
#endif
  }
  return grad_input;
}

}  // namespace mb
