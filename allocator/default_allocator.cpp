// The default allocators and their installation into runtime's registry.
#include "allocator/default_allocator.h"

#include <cstdlib>
#include <string>

#include "allocator/passthrough_allocator.h"
#include "allocator/pool_allocator.h"
#include "runtime/allocator_registry.h"

namespace mb {
namespace {

bool no_cache_requested() {
  const char* value = std::getenv("MB_ALLOC_NO_CACHE");
  return value != nullptr && std::string(value) == "1";
}

}  // namespace

std::shared_ptr<Allocator> make_default_allocator(const Device& device, std::size_t capacity) {
  require_device(device);
  std::unique_ptr<MemoryResource> resource =
      device.is_cpu() ? make_host_memory_resource() : make_cuda_memory_resource(device.index());
  if (no_cache_requested()) {
    return std::make_shared<PassThroughAllocator>(std::move(resource), capacity);
  }
  PoolOptions options;
  options.capacity = capacity;  // 0: the pool picks the default (device free minus a margin)
  return std::make_shared<PoolAllocator>(std::move(resource), options);
}

void install_default_allocators() {
  set_allocator_factory([](const Device& device) { return make_default_allocator(device); });
}

}  // namespace mb
