// libFuzzer target: JPEG and PNG decoding (data/image_codec.h) and an image-folder sample
// (decode + RandomResizedCrop + resize + flip, data/image_dataset.h). Input: one byte (bits
// 0-1: the decode's requested size, none / 1 / 16 / 224 pixels, which picks the DCT scale;
// bit 2: load it as the one sample of an image folder, 16x16 output, else decode it alone;
// bit 3: the sample's evaluation transform instead of training's), then the file.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "data/image_codec.h"
#include "data/image_dataset.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mb::fuzz::initialize();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static const std::int64_t kRequested[4] = {0, 1, 16, 224};
  const std::int64_t requested = kRequested[data[0] & 3];
  const std::uint8_t* file = data + 1;
  const std::size_t bytes = size - 1;
  mb::fuzz::expect_success_or_mb_error([&] {
    if ((data[0] & 4) == 0) {
      const mb::ImageInfo info = mb::read_image_info(file, bytes, "fuzz");
      const mb::DecodedImage image = mb::decode_image(file, bytes, "fuzz", requested, requested);
      if (image.height <= 0 || image.width <= 0 || image.height > info.height ||
          image.width > info.width ||
          image.pixels.size() != static_cast<std::size_t>(image.height * image.width * 3)) {
        __builtin_trap();
      }
      return;
    }
    const std::filesystem::path dir = mb::fuzz::scratch_dir() / "images";
    const std::filesystem::path folder = dir / ((data[0] & 8) ? "val" : "train") / "class";
    std::filesystem::create_directories(folder);
    mb::fuzz::write_file(folder / "sample.jpg", file, bytes);
    mb::ImageFolderOptions options;
    options.image_size = 16;
    const mb::Dataset dataset = mb::load_image_folder(dir.string(), (data[0] & 8) == 0, 0, options);
    std::vector<std::uint8_t> out(3 * 16 * 16);
    std::int32_t label = -1;
    dataset.source->load(0, 1, 0, out.data(), &label);
    if (label != 0) __builtin_trap();
  });
  return 0;
}
