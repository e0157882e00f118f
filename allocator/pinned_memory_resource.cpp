// Page-locked host memory as a MemoryResource, for the data loader's staging buffers:
// cudaHostAlloc makes host-to-device copies asynchronous and faster. Without a device it
// falls back to aligned pageable memory, so CPU runs work unchanged. Built only with the
// CUDA backend; no_cuda_memory_resource.cpp stands in otherwise.
#include <cstdlib>
#include <limits>

#include "allocator/host_memory.h"
#include "runtime/memory_resource.h"

#include <cuda_runtime.h>

namespace mb {
namespace {

std::size_t aligned_size(std::size_t bytes) {
  std::size_t alignment = MemoryResource::kSegmentAlignment;
  std::size_t size = (bytes + alignment - 1) / alignment * alignment;
  return size == 0 ? alignment : size;
}

class PinnedHostMemoryResource final : public MemoryResource {
 public:
  explicit PinnedHostMemoryResource(bool pinned) : pinned_(pinned) {}

  void* reserve(std::size_t bytes) override {
    if (pinned_) {
      void* ptr = nullptr;
      if (cudaHostAlloc(&ptr, aligned_size(bytes), cudaHostAllocPortable) != cudaSuccess) {
        cudaGetLastError();  // not sticky: clear it so later calls are not blamed
        return nullptr;
      }
      return ptr;
    }
    return std::aligned_alloc(kSegmentAlignment, aligned_size(bytes));
  }
  void release(void* ptr, std::size_t) noexcept override {
    if (pinned_) {
      cudaFreeHost(ptr);
      return;
    }
    std::free(ptr);
  }
  MemoryKind kind() const override { return MemoryKind::Host; }
  int device_index() const override { return -1; }
  std::size_t device_free_bytes() const override { return host_available_bytes(); }
  std::string name() const override { return pinned_ ? "pinned-host" : "host"; }

 private:
  bool pinned_;
};

bool cuda_device_present() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

}  // namespace

std::unique_ptr<MemoryResource> make_pinned_host_memory_resource() {
  return std::make_unique<PinnedHostMemoryResource>(cuda_device_present());
}

}  // namespace mb
