// The per-device allocator registry.
#include "runtime/allocator_registry.h"

#include <map>
#include <mutex>
#include <string>

#include "runtime/error.h"

namespace mb {
namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<Allocator>> by_device;
  AllocatorFactory factory;
};

Registry& registry() {
  // Leaked on purpose: tensors in static storage may be destroyed after main returns.
  static Registry* instance = new Registry();
  return *instance;
}

}  // namespace

std::shared_ptr<Allocator> allocator_for(const Device& device) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto& slot = r.by_device[device.str()];
  if (!slot) {
    if (!r.factory) {
      MB_THROW(InvalidArgument, "no allocator for ", device.str(),
               ". Fix: create an mb::Session, or call mb::install_default_allocators() "
               "(allocator/default_allocator.h) before making tensors");
    }
    slot = r.factory(device);
    MB_CHECK(slot != nullptr, "the allocator factory returned no allocator for ", device.str());
  }
  return slot;
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

AllocatorFactory set_allocator_factory(AllocatorFactory factory) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  AllocatorFactory previous = std::move(r.factory);
  r.factory = std::move(factory);
  return previous;
}

}  // namespace mb
