// The interface every tensor allocates through.
//
// runtime/ defines it; allocator/ implements it: PassThroughAllocator (each request straight
// to the resource; used with MB_ALLOC_NO_CACHE=1 and as the simplest reference) and
// PoolAllocator (the caching arena the planner reads). Pointers are raw here; ownership is
// wrapped by Tensor's Storage and by DeviceBuffer below, both of which hold the allocator
// by shared_ptr, so an allocator outlives every block it handed out.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include "runtime/memory_report.h"
#include "runtime/memory_resource.h"

namespace mb {

class Allocator {
 public:
  virtual ~Allocator() = default;

  // Returns a block of at least `bytes` (aligned to 256 B) for use on `stream`.
  // Throws mb::OutOfMemory, carrying report(), when it cannot; the allocator stays usable.
  virtual void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream = nullptr) = 0;
  // Frees a block from allocate(). A pointer this allocator did not hand out is a bug: debug
  // builds abort on it (assert), release builds count it in unknown_frees() and ignore it.
  virtual void deallocate(void* ptr) noexcept = 0;
  // `ptr` is also used on `stream`: do not reuse it before that stream's work is done.
  virtual void record_stream(void* /*ptr*/, StreamHandle /*stream*/) {}

  virtual FreeArenaReport report() const = 0;
  // Capacity, reserved and allocated bytes without report()'s device query (cheap enough for
  // every step).
  virtual MemoryUsage usage() const {
    const FreeArenaReport full = report();
    return MemoryUsage{full.capacity, full.reserved, full.allocated};
  }
  virtual MemoryKind kind() const = 0;
  virtual int device_index() const = 0;

  // Peak allocated bytes since construction or the last reset_peak().
  virtual std::size_t peak_allocated() const = 0;
  // Peak reserved bytes (segments held, allocated or not) since construction or the last
  // reset_peak(): what the arena needed, rounding and fragmentation included. An allocator
  // that holds nothing beyond its live blocks reserves what it allocates.
  virtual std::size_t peak_reserved() const { return peak_allocated(); }
  virtual void reset_peak() = 0;
  // How many deallocate() calls passed a pointer this allocator does not know (release
  // builds; debug builds abort instead).
  virtual std::size_t unknown_frees() const { return 0; }
  // Releases cached, unused segments back to the resource.
  virtual void empty_cache() {}

  // Annotations for the event trace: which micro-batch the following events belong to
  // (-1: none) and named instants ("micro-batch 3 start", "optimizer update", "re-plan").
  virtual void set_micro_batch(int /*index*/) {}
  virtual void mark(const std::string& /*name*/) {}
};

// Owns one allocation; movable, not copyable.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(std::shared_ptr<Allocator> allocator, std::size_t bytes, MemoryTag tag,
               StreamHandle stream = nullptr)
      : allocator_(std::move(allocator)),
        ptr_(allocator_->allocate(bytes, tag, stream)),
        bytes_(bytes) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept { swap(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    DeviceBuffer(std::move(other)).swap(*this);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) allocator_->deallocate(ptr_);
  }

  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  void swap(DeviceBuffer& other) noexcept {
    std::swap(allocator_, other.allocator_);
    std::swap(ptr_, other.ptr_);
    std::swap(bytes_, other.bytes_);
  }
  std::shared_ptr<Allocator> allocator_;
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace mb
