// libFuzzer target: read_idx_file on one file, gzip or raw (the reader decides by the
// bytes). Input: one selector byte (even: the images magic 0x00000803, odd: the labels
// magic 0x00000801), then the file.
#include <cstddef>
#include <cstdint>

#include "data/idx_reader.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mb::fuzz::initialize();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint32_t magic = (data[0] & 1) == 0 ? mb::kIdxImagesMagic : mb::kIdxLabelsMagic;
  const auto path = mb::fuzz::scratch_dir() / "input.idx";
  mb::fuzz::write_file(path, data + 1, size - 1);
  mb::fuzz::expect_success_or_mb_error([&] {
    const mb::IdxArray array = mb::read_idx_file(path.string(), magic);
    // The promise of the header: exactly product(dims) data bytes.
    std::uint64_t product = 1;
    for (const std::int64_t d : array.dims) product *= static_cast<std::uint64_t>(d);
    if (array.dims.size() != (magic & 0xFFu) || product != array.data.size()) __builtin_trap();
  });
  return 0;
}
