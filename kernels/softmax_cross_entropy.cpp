// Fused softmax cross-entropy: dispatch to the CPU or CUDA twin.
#include "kernels/softmax_cross_entropy.h"

#include "kernels/cpu/softmax_cross_entropy.h"
#include "kernels/cuda/softmax_cross_entropy.h"
#include "kernels/dispatch.h"
#include "runtime/error.h"

namespace mb {

CrossEntropyTotals softmax_cross_entropy(const Stream& stream, const float* logits,
                                         const std::int32_t* labels, std::int64_t outer,
                                         std::int64_t classes, std::int64_t inner,
                                         float label_smoothing, int ignore_index, float seed_scale,
                                         CrossEntropyGradScale grad_scale, float* grad_logits) {
  return MB_DISPATCH(stream, softmax_cross_entropy, logits, labels, outer, classes, inner,
                     label_smoothing, ignore_index, seed_scale, grad_scale, grad_logits);
}

void softmax_cross_entropy_add(const Stream& stream, const float* logits,
                               const std::int32_t* labels, std::int64_t outer, std::int64_t classes,
                               std::int64_t inner, float label_smoothing, int ignore_index,
                               float seed_scale, CrossEntropyGradScale grad_scale,
                               float* grad_logits, CrossEntropySums* sums) {
  MB_CHECK(sums != nullptr, "softmax_cross_entropy_add: null sums");
  MB_DISPATCH(stream, softmax_cross_entropy_add, logits, labels, outer, classes, inner,
              label_smoothing, ignore_index, seed_scale, grad_scale, grad_logits, sums);
}

void add_cross_entropy_sums(const Stream& stream, const CrossEntropySums* from,
                            CrossEntropySums* into) {
  MB_CHECK(from != nullptr && into != nullptr, "add_cross_entropy_sums: null sums");
  MB_DISPATCH(stream, add_cross_entropy_sums, from, into);
}

CrossEntropyTotals cross_entropy_totals(const CrossEntropySums& sums, std::int64_t classes,
                                        int ignore_index) {
  if (sums.bad_label_count > 0) {
    MB_THROW(InvalidArgument, "SoftmaxCrossEntropy: label ", sums.bad_label, " is outside [0, ",
             classes, ") and is not ignore_index (", ignore_index, "); ", sums.bad_label_count,
             " such labels. Fix: labels must be class indices in [0, C) with C = ", classes,
             ", or ignore_index");
  }
  CrossEntropyTotals totals;
  totals.loss_sum = sums.loss_sum;
  totals.valid_count = static_cast<std::int64_t>(sums.valid_count);
  totals.correct = static_cast<std::int64_t>(sums.correct);
  return totals;
}

}  // namespace mb
