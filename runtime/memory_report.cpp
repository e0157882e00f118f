// FreeArenaReport formatting.
#include "runtime/memory_report.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <sstream>
#include <vector>

namespace mb {

const char* memory_tag_name(MemoryTag tag) {
  switch (tag) {
    case MemoryTag::Param: return "param";
    case MemoryTag::Grad: return "grad";
    case MemoryTag::Optimizer: return "optimizer";
    case MemoryTag::Activation: return "activation";
    case MemoryTag::Workspace: return "workspace";
    case MemoryTag::Data: return "data";
    case MemoryTag::Other: return "other";
  }
  return "unknown";
}

std::string format_bytes(std::size_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%zu B", bytes);
  } else {
    std::snprintf(text, sizeof text, "%.2f %s", value, kUnits[unit]);
  }
  return text;
}

std::string FreeArenaReport::biggest_tags(int count) const {
  std::vector<int> order(kNumMemoryTags);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return allocated_by_tag[a] > allocated_by_tag[b]; });
  std::ostringstream out;
  int shown = 0;
  for (int tag : order) {
    if (shown == count || allocated_by_tag[tag] == 0) break;
    if (shown > 0) out << ", ";
    out << memory_tag_name(static_cast<MemoryTag>(tag)) << " "
        << format_bytes(allocated_by_tag[tag]);
    ++shown;
  }
  if (shown == 0) out << "none";
  return out.str();
}

std::string FreeArenaReport::to_string() const {
  std::ostringstream out;
  out << "capacity           " << format_bytes(capacity) << "\n"
      << "reserved           " << format_bytes(reserved) << "\n"
      << "allocated          " << format_bytes(allocated) << "\n"
      << "free in arena      " << format_bytes(free_in_arena) << "\n"
      << "headroom           " << format_bytes(headroom) << "\n"
      << "largest free block " << format_bytes(largest_free_block) << "\n";
  char fragmentation_text[16];
  std::snprintf(fragmentation_text, sizeof fragmentation_text, "%.1f%%", fragmentation * 100.0);
  out << "fragmentation      " << fragmentation_text << "\n";
  for (int tag = 0; tag < kNumMemoryTags; ++tag) {
    out << "  " << memory_tag_name(static_cast<MemoryTag>(tag));
    for (std::size_t pad = std::string(memory_tag_name(static_cast<MemoryTag>(tag))).size();
         pad < 17; ++pad)
      out << ' ';
    out << format_bytes(allocated_by_tag[tag]) << "\n";
  }
  return out.str();
}

}  // namespace mb
