// Aligned host memory as a MemoryResource: the pool's backing store on the CPU backend.
// Its free bytes are what the kernel and the cgroup still allow (host_memory.h).
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <new>
#include <sstream>

#include "allocator/host_memory.h"
#include "runtime/memory_resource.h"

namespace mb {
namespace {

constexpr std::size_t kUnknown = std::numeric_limits<std::size_t>::max();

// The whole of a small text file (procfs and cgroupfs report size 0, so no seek/tell).
bool read_text(const char* path, std::string& text) {
  std::ifstream in(path);
  if (!in) return false;
  std::ostringstream contents;
  contents << in.rdbuf();
  text = contents.str();
  return true;
}

// A decimal integer at the start of `text` (after blanks); false for anything else.
bool leading_integer(const std::string& text, std::size_t begin, unsigned long long& value) {
  while (begin < text.size() && (text[begin] == ' ' || text[begin] == '\t')) ++begin;
  if (begin >= text.size() || text[begin] < '0' || text[begin] > '9') return false;
  value = 0;
  for (std::size_t i = begin; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    const unsigned long long digit = static_cast<unsigned long long>(text[i] - '0');
    if (value > (std::numeric_limits<unsigned long long>::max() - digit) / 10) return false;
    value = value * 10 + digit;
  }
  return true;
}

class HostMemoryResource final : public MemoryResource {
 public:
  void* reserve(std::size_t bytes) override {
    std::size_t size = (bytes + kSegmentAlignment - 1) / kSegmentAlignment * kSegmentAlignment;
    return std::aligned_alloc(kSegmentAlignment, size == 0 ? kSegmentAlignment : size);
  }
  void release(void* ptr, std::size_t) noexcept override { std::free(ptr); }
  MemoryKind kind() const override { return MemoryKind::Host; }
  int device_index() const override { return -1; }
  std::size_t device_free_bytes() const override { return host_available_bytes(); }
  std::string name() const override { return "host"; }
};

}  // namespace

std::size_t parse_meminfo_available(const std::string& meminfo) {
  const std::string key = "MemAvailable:";
  std::size_t at = meminfo.find(key);
  // The key starts a line.
  while (at != std::string::npos && at != 0 && meminfo[at - 1] != '\n') {
    at = meminfo.find(key, at + 1);
  }
  if (at == std::string::npos) return kUnknown;
  unsigned long long kib = 0;
  if (!leading_integer(meminfo, at + key.size(), kib)) return kUnknown;
  if (kib > kUnknown / 1024) return kUnknown;
  return static_cast<std::size_t>(kib) * 1024;
}

std::size_t parse_cgroup_headroom(const std::string& limit, const std::string& usage) {
  unsigned long long limit_bytes = 0, usage_bytes = 0;
  if (!leading_integer(limit, 0, limit_bytes)) return kUnknown;  // "max" or unreadable
  if (limit_bytes >= (1ull << 62)) return kUnknown;              // v1 says "no limit" with ~2^63
  if (!leading_integer(usage, 0, usage_bytes)) usage_bytes = 0;
  return limit_bytes > usage_bytes ? static_cast<std::size_t>(limit_bytes - usage_bytes) : 0;
}

std::size_t host_available_bytes() {
  std::size_t available = kUnknown;
  std::string text, usage;
  if (read_text("/proc/meminfo", text)) available = parse_meminfo_available(text);
  if (read_text("/sys/fs/cgroup/memory.max", text)) {
    if (!read_text("/sys/fs/cgroup/memory.current", usage)) usage.clear();
    available = std::min(available, parse_cgroup_headroom(text, usage));
  } else if (read_text("/sys/fs/cgroup/memory/memory.limit_in_bytes", text)) {
    if (!read_text("/sys/fs/cgroup/memory/memory.usage_in_bytes", usage)) usage.clear();
    available = std::min(available, parse_cgroup_headroom(text, usage));
  }
  return available;
}

std::unique_ptr<MemoryResource> make_host_memory_resource() {
  return std::make_unique<HostMemoryResource>();
}

}  // namespace mb
