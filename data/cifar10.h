// The CIFAR binary formats: files of fixed-size records, each label bytes then 3072 pixel
// bytes (the 1024 red, 1024 green and 1024 blue values of a 32x32 image, rows top to
// bottom). CIFAR-10: 1 label byte (0..9); CIFAR-100: a coarse label (0..19) and a fine
// label (0..99), the fine one being the class. load_cifar10 / load_cifar100 (dataset.h)
// assemble the train or test split from them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mb {

inline constexpr std::int64_t kCifar10Classes = 10;
inline constexpr std::int64_t kCifar100Classes = 100;
inline constexpr std::int64_t kCifar100CoarseClasses = 20;
inline constexpr std::int64_t kCifar10ImageBytes = 3 * 32 * 32;
inline constexpr std::int64_t kCifar10RecordBytes = 1 + kCifar10ImageBytes;
inline constexpr std::int64_t kCifar100RecordBytes = 2 + kCifar10ImageBytes;

// One member of the format family: its label bytes and which one is the class.
struct CifarFormat {
  const char* name;             // "CIFAR-10", "CIFAR-100"
  std::int64_t label_bytes;     // before the pixels
  std::int64_t class_byte;      // the label byte that is the class
  std::int64_t classes;         // its range
  std::int64_t coarse_classes;  // range of byte 0 when it is not the class (CIFAR-100)
  std::int64_t record_bytes() const { return label_bytes + kCifar10ImageBytes; }
};
inline constexpr CifarFormat kCifar10Format{"CIFAR-10", 1, 0, kCifar10Classes, 0};
inline constexpr CifarFormat kCifar100Format{"CIFAR-100", 2, 1, kCifar100Classes,
                                             kCifar100CoarseClasses};

struct Cifar10Records {
  std::vector<std::uint8_t> labels;  // one per record: the class
  std::vector<std::uint8_t> pixels;  // kCifar10ImageBytes per record, CHW
  std::int64_t count() const { return static_cast<std::int64_t>(labels.size()); }
};

// Reads up to `max_records` records (0: all) of one file of `format`. Throws mb::IoError
// naming the file when it is missing, empty, not a whole number of records (naming the
// byte offset of the partial record), or holds a label outside its range.
Cifar10Records read_cifar_file(const std::string& path, const CifarFormat& format,
                               std::int64_t max_records = 0);
inline Cifar10Records read_cifar10_file(const std::string& path, std::int64_t max_records = 0) {
  return read_cifar_file(path, kCifar10Format, max_records);
}

}  // namespace mb
