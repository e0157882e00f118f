// Error types: message composition.
#include "runtime/error.h"

#include <limits>
#include <utility>

namespace mb {
namespace {

std::string format_capacity(std::size_t capacity) {
  return capacity == std::numeric_limits<std::size_t>::max() ? std::string("no cap")
                                                             : "cap " + format_bytes(capacity);
}

}  // namespace

Error::Error(const std::string& what, const char* file, int line, std::string message)
    : std::runtime_error(what), file_(file), line_(line), message_(std::move(message)) {
  if (!message_.empty()) return;
  message_ = what;
  if (file == nullptr) return;
  const std::string location = detail::concat(file, ":", line, ": ");
  if (what.compare(0, location.size(), location) == 0) message_ = what.substr(location.size());
}

OutOfMemory::OutOfMemory(std::size_t requested_bytes, FreeArenaReport report,
                         const std::string& context, const char* file, int line,
                         const std::string& fix)
    : Error(detail::concat("out of memory: ", context, " requested ", format_bytes(requested_bytes),
                           "; allocated ", format_bytes(report.allocated), ", reserved ",
                           format_bytes(report.reserved), " (", format_capacity(report.capacity),
                           ")", ", free in arena ", format_bytes(report.free_in_arena),
                           ", largest free block ", format_bytes(report.largest_free_block),
                           ", fragmentation ", static_cast<int>(report.fragmentation * 100.0 + 0.5),
                           "%, headroom ",
                           report.headroom == std::numeric_limits<std::size_t>::max()
                               ? std::string("unbounded")
                               : format_bytes(report.headroom),
                           "; biggest tags: ", report.biggest_tags(), ". ", fix),
            file, line),
      requested_bytes_(requested_bytes),
      report_(report) {}

namespace detail {

std::string format_location(const char* file, int line, const std::string& what) {
  return concat(file, ":", line, ": ", what);
}

void throw_check_failure(const char* expression, const char* file, int line,
                         const std::string& message) {
  std::string text = concat(file, ":", line, ": check failed: ", expression);
  if (!message.empty()) text += concat(": ", message);
  // A user reads the message the check was written with; the expression is for the log.
  throw InvalidArgument(text, file, line,
                        message.empty() ? concat("check failed: ", expression) : message);
}

}  // namespace detail
}  // namespace mb
