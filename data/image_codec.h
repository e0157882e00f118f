// Decoding (and, for tests and benchmarks, encoding) of JPEG and PNG files to 8-bit RGB.
//
// JPEG goes through libjpeg-turbo's TurboJPEG API, PNG through libspng. Every image comes
// out as interleaved RGB rows (height x width x 3), as PIL's Image.convert("RGB") gives it:
// grey is replicated, palettes expanded, alpha dropped, 16-bit samples scaled to 8 bits.
//
// DCT scaling: a JPEG can be decoded at 1/2, 1/4 or 1/8 of its size for a fraction of the
// work, because the inverse DCT then computes fewer outputs per block (as DALI does, and PIL's
// draft mode). decode_image() takes the smallest such scale that still leaves at least the
// requested number of rows and columns (libjpeg-turbo's other factors, 3/4 and the like, have
// no SIMD code and decode slower than full size); the crop a transform asked for in
// full-size coordinates is then mapped into the scaled image (scale_numerator / denominator).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mb {

enum class ImageFormat { Jpeg, Png, Unknown };

// What the file's first bytes say it is (never its name).
ImageFormat sniff_image_format(const std::uint8_t* bytes, std::size_t size);
const char* image_format_name(ImageFormat format);

struct ImageInfo {
  ImageFormat format = ImageFormat::Unknown;
  std::int64_t height = 0;
  std::int64_t width = 0;
};

struct DecodedImage {
  std::int64_t height = 0;  // of `pixels`, after any DCT scaling
  std::int64_t width = 0;
  std::vector<std::uint8_t> pixels;  // height * width * 3, RGB
  // pixels show the full image scaled by numerator / denominator (1/1 unless DCT-scaled).
  int scale_numerator = 1;
  int scale_denominator = 1;
};

// The format and full size from the header alone. Throws mb::IoError naming `name` (the
// file) when the bytes are not a JPEG or PNG, or its header is corrupt.
ImageInfo read_image_info(const std::uint8_t* bytes, std::size_t size, const std::string& name);

// Decodes to RGB. JPEG: at the smallest DCT scale whose result keeps at least min_height rows
// and min_width columns (0, 0: full size; PNG is always full size). Throws mb::IoError
// naming `name` and what is wrong (not an image, corrupt, truncated) for anything that does
// not decode completely: a truncated JPEG is an error, not a grey tail.
DecodedImage decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& name,
                          std::int64_t min_height = 0, std::int64_t min_width = 0);

// Reads a whole file (mb::IoError naming it when it cannot).
std::vector<std::uint8_t> read_file_bytes(const std::string& path);

// Whether this build decodes images (MB_WITH_IMAGES: libturbojpeg and libspng found).
bool images_supported();

// Encoders for RGB rows (height x width x 3): JPEG at `quality` (1..100, 4:2:0 chroma
// subsampling, as cameras and ImageNet's files use) and PNG (8-bit RGB, lossless).
std::vector<std::uint8_t> encode_jpeg(const std::uint8_t* rgb, std::int64_t height,
                                      std::int64_t width, int quality);
std::vector<std::uint8_t> encode_png(const std::uint8_t* rgb, std::int64_t height,
                                     std::int64_t width);

}  // namespace mb
