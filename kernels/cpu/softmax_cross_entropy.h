// Fused softmax cross-entropy (loss and gradient in one pass) on the CPU: the reference for
// kernels/cuda/softmax_cross_entropy.cu.
//
// Logits are viewed as [outer, classes, inner] and labels as [outer, inner]: [N, C] with
// labels [N] is inner = 1; [N, C, H, W] with labels [N, H, W] is outer = N, inner = H*W.
// With label smoothing eps the target is (1 - eps) * one_hot(label) + eps / C (PyTorch), so
//   loss = logsumexp(z) - (1 - eps) * z[label] - eps / C * sum_c z[c]
//   dloss/dz[c] = softmax(z)[c] - target[c].
// Elements whose label is ignore_index contribute no loss and a zero gradient.
#pragma once

#include <cstdint>

namespace mb::cpu {

struct CrossEntropyTotals {
  double loss_sum = 0.0;         // sum of the per-element losses over valid elements
  std::int64_t valid_count = 0;  // elements whose label != ignore_index
  std::int64_t correct = 0;      // valid elements whose argmax (first maximum) == label
};

// Counts labels != ignore_index; throws mb::InvalidArgument naming the first label outside
// [0, classes) that is not ignore_index.
std::int64_t count_valid_labels(const std::int32_t* labels, std::int64_t count,
                                std::int64_t classes, int ignore_index);

// Computes the totals and, when grad_logits is not null, writes
// grad_scale * dloss/dlogits (zero for ignored elements). Labels must have been validated
// (count_valid_labels).
CrossEntropyTotals softmax_cross_entropy(const float* logits, const std::int32_t* labels,
                                         std::int64_t outer, std::int64_t classes,
                                         std::int64_t inner, float label_smoothing,
                                         int ignore_index, float grad_scale, float* grad_logits);

}  // namespace mb::cpu
