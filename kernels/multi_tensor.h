// Slot tables shared by the engine's multi-tensor kernels (gradient accumulation, scaling,
// norms and optimizer updates) on both backends, plus the argument checks both backends run.
//
// A "slot" is a borrowed view of one tensor's flat fp32 storage: the engine builds one table
// per step (one entry per parameter) and hands it to a single call, so that on CUDA all
// tensors are processed by one fused launch instead of one launch per parameter.
//
// Note: the checks live here (inline) so that kernels/cpu and kernels/cuda reject exactly
// the same arguments with the same messages. The CUDA-only part at the end (compiled by nvcc
// only) is the machinery both kernels/cuda/accumulate_grads.cu and optimizers.cu launch
// through: the slot table is uploaded to a workspace block and split into fixed-size
// chunks, one thread block per chunk, so a single launch covers every tensor.
#pragma once

#include <cmath>
#include <cstdint>

#include "runtime/error.h"

// Functions shared by host and device code (only the LARS trust ratio today).
#ifdef __CUDACC__
#define MB_HOST_DEVICE __host__ __device__
#else
#define MB_HOST_DEVICE
#endif

namespace mb {

// accum = factor * grad (Overwrite) or accum += factor * grad (Accumulate).
struct GradSlot {
  const float* grad;
  float* accum;
  std::int64_t size;
};

struct ConstBufferSlot {
  const float* data;
  std::int64_t size;
};

// One parameter for an optimizer update. state0/state1 are the optimizer's per-element
// state (SGD/LARS: momentum buffer in state0; AdamW: m in state0, v in state1).
struct ParamSlot {
  float* param;
  const float* grad;
  float* state0;
  float* state1;
  std::int64_t size;
  float weight_decay;    // per-parameter: 0 for biases/BN
  bool use_trust_ratio;  // LARS: false for biases/BN (plain momentum SGD for those)
};

// PyTorch torch.optim.SGD semantics (coupled L2 weight decay). first_step: the momentum
// buffer was never initialized, so it is set to the gradient (PyTorch's `buf = clone(d_p)`).
struct SgdOptions {
  float lr;
  float momentum = 0.0f;
  float dampening = 0.0f;
  bool nesterov = false;
  float grad_scale = 1.0f;
  bool first_step = false;
};

// PyTorch torch.optim.AdamW semantics (decoupled weight decay); step is 1-based.
struct AdamWOptions {
  float lr;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  int step = 1;
  float grad_scale = 1.0f;
};

// LARS (You, Gitman & Ginsburg 2017), in the form of NVIDIA's and MLPerf's implementations;
// the formula is documented in kernels/optimizers.h.
struct LarsOptions {
  float lr;
  float momentum = 0.9f;
  float trust_coefficient = 0.001f;
  float eps = 1e-9f;
  float grad_scale = 1.0f;
};

namespace detail {

inline void check_slot_table(const void* slots, int count, const char* what) {
  MB_CHECK(count >= 0, what, ": slot count is ", count, "; pass the number of slots (>= 0)");
  MB_CHECK(count == 0 || slots != nullptr, what, ": slot table is null but count is ", count,
           "; pass a table of `count` slots");
}

inline void check_size(std::int64_t size, int index, const char* what) {
  MB_CHECK(size >= 0, what, ": slot ", index, " has negative size ", size,
           "; sizes are element counts (>= 0)");
}

inline void check_finite(float value, const char* name, const char* what) {
  MB_CHECK(std::isfinite(value), what, ": ", name, " is ", value,
           "; pass a finite value (a NaN/Inf here would corrupt every parameter)");
}

inline void check_grad_slots(const GradSlot* slots, int count, float factor) {
  check_slot_table(slots, count, "accumulate_grads");
  check_finite(factor, "factor", "accumulate_grads");
  for (int i = 0; i < count; ++i) {
    check_size(slots[i].size, i, "accumulate_grads");
    MB_CHECK(slots[i].size == 0 || (slots[i].grad != nullptr && slots[i].accum != nullptr),
             "accumulate_grads: slot ", i, " of size ", slots[i].size,
             " has a null grad or accum pointer; pass both buffers");
  }
}

template <typename Slot>
inline void check_buffer_slots(const Slot* slots, int count, const char* what) {
  check_slot_table(slots, count, what);
  for (int i = 0; i < count; ++i) {
    check_size(slots[i].size, i, what);
    MB_CHECK(slots[i].size == 0 || slots[i].data != nullptr, what, ": slot ", i, " of size ",
             slots[i].size, " has a null data pointer; pass the buffer");
  }
}

// Checks the pointers every update needs; state0/state1 only where the optimizer uses them.
inline void check_param_slots(const ParamSlot* slots, int count, bool needs_state0,
                              bool needs_state1, const char* what) {
  check_slot_table(slots, count, what);
  for (int i = 0; i < count; ++i) {
    const ParamSlot& slot = slots[i];
    check_size(slot.size, i, what);
    check_finite(slot.weight_decay, "weight_decay", what);
    MB_CHECK(slot.weight_decay >= 0.0f, what, ": slot ", i, " has weight_decay ", slot.weight_decay,
             "; weight decay must be >= 0");
    if (slot.size == 0) continue;
    MB_CHECK(slot.param != nullptr && slot.grad != nullptr, what, ": slot ", i, " of size ",
             slot.size, " has a null param or grad pointer; pass both buffers");
    MB_CHECK(!needs_state0 || slot.state0 != nullptr, what, ": slot ", i,
             " has no state0 buffer but this update keeps state there (momentum / first "
             "moment); allocate it (MemoryTag::Optimizer) and pass it");
    MB_CHECK(!needs_state1 || slot.state1 != nullptr, what, ": slot ", i,
             " has no state1 buffer but AdamW keeps its second moment there; allocate it "
             "(MemoryTag::Optimizer) and pass it");
  }
}

inline void check_sgd_options(const SgdOptions& o) {
  check_finite(o.lr, "lr", "sgd_update");
  MB_CHECK(o.lr >= 0.0f, "sgd_update: lr is ", o.lr, "; the learning rate must be >= 0");
  check_finite(o.momentum, "momentum", "sgd_update");
  check_finite(o.dampening, "dampening", "sgd_update");
  check_finite(o.grad_scale, "grad_scale", "sgd_update");
  MB_CHECK(o.momentum >= 0.0f, "sgd_update: momentum is ", o.momentum, "; it must be >= 0");
  MB_CHECK(!o.nesterov || (o.momentum > 0.0f && o.dampening == 0.0f),
           "sgd_update: Nesterov momentum requires momentum > 0 and dampening == 0 (got momentum ",
           o.momentum, ", dampening ", o.dampening, "); change one of them");
}

inline void check_adamw_options(const AdamWOptions& o) {
  check_finite(o.lr, "lr", "adamw_update");
  MB_CHECK(o.lr >= 0.0f, "adamw_update: lr is ", o.lr, "; the learning rate must be >= 0");
  check_finite(o.eps, "eps", "adamw_update");
  check_finite(o.grad_scale, "grad_scale", "adamw_update");
  MB_CHECK(o.beta1 >= 0.0f && o.beta1 < 1.0f && o.beta2 >= 0.0f && o.beta2 < 1.0f,
           "adamw_update: betas (", o.beta1, ", ", o.beta2, ") must lie in [0, 1)");
  MB_CHECK(o.eps >= 0.0f, "adamw_update: eps is ", o.eps, "; it must be >= 0");
  MB_CHECK(o.step >= 1, "adamw_update: step is ", o.step,
           "; steps are counted from 1 (the first update is step 1)");
}

inline void check_lars_options(const LarsOptions& o) {
  check_finite(o.lr, "lr", "lars_update");
  MB_CHECK(o.lr >= 0.0f, "lars_update: lr is ", o.lr, "; the learning rate must be >= 0");
  check_finite(o.momentum, "momentum", "lars_update");
  check_finite(o.trust_coefficient, "trust_coefficient", "lars_update");
  check_finite(o.eps, "eps", "lars_update");
  check_finite(o.grad_scale, "grad_scale", "lars_update");
  MB_CHECK(o.momentum >= 0.0f, "lars_update: momentum is ", o.momentum, "; it must be >= 0");
  MB_CHECK(o.trust_coefficient > 0.0f, "lars_update: trust_coefficient is ", o.trust_coefficient,
           "; it must be > 0 (typical: 0.001)");
  MB_CHECK(o.eps >= 0.0f, "lars_update: eps is ", o.eps, "; it must be >= 0");
}

// The LARS layer-wise learning rate from the norms of w and of the scaled gradient g; the
// one formula both backends use. NaN norms propagate (they are not caught by the == 0 test).
MB_HOST_DEVICE inline double lars_local_lr(double weight_norm, double grad_norm,
                                           double weight_decay, double trust_coefficient,
                                           double eps) {
  if (weight_norm == 0.0 || grad_norm == 0.0) return 1.0;
  return trust_coefficient * weight_norm / (grad_norm + weight_decay * weight_norm + eps);
}

}  // namespace detail
}  // namespace mb

#ifdef __CUDACC__
#include <cuda_runtime.h>

#include <climits>
#include <cstring>
#include <vector>

#include "kernels/cuda/launch.cuh"
#include "runtime/allocator.h"
#include "runtime/allocator_registry.h"

namespace mb::cuda::detail {

constexpr int kMultiTensorThreads = 256;
// Elements per chunk (one thread block): 8 float4 per thread. A multiple of 4, so every
// chunk of a 16-byte aligned tensor starts 16-byte aligned.
constexpr std::int64_t kChunkElements = 4 * 8 * kMultiTensorThreads;

// The device-side view of an uploaded table: the slots, and chunk_begin[s] = the first
// chunk of slot s (chunk_begin[count] = total_chunks; empty slots own no chunk).
template <typename Slot>
struct SlotTable {
  const Slot* slots;
  const std::int64_t* chunk_begin;
  int count;
  std::int64_t total_chunks;
};

// Copies `slots` (host structs holding device pointers) and their chunk offsets into one
// workspace block owned by `storage`, stream-ordered on `stream`. The pool reuses the block
// only in stream order after `storage` is freed, so the caller may free it right after its
// launches. Pageable-source cudaMemcpyAsync stages the bytes before returning, so the host
// vector may die at once.
template <typename Slot>
SlotTable<Slot> upload_slot_table(const Slot* slots, int count, const Stream& stream,
                                  DeviceBuffer& storage) {
  const std::size_t slot_bytes = (sizeof(Slot) * count + 7) / 8 * 8;
  const std::size_t bytes = slot_bytes + sizeof(std::int64_t) * (count + 1);
  std::vector<unsigned char> host(bytes);
  std::memcpy(host.data(), slots, sizeof(Slot) * count);
  std::vector<std::int64_t> chunk_begin(count + 1, 0);
  for (int s = 0; s < count; ++s) {
    chunk_begin[s + 1] = chunk_begin[s] + (slots[s].size + kChunkElements - 1) / kChunkElements;
  }
  std::memcpy(host.data() + slot_bytes, chunk_begin.data(), sizeof(std::int64_t) * (count + 1));
  MB_CHECK(chunk_begin[count] <= INT_MAX, "multi-tensor launch: ", chunk_begin[count],
           " chunks of ", kChunkElements, " elements exceed one grid; split the slot table");
  storage =
      DeviceBuffer(allocator_for(stream.device()), bytes, MemoryTag::Workspace, stream.handle());
  copy_bytes(storage.get(), host.data(), bytes, stream);
  auto* base = static_cast<unsigned char*>(storage.get());
  return SlotTable<Slot>{reinterpret_cast<const Slot*>(base),
                         reinterpret_cast<const std::int64_t*>(base + slot_bytes), count,
                         chunk_begin[count]};
}

// The slot owning `chunk`: the last s with chunk_begin[s] <= chunk (binary search).
template <typename Slot>
__device__ inline int find_slot(const SlotTable<Slot>& table, std::int64_t chunk) {
  int low = 0;
  int high = table.count;
  while (high - low > 1) {
    const int middle = (low + high) / 2;
    if (table.chunk_begin[middle] <= chunk) {
      low = middle;
    } else {
      high = middle;
    }
  }
  return low;
}

__device__ inline bool aligned16_on_device(const void* pointer) {
  return (reinterpret_cast<std::uintptr_t>(pointer) & 15u) == 0;
}

// One thread block per chunk. Op provides:
//   context(slot, s)        per-slot value computed once per block (e.g. LARS local lr)
//   aligned(slot)           whether every pointer it touches is 16-byte aligned
//   vec4(slot, ctx, i)      elements i..i+3 (i a multiple of 4)
//   scalar(slot, ctx, i)    element i
template <typename Slot, typename Op>
__global__ void __launch_bounds__(kMultiTensorThreads)
    multi_tensor_apply_kernel(SlotTable<Slot> table, Op op) {
  const std::int64_t chunk = blockIdx.x;
  const int s = find_slot(table, chunk);
  const Slot slot = table.slots[s];
  const auto context = op.context(slot, s);
  const std::int64_t begin = (chunk - table.chunk_begin[s]) * kChunkElements;
  const std::int64_t end = begin + kChunkElements < slot.size ? begin + kChunkElements : slot.size;
  std::int64_t scalar_begin = begin;
  if (op.aligned(slot)) {
    const std::int64_t vector_end = begin + ((end - begin) & ~std::int64_t{3});
    for (std::int64_t i = begin + 4 * threadIdx.x; i < vector_end; i += 4 * blockDim.x) {
      op.vec4(slot, context, i);
    }
    scalar_begin = vector_end;
  }
  for (std::int64_t i = scalar_begin + threadIdx.x; i < end; i += blockDim.x) {
    op.scalar(slot, context, i);
  }
}

// Uploads the table and launches Op over every element of every slot: one launch.
template <typename Slot, typename Op>
void multi_tensor_apply(const Slot* slots, int count, const Op& op, const Stream& stream) {
  if (count == 0) return;
  DeviceBuffer storage;
  const SlotTable<Slot> table = upload_slot_table(slots, count, stream, storage);
  if (table.total_chunks == 0) return;
  multi_tensor_apply_kernel<Slot, Op>
      <<<static_cast<unsigned>(table.total_chunks), kMultiTensorThreads, 0, cuda_stream(stream)>>>(
          table, op);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::cuda::detail
#endif  // __CUDACC__
