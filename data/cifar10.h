// The CIFAR-10 binary format: files of fixed-size records, each 1 label byte (0..9) then
// 3072 pixel bytes (the 1024 red, 1024 green and 1024 blue values of a 32x32 image, rows
// top to bottom). load_cifar10 (dataset.h) assembles the train or test split from them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mb {

inline constexpr std::int64_t kCifar10Classes = 10;
inline constexpr std::int64_t kCifar10ImageBytes = 3 * 32 * 32;
inline constexpr std::int64_t kCifar10RecordBytes = 1 + kCifar10ImageBytes;

struct Cifar10Records {
  std::vector<std::uint8_t> labels;  // one per record
  std::vector<std::uint8_t> pixels;  // kCifar10ImageBytes per record, CHW
  std::int64_t count() const { return static_cast<std::int64_t>(labels.size()); }
};

// Reads up to `max_records` records (0: all) of one batch file. Throws mb::IoError naming
// the file when it is missing, empty, not a whole number of records (naming the byte offset
// of the partial record), or holds a label outside [0, 10).
Cifar10Records read_cifar10_file(const std::string& path, std::int64_t max_records = 0);

}  // namespace mb
