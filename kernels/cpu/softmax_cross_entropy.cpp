// Fused softmax cross-entropy on the CPU (reference implementation).
#include "kernels/cpu/softmax_cross_entropy.h"
#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/error.h"

namespace mb::cpu {

std::int64_t count_valid_labels(const std::int32_t* labels, std::int64_t count,
                                std::int64_t classes, int ignore_index) {
  std::int64_t valid = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int32_t label = labels[i];
    if (label == ignore_index) continue;
    if (label < 0 || label >= classes) {
      MB_THROW(InvalidArgument, "softmax_cross_entropy: label ", label, " at position ", i,
               " is outside [0, ", classes, ") and is not ignore_index (", ignore_index,
               "). Fix: labels must be class indices in [0, C) with C = ", classes,
               " (the logits' channel count), or ignore_index");
    }
    ++valid;
  }
  return valid;
}

namespace {

constexpr std::int64_t kPositionBlock = 1024;

// The fused pass over labels already validated by count_valid_labels.
CrossEntropyTotals fused_pass(const float* logits, const std::int32_t* labels, std::int64_t outer,
                              std::int64_t classes, std::int64_t inner, float label_smoothing,
                              int ignore_index, float grad_scale, float* grad_logits) {
  const float smooth_per_class = label_smoothing / static_cast<float>(classes);
  const float on_target = 1.0f - label_smoothing;
  // Positions (n, i) in fixed blocks, each block's totals summed in order and the blocks'
  // in block order: the same loss for any thread count.
  const std::int64_t positions = outer * inner;
  const std::int64_t blocks = (positions + kPositionBlock - 1) / kPositionBlock;
  std::vector<CrossEntropyTotals> partial(static_cast<std::size_t>(blocks));
  parallel_for(blocks, positions * classes, [&](std::int64_t block) {
    CrossEntropyTotals& totals = partial[static_cast<std::size_t>(block)];
    const std::int64_t end = std::min(positions, (block + 1) * kPositionBlock);
    for (std::int64_t position = block * kPositionBlock; position < end; ++position) {
      const std::int64_t n = position / inner, i = position % inner;
      const float* z = logits + n * classes * inner + i;  // z[c * inner]
      float* g = grad_logits != nullptr ? grad_logits + n * classes * inner + i : nullptr;
      const std::int32_t label = labels[n * inner + i];
      if (label == ignore_index) {
        if (g != nullptr) {
          for (std::int64_t c = 0; c < classes; ++c) g[c * inner] = 0.0f;
        }
        continue;
      }
      float max_value = z[0];
      std::int64_t argmax = 0;
      float sum_logits = 0.0f;
      for (std::int64_t c = 0; c < classes; ++c) {
        const float v = z[c * inner];
        if (v > max_value) {
          max_value = v;
          argmax = c;
        }
        sum_logits += v;
      }
      float sum_exp = 0.0f;
      for (std::int64_t c = 0; c < classes; ++c) sum_exp += std::exp(z[c * inner] - max_value);
      const float log_sum_exp = max_value + std::log(sum_exp);
      const float loss = log_sum_exp - on_target * z[label * inner] - smooth_per_class * sum_logits;
      totals.loss_sum += static_cast<double>(loss);
      totals.valid_count += 1;
      totals.correct += argmax == label ? 1 : 0;
      if (g != nullptr) {
        const float inv_sum = 1.0f / sum_exp;
        for (std::int64_t c = 0; c < classes; ++c) {
          const float p = std::exp(z[c * inner] - max_value) * inv_sum;
          const float target = (c == label ? on_target : 0.0f) + smooth_per_class;
          g[c * inner] = grad_scale * (p - target);
        }
      }
    }
  });
  CrossEntropyTotals totals;
  for (const CrossEntropyTotals& block : partial) {
    totals.loss_sum += block.loss_sum;
    totals.valid_count += block.valid_count;
    totals.correct += block.correct;
  }
  return totals;
}

}  // namespace

CrossEntropyTotals softmax_cross_entropy(const Stream& /*stream*/, const float* logits,
                                         const std::int32_t* labels, std::int64_t outer,
                                         std::int64_t classes, std::int64_t inner,
                                         float label_smoothing, int ignore_index, float seed_scale,
                                         CrossEntropyGradScale grad_scale, float* grad_logits) {
  const std::int64_t valid = count_valid_labels(labels, outer * inner, classes, ignore_index);
  float scale = seed_scale;
  if (grad_scale == CrossEntropyGradScale::Mean) {
    scale = valid > 0 ? seed_scale / static_cast<float>(valid) : 0.0f;
  }
  return fused_pass(logits, labels, outer, classes, inner, label_smoothing, ignore_index, scale,
                    grad_logits);
}

void softmax_cross_entropy_add(const Stream& stream, const float* logits,
                               const std::int32_t* labels, std::int64_t outer, std::int64_t classes,
                               std::int64_t inner, float label_smoothing, int ignore_index,
                               float seed_scale, CrossEntropyGradScale grad_scale,
                               float* grad_logits, CrossEntropySums* sums) {
  const CrossEntropyTotals totals =
      cpu::softmax_cross_entropy(stream, logits, labels, outer, classes, inner, label_smoothing,
                                 ignore_index, seed_scale, grad_scale, grad_logits);
  sums->loss_sum += totals.loss_sum;
  sums->valid_count += static_cast<unsigned long long>(totals.valid_count);
  sums->correct += static_cast<unsigned long long>(totals.correct);
}

void add_cross_entropy_sums(const Stream& /*stream*/, const CrossEntropySums* from,
                            CrossEntropySums* into) {
  into->loss_sum += from->loss_sum;
  into->valid_count += from->valid_count;
  into->correct += from->correct;
  if (from->bad_label_count > 0) {
    into->bad_label_count += from->bad_label_count;
    into->bad_label = from->bad_label;
  }
}

}  // namespace mb::cpu
