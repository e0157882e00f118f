// parse_byte_size: see byte_size.h for the accepted forms.
#include "allocator/byte_size.h"

#include <cctype>
#include <cmath>
#include <limits>

#include "runtime/error.h"

namespace mb {
namespace {

[[noreturn]] void reject(const std::string& text, const char* why) {
  MB_THROW(InvalidArgument, "cannot read '", text, "' as a byte size: ", why,
           ". Fix: write a number with an optional unit, e.g. 4096, 64KiB, 512MiB, 1.5G, 6GiB, "
           "2 GB (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000)");
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

}  // namespace

std::size_t parse_byte_size(const std::string& text) {
  std::size_t begin = 0, end = text.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  if (begin == end) reject(text, "it is empty");

  // Number: digits with at most one decimal point.
  std::size_t pos = begin;
  std::size_t digits = 0;
  bool seen_point = false;
  while (pos < end) {
    char c = text[pos];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      ++digits;
    } else if (c == '.' && !seen_point) {
      seen_point = true;
    } else {
      break;
    }
    ++pos;
  }
  if (digits == 0) reject(text, "it does not start with a number");
  std::string number = text.substr(begin, pos - begin);
  while (pos < end && text[pos] == ' ') ++pos;
  std::string unit = lower(text.substr(pos, end - pos));

  double multiplier = 0.0;
  const double kib = 1024.0;
  if (unit.empty() || unit == "b") {
    multiplier = 1.0;
  } else if (unit == "k" || unit == "kib") {
    multiplier = kib;
  } else if (unit == "m" || unit == "mib") {
    multiplier = kib * kib;
  } else if (unit == "g" || unit == "gib") {
    multiplier = kib * kib * kib;
  } else if (unit == "t" || unit == "tib") {
    multiplier = kib * kib * kib * kib;
  } else if (unit == "kb") {
    multiplier = 1e3;
  } else if (unit == "mb") {
    multiplier = 1e6;
  } else if (unit == "gb") {
    multiplier = 1e9;
  } else if (unit == "tb") {
    multiplier = 1e12;
  } else {
    reject(text, "unknown unit");
  }

  // Whole numbers are parsed exactly (no double rounding for large byte counts).
  if (!seen_point) {
    std::size_t value = 0;
    for (char c : number) {
      std::size_t digit = static_cast<std::size_t>(c - '0');
      if (value > (std::numeric_limits<std::size_t>::max() - digit) / 10) {
        reject(text, "it is too large");
      }
      value = value * 10 + digit;
    }
    auto scale = static_cast<std::size_t>(multiplier);
    if (scale != 0 && value > std::numeric_limits<std::size_t>::max() / scale) {
      reject(text, "it is too large");
    }
    return value * scale;
  }
  if (multiplier == 1.0) {
    reject(text, "a byte count is a whole number (a fraction of free memory is not a size)");
  }
  double bytes = std::stod(number) * multiplier;
  if (!(bytes < 1.8e19)) reject(text, "it is too large");
  return static_cast<std::size_t>(std::floor(bytes));
}

}  // namespace mb
