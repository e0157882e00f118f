// The allocator's view of memory, as the planner and the user see it.
//
// A FreeArenaReport is a value: a snapshot that can be logged, compared and carried inside
// an mb::OutOfMemory. It lives in runtime/, below allocator/, so errors can hold one.
#pragma once

#include <array>
#include <cstddef>
#include <string>

namespace mb {

// What an allocation is for. Reports break allocated bytes down by tag.
enum class MemoryTag : int { Param, Grad, Optimizer, Activation, Workspace, Data, Other };
inline constexpr int kNumMemoryTags = 7;
const char* memory_tag_name(MemoryTag tag);

struct FreeArenaReport {
  std::size_t capacity = 0;            // the cap on reserved bytes
  std::size_t reserved = 0;            // bytes held from the memory resource (segments)
  std::size_t allocated = 0;           // bytes in live blocks (rounded sizes)
  std::size_t free_in_arena = 0;       // reserved - allocated: cached, reusable
  std::size_t headroom = 0;            // capacity - reserved, bounded by the device's free memory
  std::size_t largest_free_block = 0;  // largest single free block inside the arena
  double fragmentation = 0.0;          // 1 - largest_free_block / free_in_arena (0 when none free)
  std::array<std::size_t, kNumMemoryTags> allocated_by_tag{};

  // What a new allocation could get at most without freeing anything: the cached bytes
  // plus what may still be reserved under the cap.
  std::size_t available() const { return free_in_arena + headroom; }
  std::size_t tag_bytes(MemoryTag tag) const { return allocated_by_tag[static_cast<int>(tag)]; }
  // Multi-line human-readable table.
  std::string to_string() const;
  // One line: the largest tags, for error messages.
  std::string biggest_tags(int count = 3) const;
};

// The counters an allocator keeps, read without asking the device anything (report()'s
// headroom asks the driver for its free memory): what a per-step report shows.
struct MemoryUsage {
  std::size_t capacity = 0;
  std::size_t reserved = 0;
  std::size_t allocated = 0;
};

// "1.50 GiB", "512.0 KiB", "17 B".
std::string format_bytes(std::size_t bytes);

}  // namespace mb
