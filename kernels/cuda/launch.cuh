// What every CUDA launcher in kernels/cuda shares: the stream of a Stream, grid sizes for
// grid-stride loops, and the alignment test for float4 paths.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace mb::cuda {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU many times over; grid-stride loops cover the rest.
constexpr std::int64_t kMaxBlocks = 65535LL * 8;

inline cudaStream_t cuda_stream(const Stream& stream) {
  return static_cast<cudaStream_t>(stream.handle());
}

// Blocks for a grid-stride loop over `work_items` items, `items_per_block` per block per
// pass: at least 1, at most `max_blocks`.
inline unsigned grid_for(std::int64_t work_items, std::int64_t items_per_block = kThreads,
                         std::int64_t max_blocks = kMaxBlocks) {
  const std::int64_t blocks = (work_items + items_per_block - 1) / items_per_block;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(max_blocks, blocks)));
}

// True for 16-byte aligned pointers (null counts as aligned: it is never dereferenced).
inline bool aligned16(const void* pointer) {
  return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0;
}

}  // namespace mb::cuda
