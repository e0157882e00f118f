// Aligned host memory as a MemoryResource: the pool's backing store on the CPU backend.
#include <cstdlib>
#include <limits>
#include <new>

#include "runtime/memory_resource.h"

namespace mb {
namespace {

class HostMemoryResource final : public MemoryResource {
 public:
  void* reserve(std::size_t bytes) override {
    std::size_t size = (bytes + kSegmentAlignment - 1) / kSegmentAlignment * kSegmentAlignment;
    return std::aligned_alloc(kSegmentAlignment, size == 0 ? kSegmentAlignment : size);
  }
  void release(void* ptr, std::size_t) noexcept override { std::free(ptr); }
  MemoryKind kind() const override { return MemoryKind::Host; }
  int device_index() const override { return -1; }
  std::size_t device_free_bytes() const override { return std::numeric_limits<std::size_t>::max(); }
  std::string name() const override { return "host"; }
};

}  // namespace

std::unique_ptr<MemoryResource> make_host_memory_resource() {
  return std::make_unique<HostMemoryResource>();
}

}  // namespace mb
