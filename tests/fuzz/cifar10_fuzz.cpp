// libFuzzer target: the CIFAR-10 and CIFAR-100 readers. Input: one byte (bits 0-1:
// max_records / limit, 0 = all; bit 2: read_cifar_file on the file, else the split loader
// on a folder holding it as test_batch.bin / test.bin; bit 3: CIFAR-100), then the file.
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "data/cifar10.h"
#include "data/dataset.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mb::fuzz::initialize();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::int64_t limit = data[0] & 3;
  const std::filesystem::path dir = mb::fuzz::scratch_dir() / "cifar";
  std::filesystem::create_directories(dir);
  const bool hundred = (data[0] & 8) != 0;
  const mb::CifarFormat& format = hundred ? mb::kCifar100Format : mb::kCifar10Format;
  const std::filesystem::path path = dir / (hundred ? "test.bin" : "test_batch.bin");
  mb::fuzz::write_file(path, data + 1, size - 1);
  mb::fuzz::expect_success_or_mb_error([&] {
    if (data[0] & 4) {
      const mb::Cifar10Records records = mb::read_cifar_file(path.string(), format, limit);
      if (records.pixels.size() != records.labels.size() * mb::kCifar10ImageBytes ||
          (limit > 0 && records.count() > limit)) {
        __builtin_trap();
      }
      for (const std::uint8_t label : records.labels) {
        if (label >= format.classes) __builtin_trap();
      }
    } else {
      const mb::Dataset dataset = hundred ? mb::load_cifar100(dir.string(), false, limit)
                                          : mb::load_cifar10(dir.string(), false, limit);
      if (dataset.labels.numel() != dataset.size() || (limit > 0 && dataset.size() > limit))
        __builtin_trap();
    }
  });
  return 0;
}
