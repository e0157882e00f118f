// Fused softmax cross-entropy kernels and their host launcher.
//
// Layout [outer, classes, inner]. For classification (inner == 1) one warp owns a row: the
// lanes stride over the classes, and max / argmax / sums are combined with warp shuffles.
// For segmentation (inner > 1) one thread owns a pixel and loops over the classes with
// stride inner; neighbouring threads read neighbouring pixels, so the loads are coalesced.
// Per-element losses are summed in double per thread, then per block into the block's partial,
// then the partials in a fixed order by one block: deterministic (no float atomics).
#include "kernels/cuda/softmax_cross_entropy.h"

#include <algorithm>
#include <cstddef>

#include "kernels/cuda/launch.cuh"
#include "runtime/allocator.h"
#include "runtime/allocator_registry.h"

namespace mb::cuda {
namespace {

constexpr int kWarps = kThreads / 32;
// Each block writes one partial and adds its count with one atomic.
constexpr std::int64_t kLossMaxBlocks = kCrossEntropyMaxBlocks;
// The totals less the partials: what is zeroed before and read back after.
constexpr std::size_t kTotalsHeaderBytes = offsetof(CrossEntropyDeviceTotals, block_loss);
static_assert(kTotalsHeaderBytes == sizeof(CrossEntropySums) &&
                  offsetof(CrossEntropyDeviceTotals, valid_count) ==
                      offsetof(CrossEntropySums, valid_count) &&
                  offsetof(CrossEntropyDeviceTotals, correct) ==
                      offsetof(CrossEntropySums, correct) &&
                  offsetof(CrossEntropyDeviceTotals, bad_label_count) ==
                      offsetof(CrossEntropySums, bad_label_count) &&
                  offsetof(CrossEntropyDeviceTotals, bad_label) ==
                      offsetof(CrossEntropySums, bad_label),
              "the device totals' header is a CrossEntropySums");

unsigned loss_grid(std::int64_t work_items, std::int64_t items_per_block) {
  return grid_for(work_items, items_per_block, kLossMaxBlocks);
}

template <typename T>
__device__ T warp_sum(T value) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Sums (loss, correct) over the block: the loss into the block's partial, the count into the
// totals; every thread calls it.
__device__ void block_accumulate(double loss, unsigned long long correct,
                                 CrossEntropyDeviceTotals* totals) {
  __shared__ double shared_loss[kWarps];
  __shared__ unsigned long long shared_correct[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  loss = warp_sum(loss);
  correct = warp_sum(correct);
  if (lane == 0) {
    shared_loss[warp] = loss;
    shared_correct[warp] = correct;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double block_loss = 0.0;
    unsigned long long block_correct = 0;
    for (int w = 0; w < kWarps; ++w) {
      block_loss += shared_loss[w];
      block_correct += shared_correct[w];
    }
    totals->block_loss[blockIdx.x] = block_loss;
    atomicAdd(&totals->correct, block_correct);
  }
}

// *into += *from, field by field; a bad label carried over. One thread.
__device__ void add_sums(const CrossEntropySums* from, CrossEntropySums* into) {
  into->loss_sum += from->loss_sum;
  into->valid_count += from->valid_count;
  into->correct += from->correct;
  if (from->bad_label_count > 0) {
    into->bad_label_count += from->bad_label_count;
    into->bad_label = from->bad_label;
  }
}

// totals->loss_sum = the sum of the first `blocks` partials, in an order fixed by `blocks`:
// each thread a strided subset in index order, then a tree over the threads. With `into`, the
// call's totals are then added into it (one thread: sums of several calls add in call order).
__global__ void sum_block_losses_kernel(CrossEntropyDeviceTotals* totals, int blocks,
                                        CrossEntropySums* into) {
  __shared__ double shared[kThreads];
  double sum = 0.0;
  for (int i = threadIdx.x; i < blocks; i += kThreads) sum += totals->block_loss[i];
  shared[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    totals->loss_sum = shared[0];
    // The totals' header is a CrossEntropySums (static_assert above).
    if (into != nullptr) add_sums(reinterpret_cast<const CrossEntropySums*>(totals), into);
  }
}

__global__ void add_sums_kernel(const CrossEntropySums* from, CrossEntropySums* into) {
  add_sums(from, into);
}

__global__ void count_labels_kernel(const std::int32_t* labels, std::int64_t count,
                                    std::int64_t classes, int ignore_index,
                                    CrossEntropyDeviceTotals* totals) {
  __shared__ unsigned long long shared_valid[kWarps];
  unsigned long long valid = 0;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int label = labels[i];
    if (label == ignore_index) continue;
    if (label < 0 || label >= classes) {
      atomicAdd(&totals->bad_label_count, 1ULL);
      atomicExch(&totals->bad_label, label);
    } else {
      ++valid;
    }
  }
  valid = warp_sum(valid);
  if ((threadIdx.x & 31) == 0) shared_valid[threadIdx.x >> 5] = valid;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long block_valid = 0;
    for (int w = 0; w < kWarps; ++w) block_valid += shared_valid[w];
    atomicAdd(&totals->valid_count, block_valid);
  }
}

__device__ float gradient_scale(float seed_scale, bool mean, const CrossEntropyDeviceTotals* t) {
  if (!mean) return seed_scale;
  const unsigned long long valid = t->valid_count;
  return valid > 0 ? seed_scale / static_cast<float>(valid) : 0.0f;
}

__device__ bool label_is_valid(int label, int ignore_index, std::int64_t classes) {
  return label != ignore_index && label >= 0 && label < classes;
}

// inner == 1: one warp per row.
__global__ void cross_entropy_rows_kernel(const float* logits, const std::int32_t* labels,
                                          std::int64_t rows, std::int64_t classes,
                                          float smooth_per_class, float on_target, int ignore_index,
                                          float seed_scale, bool mean, float* grad,
                                          CrossEntropyDeviceTotals* totals) {
  const int lane = threadIdx.x & 31;
  const std::int64_t warps_total = static_cast<std::int64_t>(gridDim.x) * kWarps;
  const float scale = gradient_scale(seed_scale, mean, totals);
  double loss_acc = 0.0;
  unsigned long long correct_acc = 0;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
       row < rows; row += warps_total) {
    const float* z = logits + row * classes;
    float* g = grad != nullptr ? grad + row * classes : nullptr;
    const int label = labels[row];
    if (!label_is_valid(label, ignore_index, classes)) {
      if (g != nullptr) {
        for (std::int64_t c = lane; c < classes; c += 32) g[c] = 0.0f;
      }
      continue;
    }
    float max_value = -INFINITY;
    long long argmax = classes;
    float sum_logits = 0.0f;
    for (std::int64_t c = lane; c < classes; c += 32) {
      const float v = z[c];
      if (v > max_value || argmax == classes) {
        max_value = v;
        argmax = c;
      }
      sum_logits += v;
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float other_value = __shfl_xor_sync(0xffffffffu, max_value, offset);
      const long long other_index = __shfl_xor_sync(0xffffffffu, argmax, offset);
      if (other_value > max_value || (other_value == max_value && other_index < argmax)) {
        max_value = other_value;
        argmax = other_index;
      }
    }
    sum_logits = warp_sum(sum_logits);
    float sum_exp = 0.0f;
    for (std::int64_t c = lane; c < classes; c += 32) sum_exp += expf(z[c] - max_value);
    sum_exp = warp_sum(sum_exp);
    if (lane == 0) {
      const float log_sum_exp = max_value + logf(sum_exp);
      loss_acc +=
          static_cast<double>(log_sum_exp - on_target * z[label] - smooth_per_class * sum_logits);
      correct_acc += argmax == label ? 1ULL : 0ULL;
    }
    if (g != nullptr) {
      const float inv_sum = 1.0f / sum_exp;
      for (std::int64_t c = lane; c < classes; c += 32) {
        const float p = expf(z[c] - max_value) * inv_sum;
        const float target = (c == label ? on_target : 0.0f) + smooth_per_class;
        g[c] = scale * (p - target);
      }
    }
  }
  block_accumulate(loss_acc, correct_acc, totals);
}

// inner > 1: one thread per (outer, inner) position.
__global__ void cross_entropy_pixels_kernel(const float* logits, const std::int32_t* labels,
                                            std::int64_t outer, std::int64_t classes,
                                            std::int64_t inner, float smooth_per_class,
                                            float on_target, int ignore_index, float seed_scale,
                                            bool mean, float* grad,
                                            CrossEntropyDeviceTotals* totals) {
  const float scale = gradient_scale(seed_scale, mean, totals);
  double loss_acc = 0.0;
  unsigned long long correct_acc = 0;
  const std::int64_t positions = outer * inner;
  for (std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       idx < positions; idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t n = idx / inner;
    const std::int64_t i = idx - n * inner;
    const float* z = logits + n * classes * inner + i;
    float* g = grad != nullptr ? grad + n * classes * inner + i : nullptr;
    const int label = labels[idx];
    if (!label_is_valid(label, ignore_index, classes)) {
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
    for (std::int64_t c = 0; c < classes; ++c) sum_exp += expf(z[c * inner] - max_value);
    const float log_sum_exp = max_value + logf(sum_exp);
    loss_acc += static_cast<double>(log_sum_exp - on_target * z[label * inner] -
                                    smooth_per_class * sum_logits);
    correct_acc += argmax == label ? 1ULL : 0ULL;
    if (g != nullptr) {
      const float inv_sum = 1.0f / sum_exp;
      for (std::int64_t c = 0; c < classes; ++c) {
        const float p = expf(z[c * inner] - max_value) * inv_sum;
        const float target = (c == label ? on_target : 0.0f) + smooth_per_class;
        g[c * inner] = scale * (p - target);
      }
    }
  }
  block_accumulate(loss_acc, correct_acc, totals);
}

// The launches of softmax_cross_entropy_launch; with `into`, the totals are added into it too.
void launch_passes(const Stream& where, const float* logits, const std::int32_t* labels,
                   std::int64_t outer, std::int64_t classes, std::int64_t inner,
                   float label_smoothing, int ignore_index, float seed_scale,
                   CrossEntropyGradScale grad_scale, float* grad_logits,
                   CrossEntropyDeviceTotals* totals, CrossEntropySums* into) {
  const cudaStream_t stream = cuda_stream(where);
  MB_CHECK(outer >= 0 && inner >= 1 && classes >= 1, "softmax_cross_entropy: bad sizes (outer ",
           outer, ", classes ", classes, ", inner ", inner, ")");
  MB_CHECK(label_smoothing >= 0.0f && label_smoothing <= 1.0f,
           "softmax_cross_entropy: label_smoothing ", label_smoothing, " is outside [0, 1]");
  MB_CHECK(totals != nullptr, "softmax_cross_entropy: null totals");
  // The counts and the sum; every block of the fused pass writes its own partial.
  MB_CUDA_CHECK(cudaMemsetAsync(totals, 0, kTotalsHeaderBytes, stream));
  const std::int64_t positions = outer * inner;
  if (positions == 0) return;  // nothing to add into `into` either
  MB_CHECK(logits != nullptr && labels != nullptr, "softmax_cross_entropy: null pointer");
  count_labels_kernel<<<loss_grid(positions, kThreads), kThreads, 0, stream>>>(
      labels, positions, classes, ignore_index, totals);
  MB_CUDA_LAUNCH_CHECK();
  const float smooth_per_class = label_smoothing / static_cast<float>(classes);
  const float on_target = 1.0f - label_smoothing;
  const bool mean = grad_scale == CrossEntropyGradScale::Mean;
  const unsigned blocks = inner == 1 ? loss_grid(outer, kWarps) : loss_grid(positions, kThreads);
  if (inner == 1) {
    cross_entropy_rows_kernel<<<blocks, kThreads, 0, stream>>>(
        logits, labels, outer, classes, smooth_per_class, on_target, ignore_index, seed_scale, mean,
        grad_logits, totals);
  } else {
    cross_entropy_pixels_kernel<<<blocks, kThreads, 0, stream>>>(
        logits, labels, outer, classes, inner, smooth_per_class, on_target, ignore_index,
        seed_scale, mean, grad_logits, totals);
  }
  MB_CUDA_LAUNCH_CHECK();
  sum_block_losses_kernel<<<1, kThreads, 0, stream>>>(totals, static_cast<int>(blocks), into);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace

void softmax_cross_entropy_launch(const Stream& stream, const float* logits,
                                  const std::int32_t* labels, std::int64_t outer,
                                  std::int64_t classes, std::int64_t inner, float label_smoothing,
                                  int ignore_index, float seed_scale,
                                  CrossEntropyGradScale grad_scale, float* grad_logits,
                                  CrossEntropyDeviceTotals* totals) {
  launch_passes(stream, logits, labels, outer, classes, inner, label_smoothing, ignore_index,
                seed_scale, grad_scale, grad_logits, totals, nullptr);
}

void softmax_cross_entropy_add(const Stream& stream, const float* logits,
                               const std::int32_t* labels, std::int64_t outer, std::int64_t classes,
                               std::int64_t inner, float label_smoothing, int ignore_index,
                               float seed_scale, CrossEntropyGradScale grad_scale,
                               float* grad_logits, CrossEntropySums* sums) {
  // The call's partials in a workspace block, freed in stream order (the next call on this
  // stream may reuse it only after these launches).
  DeviceBuffer totals_buffer(allocator_for(stream.device()), sizeof(CrossEntropyDeviceTotals),
                             MemoryTag::Workspace, stream.handle());
  launch_passes(stream, logits, labels, outer, classes, inner, label_smoothing, ignore_index,
                seed_scale, grad_scale, grad_logits,
                static_cast<CrossEntropyDeviceTotals*>(totals_buffer.get()), sums);
}

void add_cross_entropy_sums(const Stream& stream, const CrossEntropySums* from,
                            CrossEntropySums* into) {
  add_sums_kernel<<<1, 1, 0, cuda_stream(stream)>>>(from, into);
  MB_CUDA_LAUNCH_CHECK();
}

CrossEntropyTotals softmax_cross_entropy(const Stream& stream, const float* logits,
                                         const std::int32_t* labels, std::int64_t outer,
                                         std::int64_t classes, std::int64_t inner,
                                         float label_smoothing, int ignore_index, float seed_scale,
                                         CrossEntropyGradScale grad_scale, float* grad_logits) {
  DeviceBuffer totals_buffer(allocator_for(stream.device()), sizeof(CrossEntropyDeviceTotals),
                             MemoryTag::Workspace, stream.handle());
  auto* device_totals = static_cast<CrossEntropyDeviceTotals*>(totals_buffer.get());
  softmax_cross_entropy_launch(stream, logits, labels, outer, classes, inner, label_smoothing,
                               ignore_index, seed_scale, grad_scale, grad_logits, device_totals);
  // The header of the device totals has CrossEntropySums' layout (static_assert above).
  CrossEntropySums sums{};
  copy_bytes(&sums, device_totals, kTotalsHeaderBytes, stream);
  stream.synchronize();
  return cross_entropy_totals(sums, classes, ignore_index);
}

}  // namespace mb::cuda
