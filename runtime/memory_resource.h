// Where the allocator's segments come from: device memory (cudaMalloc) or aligned host
// memory. The pool above runs identically over both, so CI tests it over host memory.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace mb {

// An opaque stream: a cudaStream_t on CUDA, unused (nullptr) on the host. Kept opaque so
// that allocator headers need no CUDA headers.
using StreamHandle = void*;

enum class MemoryKind { Host, Cuda };

class MemoryResource {
 public:
  virtual ~MemoryResource() = default;

  // Reserves `bytes` aligned to at least kSegmentAlignment. Returns nullptr when the
  // underlying memory is exhausted (never throws for that: the pool decides what to do).
  virtual void* reserve(std::size_t bytes) = 0;
  virtual void release(void* ptr, std::size_t bytes) noexcept = 0;

  virtual MemoryKind kind() const = 0;
  virtual int device_index() const = 0;  // -1 for host memory
  // Bytes the underlying memory could still hand out: cudaMemGetInfo's free on CUDA, what
  // the kernel and the cgroup allow on the host; SIZE_MAX when unknown.
  virtual std::size_t device_free_bytes() const = 0;
  virtual std::string name() const = 0;  // "host", "cuda:0"

  // Stream-ordered reuse: an event recorded on `stream` now; completed once the stream has
  // passed this point. Host streams do not exist, so the defaults say "already done".
  virtual void* record_event(StreamHandle /*stream*/) { return nullptr; }
  virtual bool event_completed(void* /*event*/) { return true; }
  virtual void destroy_event(void* /*event*/) noexcept {}

  static constexpr std::size_t kSegmentAlignment = 256;
};

std::unique_ptr<MemoryResource> make_host_memory_resource();
// Page-locked host memory (cudaHostAlloc) when CUDA is built and a device exists, otherwise
// aligned pageable host memory (name() says which: "pinned-host" or "host").
std::unique_ptr<MemoryResource> make_pinned_host_memory_resource();
// Throws mb::CudaError (with the reason) if CUDA is not built in or no such device exists.
std::unique_ptr<MemoryResource> make_cuda_memory_resource(int device_index);

}  // namespace mb
