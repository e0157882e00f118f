// Gradient accumulation and norms over tables of device buffers (CUDA twins of
// kernels/cpu/accumulate_grads.cpp). Elementwise ops are one multi_tensor_apply launch
// (kernels/multi_tensor.h); norms are a per-chunk pass writing double partials, then one
// block per slot reducing its chunks in a fixed order, so results are deterministic.
#include "kernels/cuda/accumulate_grads.h"

#include <cmath>
#include <vector>

namespace mb::cuda {
namespace {

using detail::aligned16_on_device;
using detail::kChunkElements;
using detail::kMultiTensorThreads;

template <bool kOverwrite>
struct AccumulateOp {
  float factor;
  __device__ int context(const GradSlot&, int) const { return 0; }
  __device__ bool aligned(const GradSlot& slot) const {
    return aligned16_on_device(slot.grad) && aligned16_on_device(slot.accum);
  }
  __device__ void vec4(const GradSlot& slot, int, std::int64_t i) const {
    const float4 grad = *reinterpret_cast<const float4*>(slot.grad + i);
    float4* accum = reinterpret_cast<float4*>(slot.accum + i);
    float4 out;
    if (kOverwrite) {
      out = make_float4(factor * grad.x, factor * grad.y, factor * grad.z, factor * grad.w);
    } else {
      out = *accum;
      out.x += factor * grad.x;
      out.y += factor * grad.y;
      out.z += factor * grad.z;
      out.w += factor * grad.w;
    }
    *accum = out;
  }
  __device__ void scalar(const GradSlot& slot, int, std::int64_t i) const {
    if (kOverwrite) {
      slot.accum[i] = factor * slot.grad[i];
    } else {
      slot.accum[i] += factor * slot.grad[i];
    }
  }
};

// Sum of a double over the block; the result is valid in thread 0.
__device__ double block_sum(double value) {
  __shared__ double warp_sums[kMultiTensorThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kMultiTensorThreads / 32; ++w) total += warp_sums[w];
  }
  return total;
}

// partials[chunk] = sum of squares of that chunk. Squares of a float4 are summed in float,
// everything above in double.
__global__ void __launch_bounds__(kMultiTensorThreads)
    chunk_sum_of_squares_kernel(detail::SlotTable<ConstBufferSlot> table, double* partials) {
  const std::int64_t chunk = blockIdx.x;
  const int s = detail::find_slot(table, chunk);
  const ConstBufferSlot slot = table.slots[s];
  const std::int64_t begin = (chunk - table.chunk_begin[s]) * kChunkElements;
  const std::int64_t end = begin + kChunkElements < slot.size ? begin + kChunkElements : slot.size;
  double sum = 0.0;
  std::int64_t scalar_begin = begin;
  if (aligned16_on_device(slot.data)) {
    const std::int64_t vector_end = begin + ((end - begin) & ~std::int64_t{3});
    for (std::int64_t i = begin + 4 * threadIdx.x; i < vector_end; i += 4 * blockDim.x) {
      const float4 v = *reinterpret_cast<const float4*>(slot.data + i);
      sum += static_cast<double>(v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w);
    }
    scalar_begin = vector_end;
  }
  for (std::int64_t i = scalar_begin + threadIdx.x; i < end; i += blockDim.x) {
    const double v = slot.data[i];
    sum += v * v;
  }
  const double total = block_sum(sum);
  if (threadIdx.x == 0) partials[chunk] = total;
}

// sums[s] = sum of partials over slot s's chunks (0 for an empty slot); one block per slot.
__global__ void __launch_bounds__(kMultiTensorThreads)
    slot_sums_kernel(const std::int64_t* chunk_begin, const double* partials, double* sums) {
  const int s = blockIdx.x;
  double sum = 0.0;
  for (std::int64_t c = chunk_begin[s] + threadIdx.x; c < chunk_begin[s + 1]; c += blockDim.x) {
    sum += partials[c];
  }
  const double total = block_sum(sum);
  if (threadIdx.x == 0) sums[s] = total;
}

// *total = sums[0] + sums[1] + ... in slot order (the host's order in sum_of_squares).
__global__ void add_slot_sums_kernel(const double* sums, int count, double* total) {
  double sum = 0.0;
  for (int s = 0; s < count; ++s) sum += sums[s];
  *total = sum;
}

// Copies per-slot sums of squares to the host (synchronizing `stream`).
std::vector<double> slot_sums_on_host(const ConstBufferSlot* slots, int count,
                                      const Stream& stream) {
  std::vector<double> host(static_cast<std::size_t>(count), 0.0);
  if (count == 0) return host;
  DeviceBuffer sums(allocator_for(stream.device()), sizeof(double) * count, MemoryTag::Workspace,
                    stream.handle());
  per_slot_sum_of_squares(stream, slots, count, static_cast<double*>(sums.get()));
  copy_bytes(host.data(), sums.get(), sizeof(double) * count, stream);
  stream.synchronize();
  return host;
}

}  // namespace

void accumulate_grads(const Stream& stream, const GradSlot* slots, int count, float factor,
                      GradientMode mode) {
  mb::detail::check_grad_slots(slots, count, factor);
  if (mode == GradientMode::Overwrite) {
    detail::multi_tensor_apply(slots, count, AccumulateOp<true>{factor}, stream);
  } else {
    detail::multi_tensor_apply(slots, count, AccumulateOp<false>{factor}, stream);
  }
}

void per_slot_sum_of_squares(const Stream& stream, const ConstBufferSlot* slots, int count,
                             double* sums_device) {
  mb::detail::check_buffer_slots(slots, count, "per_slot_sum_of_squares");
  MB_CHECK(count == 0 || sums_device != nullptr,
           "per_slot_sum_of_squares: sums_device is null; pass a device array of `count` "
           "doubles");
  if (count == 0) return;
  DeviceBuffer storage;
  const detail::SlotTable<ConstBufferSlot> table =
      detail::upload_slot_table(slots, count, stream, storage);
  DeviceBuffer partials;
  if (table.total_chunks > 0) {
    partials = DeviceBuffer(allocator_for(stream.device()), sizeof(double) * table.total_chunks,
                            MemoryTag::Workspace, stream.handle());
    chunk_sum_of_squares_kernel<<<static_cast<unsigned>(table.total_chunks), kMultiTensorThreads, 0,
                                  cuda_stream(stream)>>>(table,
                                                         static_cast<double*>(partials.get()));
    MB_CUDA_LAUNCH_CHECK();
  }
  slot_sums_kernel<<<static_cast<unsigned>(count), kMultiTensorThreads, 0, cuda_stream(stream)>>>(
      table.chunk_begin, static_cast<const double*>(partials.get()), sums_device);
  MB_CUDA_LAUNCH_CHECK();
}

double sum_of_squares(const Stream& stream, const ConstBufferSlot* slots, int count) {
  mb::detail::check_buffer_slots(slots, count, "sum_of_squares");
  double total = 0.0;
  for (double sum : slot_sums_on_host(slots, count, stream)) total += sum;
  return total;
}

void sum_of_squares_into(const Stream& stream, const ConstBufferSlot* slots, int count,
                         double* total) {
  mb::detail::check_buffer_slots(slots, count, "sum_of_squares_into");
  DeviceBuffer sums;
  if (count > 0) {
    sums = DeviceBuffer(allocator_for(stream.device()), sizeof(double) * count,
                        MemoryTag::Workspace, stream.handle());
    per_slot_sum_of_squares(stream, slots, count, static_cast<double*>(sums.get()));
  }
  add_slot_sums_kernel<<<1, 1, 0, cuda_stream(stream)>>>(static_cast<const double*>(sums.get()),
                                                         count, total);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda
