// SoftmaxCrossEntropy: validation, then the fused op of kernels/softmax_cross_entropy.h
// (on CUDA the totals are reduced on the device and copied to the host once).
#include "layers/softmax_cross_entropy.h"

#include <limits>

#include "kernels/softmax_cross_entropy.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace mb {
namespace {

// The [outer, classes, inner] view of the logits, after checking the labels' shape.
struct Layout {
  std::int64_t outer = 0, classes = 0, inner = 0;
};

Layout check_shapes(const Tensor& logits, const Tensor& labels) {
  MB_CHECK(logits.defined() && labels.defined(), "SoftmaxCrossEntropy: undefined input");
  MB_CHECK(logits.dtype() == DType::Float32, "SoftmaxCrossEntropy: logits are ",
           dtype_name(logits.dtype()), ", expected float32");
  MB_CHECK(labels.dtype() == DType::Int32, "SoftmaxCrossEntropy: labels are ",
           dtype_name(labels.dtype()), ". Fix: labels must be DType::Int32 class indices");
  Layout layout;
  if (logits.ndim() == 2) {
    MB_CHECK(labels.ndim() == 1 && labels.dim(0) == logits.dim(0), "SoftmaxCrossEntropy: logits ",
             logits.shape().to_string(), " need labels [", logits.dim(0), "], got ",
             labels.shape().to_string());
    layout = {logits.dim(0), logits.dim(1), 1};
  } else if (logits.ndim() == 4) {
    MB_CHECK(labels.ndim() == 3 && labels.dim(0) == logits.dim(0) &&
                 labels.dim(1) == logits.dim(2) && labels.dim(2) == logits.dim(3),
             "SoftmaxCrossEntropy: logits ", logits.shape().to_string(), " need labels [",
             logits.dim(0), ", ", logits.dim(2), ", ", logits.dim(3), "], got ",
             labels.shape().to_string());
    layout = {logits.dim(0), logits.dim(1), logits.dim(2) * logits.dim(3)};
  } else {
    MB_THROW(InvalidArgument, "SoftmaxCrossEntropy: logits ", logits.shape().to_string(),
             " are neither [N, C] nor [N, C, H, W]");
  }
  MB_CHECK(layout.classes >= 1, "SoftmaxCrossEntropy: logits ", logits.shape().to_string(),
           " have no classes");
  return layout;
}

// The labels on the stream's device: themselves, or a copy ordered on the stream.
Tensor labels_on(const Tensor& labels, const Stream& stream) {
  return labels.device() == stream.device() ? labels : labels.to(stream.device(), stream.handle());
}

double reduced_loss(Reduction reduction, double loss_sum, std::int64_t valid_count) {
  if (reduction == Reduction::Sum) return loss_sum;
  return valid_count > 0 ? loss_sum / static_cast<double>(valid_count)
                         : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

SoftmaxCrossEntropy::SoftmaxCrossEntropy(LossOptions options) : options_(options) {
  MB_CHECK(options.label_smoothing >= 0.0f && options.label_smoothing <= 1.0f,
           "SoftmaxCrossEntropy: label_smoothing ", options.label_smoothing, " is outside [0, 1]");
}

LossResult SoftmaxCrossEntropy::forward_backward(const Tensor& logits, const Tensor& labels,
                                                 float seed_scale) const {
  return run(logits, labels, seed_scale, true);
}

LossResult SoftmaxCrossEntropy::forward(const Tensor& logits, const Tensor& labels) const {
  return run(logits, labels, 1.0f, false);
}

Tensor SoftmaxCrossEntropy::forward_backward_into(const Tensor& logits, const Tensor& labels,
                                                  float seed_scale, CrossEntropySums* sums) const {
  const Layout layout = check_shapes(logits, labels);
  const Device device = logits.device();
  Tensor grad = Tensor::empty(logits.shape(), tensor_options(device, MemoryTag::Activation));
  const Stream stream = Stream::compute(device);
  const Tensor device_labels = labels_on(labels, stream);
  softmax_cross_entropy_add(stream, logits.data<float>(), device_labels.data<std::int32_t>(),
                            layout.outer, layout.classes, layout.inner, options_.label_smoothing,
                            options_.ignore_index, seed_scale, grad_scale(), grad.data<float>(),
                            sums);
  return grad;
}

CrossEntropyGradScale SoftmaxCrossEntropy::grad_scale() const {
  return options_.reduction == Reduction::Mean ? CrossEntropyGradScale::Mean
                                               : CrossEntropyGradScale::Sum;
}

LossResult SoftmaxCrossEntropy::run(const Tensor& logits, const Tensor& labels, float seed_scale,
                                    bool want_gradient) const {
  const Layout layout = check_shapes(logits, labels);
  const Device device = logits.device();
  LossResult result;
  if (want_gradient) {
    result.grad_logits =
        Tensor::empty(logits.shape(), tensor_options(device, MemoryTag::Activation));
  }
  float* grad = want_gradient ? result.grad_logits.data<float>() : nullptr;
  const Stream stream = Stream::compute(device);
  const Tensor device_labels = labels_on(labels, stream);
  const CrossEntropyTotals totals =
      softmax_cross_entropy(stream, logits.data<float>(), device_labels.data<std::int32_t>(),
                            layout.outer, layout.classes, layout.inner, options_.label_smoothing,
                            options_.ignore_index, seed_scale, grad_scale(), grad);
  result.loss_sum = totals.loss_sum;
  result.valid_count = totals.valid_count;
  result.correct = totals.correct;
  result.loss = reduced_loss(options_.reduction, result.loss_sum, result.valid_count);
  return result;
}

}  // namespace mb
