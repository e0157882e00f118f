// How much host memory this process could still get: what the kernel reports as available
// (/proc/meminfo MemAvailable), lowered by the cgroup's limit when the process runs in a
// container. The host memory resources report it as their free bytes, so the CPU arena has
// a default cap and a headroom just as a GPU arena has (default_pool_capacity).
#pragma once

#include <cstddef>
#include <string>

namespace mb {

// MemAvailable of a /proc/meminfo text, in bytes; SIZE_MAX when the line is missing or
// unreadable (kernels before 3.14).
std::size_t parse_meminfo_available(const std::string& meminfo);

// Bytes left under a cgroup limit: `limit` is the text of memory.max (v2) or
// memory.limit_in_bytes (v1), `usage` that of memory.current or memory.usage_in_bytes.
// SIZE_MAX for "max", an unreadable limit, or one beyond 2^62 (v1's way of saying none).
std::size_t parse_cgroup_headroom(const std::string& limit, const std::string& usage);

// The smallest of MemAvailable and the cgroup headroom (v2, then v1); SIZE_MAX when the
// system says nothing.
std::size_t host_available_bytes();

}  // namespace mb
