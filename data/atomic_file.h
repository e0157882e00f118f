// AtomicFile: a file that appears complete or not at all, even under kill -9 or power loss.
//
// Bytes go to a temporary beside the target, named "<target>.tmp.<pid>.<n>" (unique, so two
// processes writing one target never share a temporary). commit() flushes and fsyncs it,
// renames it over the target and fsyncs the directory, so the rename itself is durable.
// Destroyed without commit(), the temporary is removed. A temporary left by a process that
// was killed is removed by remove_stale_temporaries() (its pid no longer runs), which every
// writer calls first.
//
// Ctrl-C: the CLI's handler for a second signal calls remove_open_temporaries() (async-
// signal-safe) before it exits, so no partial file is left even then.
#pragma once

#include <cstdio>
#include <string>

namespace mb {

class AtomicFile {
 public:
  // Creates the temporary. Throws mb::IoError naming it and the reason.
  explicit AtomicFile(std::string target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Writes `bytes`; throws mb::IoError (naming the target and `what`) when the write fails.
  void write(const void* data, std::size_t bytes, const std::string& what);
  // Makes the target the temporary's bytes: fsync, rename, fsync of the directory. Throws
  // mb::IoError; the temporary is removed then, and the target is untouched.
  void commit();

  const std::string& target() const { return target_; }
  const std::string& temporary() const { return temporary_; }

 private:
  void discard() noexcept;

  std::string target_;
  std::string temporary_;
  std::FILE* file_ = nullptr;
  int slot_ = -1;  // in the table of open temporaries
};

// Removes "<target>...tmp.<pid>.<n>" files (the target's temporaries and those of files
// named after it) whose process no longer runs; returns how many.
int remove_stale_temporaries(const std::string& target);

// Unlinks every temporary an AtomicFile of this process has open. Async-signal-safe.
void remove_open_temporaries() noexcept;

// fsync of the directory holding `path` (after a rename or unlink in it). Throws mb::IoError.
void sync_directory_of(const std::string& path);

}  // namespace mb
