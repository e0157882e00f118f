// Fused softmax cross-entropy on the CPU: the reference for
// kernels/cuda/softmax_cross_entropy.cu. Math and layout: kernels/softmax_cross_entropy.h.
#pragma once

#include <cstdint>

#include "kernels/softmax_cross_entropy.h"
#include "runtime/stream.h"

namespace mb::cpu {

// Counts labels != ignore_index; throws mb::InvalidArgument naming the first label outside
// [0, classes) that is not ignore_index.
std::int64_t count_valid_labels(const std::int32_t* labels, std::int64_t count,
                                std::int64_t classes, int ignore_index);

CrossEntropyTotals softmax_cross_entropy(const Stream& stream, const float* logits,
                                         const std::int32_t* labels, std::int64_t outer,
                                         std::int64_t classes, std::int64_t inner,
                                         float label_smoothing, int ignore_index, float seed_scale,
                                         CrossEntropyGradScale grad_scale, float* grad_logits);

void softmax_cross_entropy_add(const Stream& stream, const float* logits,
                               const std::int32_t* labels, std::int64_t outer, std::int64_t classes,
                               std::int64_t inner, float label_smoothing, int ignore_index,
                               float seed_scale, CrossEntropyGradScale grad_scale,
                               float* grad_logits, CrossEntropySums* sums);

void add_cross_entropy_sums(const Stream& stream, const CrossEntropySums* from,
                            CrossEntropySums* into);

}  // namespace mb::cpu
