// PoolDelegate: a test allocator that hands everything to a host pool. Tests that inject an
// OutOfMemory derive from it and override allocate() (and set_micro_batch() to know which
// micro-batch is running), calling PoolDelegate::allocate for the requests they let through.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>

#include "allocator/pool_allocator.h"
#include "runtime/allocator.h"

namespace mb::testing {

class PoolDelegate : public Allocator {
 public:
  explicit PoolDelegate(std::shared_ptr<PoolAllocator> pool) : pool_(std::move(pool)) {}
  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream) override {
    return pool_->allocate(bytes, tag, stream);
  }
  void deallocate(void* ptr) noexcept override { pool_->deallocate(ptr); }
  void record_stream(void* ptr, StreamHandle stream) override { pool_->record_stream(ptr, stream); }
  FreeArenaReport report() const override { return pool_->report(); }
  MemoryUsage usage() const override { return pool_->usage(); }
  MemoryKind kind() const override { return pool_->kind(); }
  int device_index() const override { return pool_->device_index(); }
  std::size_t peak_allocated() const override { return pool_->peak_allocated(); }
  std::size_t peak_reserved() const override { return pool_->peak_reserved(); }
  void empty_cache() override { pool_->empty_cache(); }
  void reset_peak() override { pool_->reset_peak(); }

 private:
  std::shared_ptr<PoolAllocator> pool_;
};

}  // namespace mb::testing
