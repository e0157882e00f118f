// The allocators microbatch uses unless told otherwise.
//
// A PoolAllocator over host memory for the CPU and over cudaMalloc for each GPU (capped at
// the device's free memory minus a margin), or a PassThroughAllocator when
// MB_ALLOC_NO_CACHE=1 (so compute-sanitizer sees every allocation).
#pragma once

#include <cstddef>
#include <memory>

#include "runtime/allocator.h"
#include "runtime/device.h"

namespace mb {

// A fresh allocator for `device` per the rules above, with `capacity` as its cap on reserved
// bytes (0: the default cap). Throws mb::CudaError when `device` cannot be used.
std::shared_ptr<Allocator> make_default_allocator(const Device& device, std::size_t capacity = 0);

// Makes the registry (runtime/allocator_registry.h) create make_default_allocator(device)
// for every device that has no allocator yet. Idempotent.
void install_default_allocators();

}  // namespace mb
