// PassThroughAllocator: bookkeeping only.
#include "allocator/passthrough_allocator.h"

#include <cassert>

#include <algorithm>
#include <limits>

#include "runtime/error.h"

namespace mb {

PassThroughAllocator::PassThroughAllocator(std::unique_ptr<MemoryResource> resource,
                                           std::size_t capacity)
    : resource_(std::move(resource)),
      capacity_(capacity != 0 ? capacity : std::numeric_limits<std::size_t>::max()) {
  MB_CHECK(resource_ != nullptr, "PassThroughAllocator needs a memory resource");
}

PassThroughAllocator::~PassThroughAllocator() {
  for (auto& [ptr, live] : live_) resource_->release(ptr, live.bytes);
}

void* PassThroughAllocator::allocate(std::size_t bytes, MemoryTag tag, StreamHandle) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::size_t rounded = std::max<std::size_t>(512, (bytes + 511) / 512 * 512);
  void* ptr = nullptr;
  if (allocated_ + rounded <= capacity_) ptr = resource_->reserve(rounded);
  if (ptr == nullptr) {
    throw OutOfMemory(bytes, report_locked(), "PassThroughAllocator(" + resource_->name() + ")",
                      __FILE__, __LINE__);
  }
  live_[ptr] = Live{rounded, tag};
  allocated_ += rounded;
  peak_ = std::max(peak_, allocated_);
  by_tag_[static_cast<int>(tag)] += rounded;
  return ptr;
}

void PassThroughAllocator::deallocate(void* ptr) noexcept {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end()) {
    // Not ours: a bug in the caller. Ignoring it beats corrupting the books in release.
    assert(!"PassThroughAllocator::deallocate: pointer not allocated here (or freed twice)");
    ++unknown_frees_;
    return;
  }
  allocated_ -= it->second.bytes;
  by_tag_[static_cast<int>(it->second.tag)] -= it->second.bytes;
  resource_->release(ptr, it->second.bytes);
  live_.erase(it);
}

FreeArenaReport PassThroughAllocator::report_locked() const {
  FreeArenaReport report;
  report.capacity = capacity_;
  report.reserved = allocated_;
  report.allocated = allocated_;
  report.free_in_arena = 0;
  report.headroom = std::min(capacity_ - allocated_, resource_->device_free_bytes());
  report.largest_free_block = 0;
  report.fragmentation = 0.0;
  report.allocated_by_tag = by_tag_;
  return report;
}

FreeArenaReport PassThroughAllocator::report() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return report_locked();
}

std::size_t PassThroughAllocator::unknown_frees() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return unknown_frees_;
}

std::size_t PassThroughAllocator::peak_allocated() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_;
}

void PassThroughAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  peak_ = allocated_;
}

}  // namespace mb
