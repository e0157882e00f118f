// libFuzzer target: load_fashion_mnist on a folder holding a train split. Input: one byte
// (bits 0-1: the limit, 0 = all; bit 2: images file named .gz or plain; bit 3: the same
// for labels), a little-endian u32 length L, then L bytes of the images file (fewer when
// the input ends) and the rest as the labels file.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "data/dataset.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mb::fuzz::initialize();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 5) return 0;
  const std::uint8_t flags = data[0];
  const std::size_t images_size = std::min<std::size_t>(mb::fuzz::read_le32(data + 1), size - 5);
  const std::uint8_t* images = data + 5;
  const std::uint8_t* labels = images + images_size;
  const std::size_t labels_size = size - 5 - images_size;

  const std::filesystem::path dir = mb::fuzz::scratch_dir() / "fashion";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string images_name = std::string("train-images-idx3-ubyte") + (flags & 4 ? ".gz" : "");
  const std::string labels_name = std::string("train-labels-idx1-ubyte") + (flags & 8 ? ".gz" : "");
  mb::fuzz::write_file(dir / images_name, images, images_size);
  mb::fuzz::write_file(dir / labels_name, labels, labels_size);
  const std::int64_t limit = flags & 3;
  mb::fuzz::expect_success_or_mb_error([&] {
    const mb::Dataset dataset = mb::load_fashion_mnist(dir.string(), true, limit);
    // What a loaded split promises the trainer: one label in [0, 10) per image.
    if (dataset.images.shape().ndim() != 4 || dataset.labels.numel() != dataset.size() ||
        (limit > 0 && dataset.size() > limit)) {
      __builtin_trap();
    }
    for (const std::int32_t label : dataset.labels.to_vector_int()) {
      if (label < 0 || label >= 10) __builtin_trap();
    }
  });
  return 0;
}
