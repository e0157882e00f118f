// The interface every tensor allocates through.
//
// Implementations: PassThroughAllocator (each request straight to the resource; used with
// MB_ALLOC_NO_CACHE=1 and as the simplest reference) and PoolAllocator (the caching arena
// the planner reads). Pointers are raw here; ownership is wrapped by runtime's Tensor
// storage and by DeviceBuffer below.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "allocator/memory_resource.h"
#include "runtime/memory_report.h"

namespace mb {

class Allocator {
 public:
  virtual ~Allocator() = default;

  // Returns a block of at least `bytes` (aligned to 256 B) for use on `stream`.
  // Throws mb::OutOfMemory, carrying report(), when it cannot; the allocator stays usable.
  virtual void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream = nullptr) = 0;
  virtual void deallocate(void* ptr) noexcept = 0;
  // `ptr` is also used on `stream`: do not reuse it before that stream's work is done.
  virtual void record_stream(void* /*ptr*/, StreamHandle /*stream*/) {}

  virtual FreeArenaReport report() const = 0;
  virtual MemoryKind kind() const = 0;
  virtual int device_index() const = 0;

  // Peak allocated bytes since construction or the last reset_peak().
  virtual std::size_t peak_allocated() const = 0;
  virtual void reset_peak() = 0;
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
  DeviceBuffer(Allocator& allocator, std::size_t bytes, MemoryTag tag,
               StreamHandle stream = nullptr)
      : allocator_(&allocator), ptr_(allocator.allocate(bytes, tag, stream)), bytes_(bytes) {}
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
  Allocator* allocator_ = nullptr;
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace mb
