// Validators for the command line's numeric flags. CLI11's own (PositiveNumber, Range)
// let NaN through, accept integers that overflow the option's type (then clamped), and
// print the double's full range as a 309-digit number; these name the value and the range.
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <cstdint>
#include <string>

namespace mb {

// A finite number in [low, high].
CLI::Validator finite_in(double low, double high);
// A whole decimal number in [low, high]; no sign for low >= 0, no fraction, no exponent.
CLI::Validator whole_in(std::int64_t low, std::int64_t high);
// Digits only, fitting in a uint64 (seeds).
CLI::Validator unsigned_integer();

// --memory-limit's text as bytes: 0 for no text (the default cap), otherwise a size that is
// not 0 (parse_byte_size; a cap of nothing is refused, naming the fix).
std::size_t memory_limit_bytes(const std::string& text);

}  // namespace mb
