// Shared by the libFuzzer targets of tests/fuzz: the parsers take file paths, so each input
// is written to a scratch folder (on tmpfs when /dev/shm exists) and the loader is called on
// it. mb::Error is the expected answer to a bad file; anything else (another exception
// type, a crash, a sanitizer report, a hang, too much memory) is a finding.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "allocator/default_allocator.h"
#include "runtime/error.h"

namespace mb::fuzz {

namespace detail {

inline std::filesystem::path scratch_root() {
  return std::filesystem::exists("/dev/shm") ? std::filesystem::path("/dev/shm")
                                             : std::filesystem::temp_directory_path();
}

// Removes the folders of fuzzing processes that are gone: libFuzzer ends with _Exit after a
// finding, a timeout or -max_total_time, so no exit handler of ours runs then. Best effort:
// a folder another fuzzing process removes at the same moment is no reason to stop.
inline void remove_stale_scratch_dirs() {
  try {
    for (const auto& entry : std::filesystem::directory_iterator(scratch_root())) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("mb_fuzz_", 0) != 0) continue;
      const long pid = std::strtol(name.c_str() + 8, nullptr, 10);
      if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
        std::error_code ignored;
        std::filesystem::remove_all(entry.path(), ignored);
      }
    }
  } catch (const std::filesystem::filesystem_error&) {
  }
}

}  // namespace detail

// One folder per fuzzing process, holding the current input's files.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path path = detail::scratch_root() / ("mb_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
    return path;
  }();
  return dir;
}

// Writes `size` bytes to `path` (replacing it); aborts when it cannot, since a fuzzer that
// silently tests an old file would report nonsense.
inline void write_file(const std::filesystem::path& path, const std::uint8_t* data,
                       std::size_t size) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr || (size > 0 && std::fwrite(data, 1, size, file) != size) ||
      std::fclose(file) != 0) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// Little-endian u32 from the first four bytes (callers check the length).
inline std::uint32_t read_le32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

// Runs `body`; mb::Error (what the loaders throw for bad input) is an accepted outcome.
template <typename Body>
void expect_success_or_mb_error(Body&& body) {
  try {
    body();
  } catch (const mb::Error&) {
  }
}

// The default allocators, as a Session installs them, and the scratch folder (removed by a
// normal exit, and by the next fuzzing process otherwise); called from LLVMFuzzerInitialize.
inline void initialize() {
  mb::install_default_allocators();
  detail::remove_stale_scratch_dirs();
  scratch_dir();
  // Registered after scratch_dir()'s static is constructed, so it runs before its destructor.
  std::atexit([] {
    std::error_code ignored;
    std::filesystem::remove_all(scratch_dir(), ignored);
  });
}

}  // namespace mb::fuzz
