// Parallel loops for the CPU kernels (OpenMP). The iteration space is cut into blocks by
// its size alone, so a block's arithmetic never depends on how many threads run; threads
// only decide who computes which block. Small loops stay on the calling thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace mb::cpu {

// OpenBLAS to one thread before the first parallel kernel (kernels/threads.cpp).
void ensure_threads_configured();

// The block of an elementwise loop: fixed, like every cut here.
inline constexpr std::int64_t kElementBlock = std::int64_t{1} << 14;

// Below this much work (elements touched) a parallel region costs more than it saves.
inline constexpr std::int64_t kMinParallelWork = std::int64_t{1} << 15;

// body(i) for every i in [0, count), each i on one thread; `work` is the total number of
// elements the loop touches, to leave small loops serial.
template <typename Body>
void parallel_for(std::int64_t count, std::int64_t work, Body&& body) {
  if (count <= 1 || work < kMinParallelWork) {
    for (std::int64_t i = 0; i < count; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < count; ++i) body(i);
}

// body(begin, end) over [0, count) in blocks of `block` (the last may be shorter); `work`
// as for parallel_for.
template <typename Body>
void parallel_blocks(std::int64_t count, std::int64_t block, std::int64_t work, Body&& body) {
  const std::int64_t blocks = (count + block - 1) / block;
  parallel_for(blocks, work,
               [&](std::int64_t b) { body(b * block, std::min(count, (b + 1) * block)); });
}

// An elementwise loop over [0, count) in fixed blocks: body(begin, end).
template <typename Body>
void parallel_elements(std::int64_t count, Body&& body) {
  parallel_blocks(count, kElementBlock, count, body);
}

// The sum of partial(begin, end) over fixed blocks of [0, count), added in block order: a
// reduction whose rounding depends on the data and the block size only.
template <typename Partial>
double parallel_sum(std::int64_t count, Partial&& partial) {
  const std::int64_t blocks = (count + kElementBlock - 1) / kElementBlock;
  if (blocks <= 1) return count > 0 ? partial(0, count) : 0.0;
  std::vector<double> sums(static_cast<std::size_t>(blocks));
  parallel_for(blocks, count, [&](std::int64_t b) {
    sums[static_cast<std::size_t>(b)] =
        partial(b * kElementBlock, std::min(count, (b + 1) * kElementBlock));
  });
  double total = 0.0;
  for (const double sum : sums) total += sum;
  return total;
}

}  // namespace mb::cpu
