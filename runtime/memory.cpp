// The per-device allocator registry.
#include "runtime/memory.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "allocator/passthrough_allocator.h"
#include "allocator/pool_allocator.h"
#include "runtime/error.h"

namespace mb {
namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<Allocator>> by_device;
};

Registry& registry() {
  // Leaked on purpose: tensors in static storage may be destroyed after main returns.
  static Registry* instance = new Registry();
  return *instance;
}

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

Allocator& allocator_for(const Device& device) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto& slot = r.by_device[device.str()];
  if (!slot) slot = make_default_allocator(device);
  return *slot;
}

std::shared_ptr<Allocator> set_allocator(const Device& device,
                                         std::shared_ptr<Allocator> allocator) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto& slot = r.by_device[device.str()];
  std::shared_ptr<Allocator> previous = std::move(slot);
  slot = std::move(allocator);
  return previous;
}

}  // namespace mb
