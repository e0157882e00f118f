// Flag validators: see flags.h.
#include "tools/flags.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "allocator/byte_size.h"
#include "runtime/error.h"

namespace mb {

CLI::Validator finite_in(double low, double high) {
  return CLI::Validator(
      [low, high](std::string& text) -> std::string {
        double value = 0.0;
        try {
          std::size_t used = 0;
          value = std::stod(text, &used);
          if (used != text.size()) return "'" + text + "' is not a number";
        } catch (const std::exception&) {
          return "'" + text + "' is not a number";
        }
        if (!std::isfinite(value) || value < low || value > high) {
          std::ostringstream range;
          range << "'" << text << "' is outside [" << low << ", " << high << "]";
          return range.str();
        }
        return "";
      },
      "FINITE");
}

CLI::Validator whole_in(std::int64_t low, std::int64_t high) {
  return CLI::Validator(
      [low, high](std::string& text) -> std::string {
        const std::string range =
            " (a whole number in [" + std::to_string(low) + ", " + std::to_string(high) + "])";
        std::size_t digits_from = !text.empty() && text[0] == '-' ? 1 : 0;
        if (text.size() == digits_from ||
            text.find_first_not_of("0123456789", digits_from) != std::string::npos) {
          return "'" + text + "' is not a whole number" + range;
        }
        errno = 0;
        char* end = nullptr;
        const long long value = std::strtoll(text.c_str(), &end, 10);
        if (errno == ERANGE || value < low || value > high) {
          return "'" + text + "' is outside [" + std::to_string(low) + ", " + std::to_string(high) +
                 "]";
        }
        return "";
      },
      "INT");
}

CLI::Validator unsigned_integer() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) {
          return "'" + text + "' is not a non-negative integer";
        }
        errno = 0;
        char* end = nullptr;
        std::strtoull(text.c_str(), &end, 10);
        if (errno == ERANGE) return "'" + text + "' is larger than 2^64 - 1";
        return "";
      },
      "UINT64");
}

std::size_t memory_limit_bytes(const std::string& text) {
  if (text.empty()) return 0;
  const std::size_t bytes = parse_byte_size(text);
  if (bytes == 0) {
    MB_THROW(InvalidArgument, "--memory-limit ", text,
             " is a cap of 0 bytes, which holds nothing. Fix: give a size such as 512MiB or "
             "6GiB, or leave the flag out for the default (free memory minus a margin)");
  }
  return bytes;
}

}  // namespace mb
