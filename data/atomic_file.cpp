// AtomicFile: unique temporaries, fsync, rename, directory fsync, and a signal-safe table
// of the temporaries that are open.
#include "data/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"

namespace mb {
namespace {

std::string errno_text() {
  return std::strerror(errno);
}

// Note: a fixed table of C strings, because the signal handler may read it at any moment:
// a slot is published (state 2) only after its path is written, and unlink() is
// async-signal-safe.
constexpr int kSlots = 32;
constexpr std::size_t kPathBytes = 4096;
std::atomic<int> slot_state[kSlots];  // 0 free, 1 being written, 2 published
char slot_path[kSlots][kPathBytes];

int publish(const std::string& path) {
  if (path.size() >= kPathBytes) return -1;
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (slot_state[i].compare_exchange_strong(expected, 1)) {
      std::memcpy(slot_path[i], path.c_str(), path.size() + 1);
      slot_state[i].store(2);
      return i;
    }
  }
  return -1;  // more than kSlots files at once: that one is only cleaned up as stale
}

void unpublish(int slot) {
  if (slot >= 0) slot_state[slot].store(0);
}

std::string directory_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

std::atomic<unsigned> counter{0};

}  // namespace

AtomicFile::AtomicFile(std::string target) : target_(std::move(target)) {
  remove_stale_temporaries(target_);
  temporary_ =
      target_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  slot_ = publish(temporary_);
  const int fd = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const std::string reason = errno_text();
    unpublish(slot_);
    MB_THROW(IoError, "cannot write ", target_, ": creating ", temporary_, " failed: ", reason);
  }
  file_ = ::fdopen(fd, "wb");
  if (file_ == nullptr) {
    const std::string reason = errno_text();
    ::close(fd);
    discard();
    MB_THROW(IoError, "cannot write ", target_, ": ", reason);
  }
}

AtomicFile::~AtomicFile() {
  discard();
}

void AtomicFile::discard() noexcept {
  if (file_ != nullptr) {
    std::fclose(file_);
    file_ = nullptr;
  }
  if (!temporary_.empty()) {
    ::unlink(temporary_.c_str());
    temporary_.clear();
  }
  unpublish(slot_);
  slot_ = -1;
}

void AtomicFile::write(const void* data, std::size_t bytes, const std::string& what) {
  MB_CHECK(file_ != nullptr, "AtomicFile::write after commit");
  if (bytes > 0 && std::fwrite(data, 1, bytes, file_) != bytes) {
    const std::string reason = errno_text();
    discard();
    MB_THROW(IoError, "writing ", target_, " failed while writing ", what, ": ", reason);
  }
}

void AtomicFile::commit() {
  MB_CHECK(file_ != nullptr, "AtomicFile::commit twice");
  if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0) {
    const std::string reason = errno_text();
    discard();
    MB_THROW(IoError, "writing ", target_, " failed while flushing: ", reason);
  }
  const int closed = std::fclose(file_);
  file_ = nullptr;
  if (closed != 0) {
    const std::string reason = errno_text();
    discard();
    MB_THROW(IoError, "writing ", target_, " failed on close: ", reason);
  }
  if (std::rename(temporary_.c_str(), target_.c_str()) != 0) {
    const std::string reason = errno_text();
    discard();
    MB_THROW(IoError, "cannot rename ", temporary_, " to ", target_, ": ", reason);
  }
  temporary_.clear();
  unpublish(slot_);
  slot_ = -1;
  sync_directory_of(target_);
}

int remove_stale_temporaries(const std::string& target) {
  const std::string prefix = std::filesystem::path(target).filename().string();
  std::error_code error;
  std::filesystem::directory_iterator it(directory_of(target), error);
  int removed = 0;
  for (; !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    // "<prefix>...tmp.<pid>.<n>": the target's own temporaries and those of files named
    // after it (a checkpoint's optimizer files).
    const std::string name = it->path().filename().string();
    const std::size_t tmp = name.rfind(".tmp.");
    if (name.compare(0, prefix.size(), prefix) != 0 || tmp == std::string::npos) continue;
    const std::string rest = name.substr(tmp + 5);
    const std::size_t dot = rest.find('.');
    if (dot == std::string::npos || dot == 0 ||
        rest.find_first_not_of("0123456789.") != std::string::npos) {
      continue;
    }
    long pid = 0;
    try {
      pid = std::stol(rest.substr(0, dot));
    } catch (const std::exception&) {
      continue;
    }
    // A temporary of a running process (this one included) is not stale.
    if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    if (std::filesystem::remove(it->path(), ignored)) ++removed;
  }
  return removed;
}

void remove_open_temporaries() noexcept {
  for (int i = 0; i < kSlots; ++i) {
    if (slot_state[i].load() == 2) ::unlink(slot_path[i]);
  }
}

void sync_directory_of(const std::string& path) {
  const std::string dir = directory_of(path);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) MB_THROW(IoError, "cannot open directory ", dir, " to sync it: ", errno_text());
  const int synced = ::fsync(fd);
  const std::string reason = synced != 0 ? errno_text() : "";
  ::close(fd);
  if (synced != 0) MB_THROW(IoError, "cannot sync directory ", dir, ": ", reason);
}

}  // namespace mb
