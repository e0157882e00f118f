// Fused softmax cross-entropy: dispatch to the CPU or CUDA twin.
#include "kernels/softmax_cross_entropy.h"

#include "kernels/cpu/softmax_cross_entropy.h"
#include "kernels/cuda/softmax_cross_entropy.h"
#include "kernels/dispatch.h"

namespace mb {

CrossEntropyTotals softmax_cross_entropy(const Stream& stream, const float* logits,
                                         const std::int32_t* labels, std::int64_t outer,
                                         std::int64_t classes, std::int64_t inner,
                                         float label_smoothing, int ignore_index, float seed_scale,
                                         CrossEntropyGradScale grad_scale, float* grad_logits) {
  return MB_DISPATCH(stream, softmax_cross_entropy, logits, labels, outer, classes, inner,
                     label_smoothing, ignore_index, seed_scale, grad_scale, grad_logits);
}

}  // namespace mb
