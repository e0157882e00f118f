// Fused softmax cross-entropy (loss and gradient in one pass) on CUDA. CPU twin:
// kernels/cpu/softmax_cross_entropy.h, which defines the math and the [outer, classes,
// inner] layout.
//
// Two launches on the stream: a label pass (valid count, and any label outside [0, classes)
// that is not ignore_index), then the fused pass, which reads the valid count from device
// memory to scale the gradient for mean reduction, so nothing waits for the host. Totals are
// reduced on the device into `totals`: counts with one integer atomic per block (exact), the
// loss through per-block partials summed by a third, one-block launch in a fixed order, so the
// loss is the same bits run to run (no float atomics); the caller copies the struct to the
// host once.
#pragma once

#include <cstdint>

#include "kernels/softmax_cross_entropy.h"
#include "runtime/stream.h"

namespace mb::cuda {

// The most blocks a loss launch uses (so the partials fit the totals struct).
inline constexpr int kCrossEntropyMaxBlocks = 4096;

struct CrossEntropyDeviceTotals {
  double loss_sum;
  unsigned long long valid_count;
  unsigned long long correct;
  unsigned long long bad_label_count;  // labels outside [0, classes), not ignore_index
  int bad_label;                       // one such label (any), for the error message
  int padding;
  double block_loss[kCrossEntropyMaxBlocks];  // per-block partial sums of the fused pass
};

// The twin of cpu::softmax_cross_entropy: the two launches into a workspace block of
// device totals, one copy of them to the host, and the bad-label check.
CrossEntropyTotals softmax_cross_entropy(const Stream& stream, const float* logits,
                                         const std::int32_t* labels, std::int64_t outer,
                                         std::int64_t classes, std::int64_t inner,
                                         float label_smoothing, int ignore_index, float seed_scale,
                                         CrossEntropyGradScale grad_scale, float* grad_logits);

// The two launches alone, asynchronous (benchmarks time this): `totals` is device memory,
// zeroed here. grad_logits may be null (loss only).
void softmax_cross_entropy_launch(const Stream& stream, const float* logits,
                                  const std::int32_t* labels, std::int64_t outer,
                                  std::int64_t classes, std::int64_t inner, float label_smoothing,
                                  int ignore_index, float seed_scale,
                                  CrossEntropyGradScale grad_scale, float* grad_logits,
                                  CrossEntropyDeviceTotals* totals);

// The twin of cpu::softmax_cross_entropy_add: the launches, then the totals added into `sums`
// (device memory) by the reduction's last thread; nothing waits.
void softmax_cross_entropy_add(const Stream& stream, const float* logits,
                               const std::int32_t* labels, std::int64_t outer, std::int64_t classes,
                               std::int64_t inner, float label_smoothing, int ignore_index,
                               float seed_scale, CrossEntropyGradScale grad_scale,
                               float* grad_logits, CrossEntropySums* sums);

// One thread adds `from` into `into` (both device memory).
void add_cross_entropy_sums(const Stream& stream, const CrossEntropySums* from,
                            CrossEntropySums* into);

}  // namespace mb::cuda
