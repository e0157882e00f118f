// Typed errors and the checking macros used everywhere in microbatch.
//
// Library code never prints and exits: it throws one of the mb:: exceptions below. Each
// carries the failing expression, the file and the line, and (for CUDA libraries) the
// library's own error name, so a message read in a CI log is enough to find the fault.
//
// Note: mb::OutOfMemory carries the allocator's FreeArenaReport, so memory_report.h lives
// here in runtime/, the ground floor, beside the allocator interfaces.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "runtime/memory_report.h"

namespace mb {

// what() is the whole record, "file:line: ..." (for logs and bug reports); message() is the
// text a user reads: what went wrong and the fix, without our source paths. `message`
// defaults to what() less its leading "file:line: ".
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, const char* file = nullptr, int line = 0,
                 std::string message = {});
  const char* file() const noexcept { return file_; }
  int line() const noexcept { return line_; }
  const std::string& message() const noexcept { return message_; }

 private:
  const char* file_;
  int line_;
  std::string message_;
};

// A caller passed something the API cannot accept (shape, flag value, configuration).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A CUDA, cuBLAS or cuDNN call failed.
class CudaError : public Error {
 public:
  using Error::Error;
};

// Reading or writing a file failed, or its contents are not what was expected.
class IoError : public Error {
 public:
  using Error::Error;
};

// The allocator could not satisfy a request. Carries the allocator's full report at the
// moment of failure; the allocator is consistent afterwards, so callers may recover (the
// micro-batch engine re-plans smaller).
class OutOfMemory : public Error {
 public:
  // `fix` ends the message; the default fits a micro-batch that was too large.
  OutOfMemory(std::size_t requested_bytes, FreeArenaReport report, const std::string& context,
              const char* file = nullptr, int line = 0, const std::string& fix = kMicroBatchFix);
  static constexpr const char* kMicroBatchFix =
      "Fix: lower --micro-batch (or use --micro-batch auto), or raise --memory-limit";
  std::size_t requested_bytes() const noexcept { return requested_bytes_; }
  const FreeArenaReport& report() const noexcept { return report_; }

 private:
  std::size_t requested_bytes_;
  FreeArenaReport report_;
};

namespace detail {

template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

// "file:line: check failed: expr: message"
std::string format_location(const char* file, int line, const std::string& what);

[[noreturn]] void throw_check_failure(const char* expression, const char* file, int line,
                                      const std::string& message);

}  // namespace detail
}  // namespace mb

// MB_CHECK(cond, message parts...): throws mb::InvalidArgument naming the expression, the
// file, the line and the message (streamed together from the parts).
#define MB_CHECK(cond, ...)                                                 \
  do {                                                                      \
    if (!(cond)) {                                                          \
      ::mb::detail::throw_check_failure(#cond, __FILE__, __LINE__,          \
                                        ::mb::detail::concat(__VA_ARGS__)); \
    }                                                                       \
  } while (false)

// MB_THROW(Type, message parts...): throws the given mb:: exception with file and line.
#define MB_THROW(Type, ...)                                                                        \
  throw Type(::mb::detail::format_location(__FILE__, __LINE__, ::mb::detail::concat(__VA_ARGS__)), \
             __FILE__, __LINE__)
