// Softmax cross-entropy loss, fused with its gradient: the loss every model in the zoo
// trains with (classification [N, C] with labels [N]; segmentation [N, C, H, W] with labels
// [N, H, W], per pixel).
//
// Micro-batching: the engine calls forward_backward once per micro-batch. Reduction::Sum
// with seed_scale = 1 / (valid elements of the FULL batch), or Reduction::Mean with
// seed_scale = n_k / B, gives per-micro-batch gradients that sum exactly to the full-batch
// mean gradient. loss_sum / valid_count let the engine report the exact full-batch mean.
#pragma once

#include <cstdint>

#include "kernels/softmax_cross_entropy.h"
#include "runtime/tensor.h"

namespace mb {

enum class Reduction { Mean, Sum };

struct LossOptions {
  Reduction reduction = Reduction::Mean;
  // Target distribution (1 - eps) * one_hot + eps / C (PyTorch's definition).
  float label_smoothing = 0.0f;
  int ignore_index = -100;
};

struct LossResult {
  double loss = 0.0;      // reduced per options (mean over valid elements, or sum), for reporting;
                          // NaN for Mean when no element is valid
  double loss_sum = 0.0;  // sum over valid elements of the per-element loss
  std::int64_t valid_count = 0;  // elements whose label != ignore_index
  std::int64_t correct = 0;      // valid elements whose argmax == label
  Tensor grad_logits;  // seed_scale * d(loss)/d(logits), loss reduced per options; zero for
                       // ignored elements. Undefined from forward().
};

class SoftmaxCrossEntropy {
 public:
  // Throws mb::InvalidArgument unless 0 <= label_smoothing <= 1.
  explicit SoftmaxCrossEntropy(LossOptions options = {});

  const LossOptions& options() const { return options_; }

  // logits [N, C] with labels [N] (DType::Int32), or logits [N, C, H, W] with labels
  // [N, H, W]. Labels may be on the host or on the logits' device. Computes the loss and its
  // gradient in one pass; seed_scale multiplies the gradient only. A label outside [0, C)
  // that is not ignore_index throws mb::InvalidArgument naming the label and C.
  LossResult forward_backward(const Tensor& logits, const Tensor& labels,
                              float seed_scale = 1.0f) const;
  // Loss only (evaluation): no gradient.
  LossResult forward(const Tensor& logits, const Tensor& labels) const;
  // forward_backward without waiting for the totals: they are added into `sums`, memory of
  // the logits' device (kernels/softmax_cross_entropy.h), for the caller to read once after
  // several calls. Returns the gradient.
  Tensor forward_backward_into(const Tensor& logits, const Tensor& labels, float seed_scale,
                               CrossEntropySums* sums) const;

 private:
  LossResult run(const Tensor& logits, const Tensor& labels, float seed_scale,
                 bool want_gradient) const;
  CrossEntropyGradScale grad_scale() const;

  LossOptions options_;
};

}  // namespace mb
