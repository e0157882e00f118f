// Which allocator serves each device.
//
// runtime/ only knows the Allocator interface; allocator/ implements it. The registry holds
// one shared allocator per device and creates it on first use through a factory that
// allocator/ installs (install_default_allocators() in allocator/default_allocator.h; a
// Session does it for every entry point, and the test and bench mains do it too). The
// engine and tests install their own (a capped pool, a failure injector) with
// set_allocator. Tensors keep the allocator they came from alive (shared ownership), so an
// allocator replaced in the registry lives until its last tensor is gone.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "runtime/allocator.h"
#include "runtime/device.h"

namespace mb {

// Makes the allocator of a device that has none yet.
using AllocatorFactory = std::function<std::shared_ptr<Allocator>(const Device& device)>;

// The allocator of `device`, created by the factory on first use. Throws mb::InvalidArgument
// naming the fix when no allocator and no factory is installed.
std::shared_ptr<Allocator> allocator_for(const Device& device);
// Installs `allocator` for `device`; returns the one it replaces.
std::shared_ptr<Allocator> set_allocator(const Device& device,
                                         std::shared_ptr<Allocator> allocator);
// Installs the factory for devices without an allocator; returns the previous one.
AllocatorFactory set_allocator_factory(AllocatorFactory factory);

// Installs an allocator for the scope and restores the previous one.
class ScopedAllocator {
 public:
  ScopedAllocator(const Device& device, std::shared_ptr<Allocator> allocator)
      : device_(device), previous_(set_allocator(device, std::move(allocator))) {}
  ~ScopedAllocator() { set_allocator(device_, previous_); }
  ScopedAllocator(const ScopedAllocator&) = delete;
  ScopedAllocator& operator=(const ScopedAllocator&) = delete;

 private:
  Device device_;
  std::shared_ptr<Allocator> previous_;
};

}  // namespace mb
