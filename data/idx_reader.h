// The IDX file format of MNIST and Fashion-MNIST: a big-endian magic number (0x0000 08 nn:
// unsigned bytes, nn dimensions), nn big-endian uint32 extents, then the bytes row-major.
// Files may be gzip-compressed or plain; both are read the same way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mb {

inline constexpr std::uint32_t kIdxImagesMagic = 0x00000803;  // ubyte, 3 dims [N, H, W]
inline constexpr std::uint32_t kIdxLabelsMagic = 0x00000801;  // ubyte, 1 dim [N]

struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;  // exactly product(dims) bytes
};

// Reads and validates a whole IDX file. Throws mb::IoError naming the file when it is
// missing or unreadable, when the gzip stream is corrupt, when the magic is not
// `expected_magic`, or when the file holds more or fewer bytes than its header promises
// (naming the byte offset, counted in the decompressed stream, and what was expected).
IdxArray read_idx_file(const std::string& path, std::uint32_t expected_magic);

}  // namespace mb
