// SoftmaxCrossEntropy: validation, then the fused kernel (kernels/cpu or kernels/cuda
// softmax_cross_entropy); on CUDA the totals are reduced on the device and copied to the
// host once.
#include "layers/softmax_cross_entropy.h"

#include <limits>

#include "kernels/cpu/softmax_cross_entropy.h"
#include "runtime/allocator_registry.h"
#include "runtime/context.h"
#include "runtime/error.h"

#if MB_WITH_CUDA
#include "kernels/cuda/softmax_cross_entropy.h"
#include "runtime/cuda_check.h"
#include "runtime/cuda_context.h"
#endif

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

  if (device.is_cpu()) {
    const Tensor host_labels = labels.device().is_cpu() ? labels : labels.to(Device::cpu());
    const std::int32_t* label_data = host_labels.data<std::int32_t>();
    const std::int64_t valid = cpu::count_valid_labels(label_data, host_labels.numel(),
                                                       layout.classes, options_.ignore_index);
    float grad_scale = seed_scale;
    if (options_.reduction == Reduction::Mean) {
      grad_scale = valid > 0 ? seed_scale / static_cast<float>(valid) : 0.0f;
    }
    const cpu::CrossEntropyTotals totals = cpu::softmax_cross_entropy(
        logits.data<float>(), label_data, layout.outer, layout.classes, layout.inner,
        options_.label_smoothing, options_.ignore_index, grad_scale, grad);
    result.loss_sum = totals.loss_sum;
    result.valid_count = totals.valid_count;
    result.correct = totals.correct;
  } else {
#if MB_WITH_CUDA
    cudaStream_t stream = compute_stream(device);
    const Tensor device_labels =
        labels.device() == device ? labels : labels.to(device, static_cast<StreamHandle>(stream));
    DeviceBuffer totals_buffer(allocator_for(device), sizeof(cuda::CrossEntropyDeviceTotals),
                               MemoryTag::Workspace, stream);
    auto* device_totals = static_cast<cuda::CrossEntropyDeviceTotals*>(totals_buffer.get());
    cuda::softmax_cross_entropy(
        logits.data<float>(), device_labels.data<std::int32_t>(), layout.outer, layout.classes,
        layout.inner, options_.label_smoothing, options_.ignore_index, seed_scale,
        options_.reduction == Reduction::Mean ? cuda::CrossEntropyGradScale::Mean
                                              : cuda::CrossEntropyGradScale::Sum,
        grad, device_totals, stream);
    cuda::CrossEntropyDeviceTotals totals{};
    MB_CUDA_CHECK(
        cudaMemcpyAsync(&totals, device_totals, sizeof(totals), cudaMemcpyDeviceToHost, stream));
    MB_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (totals.bad_label_count > 0) {
      MB_THROW(InvalidArgument, "SoftmaxCrossEntropy: label ", totals.bad_label, " is outside [0, ",
               layout.classes, ") and is not ignore_index (", options_.ignore_index, "); ",
               totals.bad_label_count,
               " such labels. Fix: labels must be class indices in [0, C) with C = ",
               layout.classes, ", or ignore_index");
    }
    result.loss_sum = totals.loss_sum;
    result.valid_count = static_cast<std::int64_t>(totals.valid_count);
    result.correct = static_cast<std::int64_t>(totals.correct);
#endif
  }
  result.loss = reduced_loss(options_.reduction, result.loss_sum, result.valid_count);
  return result;
}

}  // namespace mb
