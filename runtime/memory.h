// Which allocator serves each device.
//
// By default: a PoolAllocator over host memory for the CPU and over cudaMalloc for each GPU
// (capped at the device's free memory minus a margin), or a PassThroughAllocator when
// MB_ALLOC_NO_CACHE=1. The engine and tests install their own (e.g. a capped pool) with
// set_allocator; tensors remember the allocator they came from.
#pragma once

#include <cstddef>
#include <memory>

#include "allocator/allocator.h"
#include "runtime/device.h"

namespace mb {

Allocator& allocator_for(const Device& device);
// Installs `allocator` for `device`; returns the one it replaces (keep it alive while its
// tensors live).
std::shared_ptr<Allocator> set_allocator(const Device& device,
                                         std::shared_ptr<Allocator> allocator);
// A fresh allocator for `device` per the rules above, with `capacity` as its cap
// (0: the default cap).
std::shared_ptr<Allocator> make_default_allocator(const Device& device, std::size_t capacity = 0);

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
