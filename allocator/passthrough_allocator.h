// Every request goes straight to the memory resource; nothing is cached.
// Used for MB_ALLOC_NO_CACHE=1 (compute-sanitizer sees every allocation) and as the simple
// baseline the pool is benchmarked against.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "runtime/allocator.h"

namespace mb {

class PassThroughAllocator final : public Allocator {
 public:
  // `capacity`: cap on bytes held at once (0 = no cap beyond the resource's own).
  explicit PassThroughAllocator(std::unique_ptr<MemoryResource> resource, std::size_t capacity = 0);
  ~PassThroughAllocator() override;

  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream = nullptr) override;
  void deallocate(void* ptr) noexcept override;
  FreeArenaReport report() const override;
  MemoryKind kind() const override { return resource_->kind(); }
  int device_index() const override { return resource_->device_index(); }
  std::size_t peak_allocated() const override;
  void reset_peak() override;
  std::size_t unknown_frees() const override;

 private:
  struct Live {
    std::size_t bytes;
    MemoryTag tag;
  };
  FreeArenaReport report_locked() const;

  std::unique_ptr<MemoryResource> resource_;
  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::unordered_map<void*, Live> live_;
  std::size_t allocated_ = 0;
  std::size_t peak_ = 0;
  std::size_t unknown_frees_ = 0;
  std::array<std::size_t, kNumMemoryTags> by_tag_{};
};

}  // namespace mb
