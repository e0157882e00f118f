// Fused softmax cross-entropy: loss and gradient in one pass (twins:
// kernels/cpu/softmax_cross_entropy.h, the reference, and kernels/cuda/softmax_cross_entropy.h).
//
// Logits are viewed as [outer, classes, inner] and labels as [outer, inner]: [N, C] with
// labels [N] is inner = 1; [N, C, H, W] with labels [N, H, W] is outer = N, inner = H*W.
// With label smoothing eps the target is (1 - eps) * one_hot(label) + eps / C (PyTorch), so
//   loss = logsumexp(z) - (1 - eps) * z[label] - eps / C * sum_c z[c]
//   dloss/dz[c] = softmax(z)[c] - target[c].
// Elements whose label is ignore_index contribute no loss and a zero gradient.
#pragma once

#include <cstdint>

#include "runtime/stream.h"

namespace mb {

struct CrossEntropyTotals {
  double loss_sum = 0.0;         // sum of the per-element losses over valid elements
  std::int64_t valid_count = 0;  // elements whose label != ignore_index
  std::int64_t correct = 0;      // valid elements whose argmax (first maximum) == label
};

enum class CrossEntropyGradScale {
  Sum,   // gradient scale = seed_scale
  Mean,  // gradient scale = seed_scale / valid_count (0 when no element is valid)
};

// Computes the totals and, when grad_logits is not null, writes
// scale * dloss/dlogits (zero for ignored elements), scale per `grad_scale`. `labels` is
// memory of the stream's device. Returns when the totals are known (on CUDA it waits for the
// stream). A label outside [0, classes) that is not ignore_index throws mb::InvalidArgument
// naming it and the fix.
CrossEntropyTotals softmax_cross_entropy(const Stream& stream, const float* logits,
                                         const std::int32_t* labels, std::int64_t outer,
                                         std::int64_t classes, std::int64_t inner,
                                         float label_smoothing, int ignore_index, float seed_scale,
                                         CrossEntropyGradScale grad_scale, float* grad_logits);

// Totals that stay where the work runs (host memory for the CPU, device memory for CUDA):
// a training step adds each micro-batch's into one and reads it once, so no micro-batch waits
// for the device between its forward and backward. Zeroed memory is the empty sum. The same
// 40-byte layout on both backends.
struct CrossEntropySums {
  double loss_sum;
  unsigned long long valid_count;
  unsigned long long correct;
  unsigned long long bad_label_count;  // labels outside [0, classes) that are not ignore_index
  std::int32_t bad_label;              // one of them, for the error message
  std::int32_t padding;
};

// softmax_cross_entropy without waiting: adds this call's totals into `sums` (memory of the
// stream's device), ordered on the stream; the gradient is the same. The CPU twin throws for a
// bad label at once; the CUDA twin counts it in `sums` (it cannot throw without waiting), and
// cross_entropy_totals throws when the sums are read.
void softmax_cross_entropy_add(const Stream& stream, const float* logits,
                               const std::int32_t* labels, std::int64_t outer, std::int64_t classes,
                               std::int64_t inner, float label_smoothing, int ignore_index,
                               float seed_scale, CrossEntropyGradScale grad_scale,
                               float* grad_logits, CrossEntropySums* sums);

// into += from (each field; a bad label carried over), ordered on the stream: a micro-batch's
// sums into its step's once the micro-batch has completed.
void add_cross_entropy_sums(const Stream& stream, const CrossEntropySums* from,
                            CrossEntropySums* into);

// The totals of sums already copied to the host; throws mb::InvalidArgument naming a bad label
// they counted (classes and ignore_index for the message).
CrossEntropyTotals cross_entropy_totals(const CrossEntropySums& sums, std::int64_t classes,
                                        int ignore_index);

}  // namespace mb
