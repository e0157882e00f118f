// JPEG through TurboJPEG, PNG through libspng.
#include "data/image_codec.h"

#if MB_WITH_IMAGES
#include <spng.h>
#include <turbojpeg.h>
#endif

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>

#include "runtime/error.h"

namespace mb {
#if MB_WITH_IMAGES
namespace {

// Larger images are refused before any allocation (a corrupt header can claim 4 billion rows).
constexpr std::int64_t kMaxPixels = std::int64_t{1} << 28;  // 256 megapixels, 768 MiB of RGB

// One TurboJPEG decompressor per thread: creating one costs more than decoding a thumbnail.
struct Decompressor {
  tjhandle handle = tjInitDecompress();
  ~Decompressor() {
    if (handle != nullptr) tjDestroy(handle);
  }
};

tjhandle decompressor() {
  thread_local Decompressor instance;
  MB_CHECK(instance.handle != nullptr,
           "TurboJPEG could not create a decompressor: ", tjGetErrorStr2(nullptr));
  return instance.handle;
}

bool is_premature_end(tjhandle handle) {
  return std::strstr(tjGetErrorStr2(handle), "Premature end") != nullptr;
}

void check_size(std::int64_t height, std::int64_t width, const std::string& name) {
  if (height <= 0 || width <= 0 || height * width > kMaxPixels) {
    MB_THROW(IoError, name, ": image of ", width, "x", height,
             " pixels is empty or larger than we decode (", kMaxPixels,
             " pixels). Fix: remove the file or resize it");
  }
}

ImageInfo jpeg_info(const std::uint8_t* bytes, std::size_t size, const std::string& name,
                    int* colorspace) {
  int width = 0, height = 0, subsampling = 0, space = 0;
  tjhandle handle = decompressor();
  if (tjDecompressHeader3(handle, bytes, static_cast<unsigned long>(size), &width, &height,
                          &subsampling, &space) != 0) {
    MB_THROW(IoError, name, ": corrupt JPEG header (", tjGetErrorStr2(handle),
             "). Fix: remove or replace the file");
  }
  if (width <= 0 || height <= 0) {
    MB_THROW(IoError, name,
             ": corrupt JPEG header (no image size). Fix: remove or replace the file");
  }
  check_size(height, width, name);
  if (colorspace != nullptr) *colorspace = space;
  return ImageInfo{ImageFormat::Jpeg, height, width};
}

DecodedImage decode_jpeg(const std::uint8_t* bytes, std::size_t size, const std::string& name,
                         std::int64_t min_height, std::int64_t min_width) {
  int colorspace = 0;
  const ImageInfo info = jpeg_info(bytes, size, name, &colorspace);
  if (min_height <= 0 && min_width <= 0) {  // no request: full size
    min_height = info.height;
    min_width = info.width;
  }
  // The smallest scale that keeps the requested size.
  int count = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&count);
  tjscalingfactor chosen{1, 1};
  for (int i = 0; i < count; ++i) {
    const tjscalingfactor f = factors[i];
    // Note: only 1/2, 1/4 and 1/8. libjpeg-turbo has SIMD inverse DCTs for full size and those
    // reductions; the other factors (3/4, 5/8, ...) run plain C and decode slower than full
    // size with SIMD (measured: an evaluation crop at 3/4 made 446 images/s, full size 546).
    if (f.num != 1 || (f.denom != 1 && f.denom != 2 && f.denom != 4 && f.denom != 8)) continue;
    if (TJSCALED(static_cast<int>(info.width), f) >= min_width &&
        TJSCALED(static_cast<int>(info.height), f) >= min_height &&
        f.num * chosen.denom < chosen.num * f.denom) {
      chosen = f;
    }
  }
  DecodedImage out;
  out.width = TJSCALED(static_cast<int>(info.width), chosen);
  out.height = TJSCALED(static_cast<int>(info.height), chosen);
  out.scale_numerator = chosen.num;
  out.scale_denominator = chosen.denom;
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  const int channels = cmyk ? 4 : 3;
  std::vector<std::uint8_t> decoded(static_cast<std::size_t>(out.height * out.width * channels));
  tjhandle handle = decompressor();
  // Note: a warning (extraneous bytes, say) does not fail a decode, as in PIL; a truncated
  // file does (libjpeg would fill the missing rows with grey and call it a warning).
  if (tjDecompress2(handle, bytes, static_cast<unsigned long>(size), decoded.data(),
                    static_cast<int>(out.width), 0, static_cast<int>(out.height),
                    cmyk ? TJPF_CMYK : TJPF_RGB, 0) != 0) {
    const bool warning = tjGetErrorCode(handle) == TJERR_WARNING;
    if (!warning || is_premature_end(handle)) {
      MB_THROW(IoError, name, ": ", warning ? "truncated" : "corrupt", " JPEG (",
               tjGetErrorStr2(handle), "). Fix: remove or replace the file");
    }
  }
  if (!cmyk) {
    out.pixels = std::move(decoded);
    return out;
  }
  // TurboJPEG's CMYK is inverted (Adobe's convention: 255 = no ink), so RGB = C * K / 255.
  out.pixels.resize(static_cast<std::size_t>(out.height * out.width * 3));
  for (std::int64_t i = 0; i < out.height * out.width; ++i) {
    const std::uint8_t* p = decoded.data() + 4 * i;
    for (int c = 0; c < 3; ++c) {
      out.pixels[static_cast<std::size_t>(3 * i + c)] =
          static_cast<std::uint8_t>((p[c] * p[3] + 127) / 255);
    }
  }
  return out;
}

struct SpngContext {
  spng_ctx* ctx;
  explicit SpngContext(int flags) : ctx(spng_ctx_new(flags)) {
    MB_CHECK(ctx != nullptr, "libspng could not create a context");
  }
  ~SpngContext() { spng_ctx_free(ctx); }
  SpngContext(const SpngContext&) = delete;
  SpngContext& operator=(const SpngContext&) = delete;
};

ImageInfo png_info(spng_ctx* ctx, const std::uint8_t* bytes, std::size_t size,
                   const std::string& name) {
  spng_set_image_limits(ctx, 1u << 20, 1u << 20);
  spng_set_chunk_limits(ctx, std::size_t{64} << 20, std::size_t{64} << 20);
  spng_set_png_buffer(ctx, bytes, size);
  spng_ihdr ihdr{};
  if (const int error = spng_get_ihdr(ctx, &ihdr); error != 0) {
    MB_THROW(IoError, name, ": corrupt PNG header (", spng_strerror(error),
             "). Fix: remove or replace the file");
  }
  check_size(ihdr.height, ihdr.width, name);
  return ImageInfo{ImageFormat::Png, ihdr.height, ihdr.width};
}

DecodedImage decode_png(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  SpngContext context(0);
  const ImageInfo info = png_info(context.ctx, bytes, size, name);
  DecodedImage out;
  out.height = info.height;
  out.width = info.width;
  std::size_t length = 0;
  if (const int error = spng_decoded_image_size(context.ctx, SPNG_FMT_RGB8, &length); error != 0) {
    MB_THROW(IoError, name, ": PNG cannot be decoded to RGB (", spng_strerror(error), ")");
  }
  MB_CHECK(length == static_cast<std::size_t>(info.height * info.width * 3), name,
           ": libspng's RGB size ", length, " is not ", info.height * info.width * 3);
  out.pixels.resize(length);
  if (const int error = spng_decode_image(context.ctx, out.pixels.data(), length, SPNG_FMT_RGB8, 0);
      error != 0) {
    MB_THROW(IoError, name, ": ", error == SPNG_EOF ? "truncated" : "corrupt", " PNG (",
             spng_strerror(error), "). Fix: remove or replace the file");
  }
  return out;
}

}  // namespace
#endif

bool images_supported() {
  return MB_WITH_IMAGES != 0;
}

ImageFormat sniff_image_format(const std::uint8_t* bytes, std::size_t size) {
  static const std::uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) {
    return ImageFormat::Jpeg;
  }
  if (size >= 8 && std::memcmp(bytes, kPng, 8) == 0) return ImageFormat::Png;
  return ImageFormat::Unknown;
}

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::Jpeg: return "JPEG";
    case ImageFormat::Png: return "PNG";
    case ImageFormat::Unknown: break;
  }
  return "unknown";
}

namespace {

[[noreturn]] void throw_not_an_image(std::size_t size, const std::string& name) {
  if (size == 0) MB_THROW(IoError, name, ": empty file. Fix: remove or replace it");
  MB_THROW(IoError, name,
           ": not a JPEG or PNG file (we decode those two; the first bytes say neither). Fix: "
           "convert it to JPEG or PNG, or move it out of the class folder");
}

#if !MB_WITH_IMAGES
[[noreturn]] void throw_not_built(const std::string& name) {
  MB_THROW(IoError, name,
           ": this build of microbatch decodes no images (built without libturbojpeg0-dev and "
           "libspng-dev). Fix: install them and rebuild (tools/setup.sh does both)");
}
#endif

}  // namespace

ImageInfo read_image_info(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
#if !MB_WITH_IMAGES
  if (sniff_image_format(bytes, size) != ImageFormat::Unknown) throw_not_built(name);
#else
  switch (sniff_image_format(bytes, size)) {
    case ImageFormat::Jpeg: return jpeg_info(bytes, size, name, nullptr);
    case ImageFormat::Png: {
      SpngContext context(0);
      return png_info(context.ctx, bytes, size, name);
    }
    case ImageFormat::Unknown: break;
  }
#endif
  throw_not_an_image(size, name);
}

DecodedImage decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& name,
                          std::int64_t min_height, std::int64_t min_width) {
#if !MB_WITH_IMAGES
  (void)min_height;
  (void)min_width;
  if (sniff_image_format(bytes, size) != ImageFormat::Unknown) throw_not_built(name);
#else
  switch (sniff_image_format(bytes, size)) {
    case ImageFormat::Jpeg: return decode_jpeg(bytes, size, name, min_height, min_width);
    case ImageFormat::Png: return decode_png(bytes, size, name);
    case ImageFormat::Unknown: break;
  }
#endif
  throw_not_an_image(size, name);
}

std::vector<std::uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) MB_THROW(IoError, path, ": cannot be opened for reading. Fix: check its permissions");
  const std::streamoff size = in.tellg();
  if (size < 0) MB_THROW(IoError, path, ": cannot be read (is it a regular file?)");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) {
    MB_THROW(IoError, path, ": read failed after ", in.gcount(), " of ", size, " bytes");
  }
  return bytes;
}

#if MB_WITH_IMAGES
std::vector<std::uint8_t> encode_jpeg(const std::uint8_t* rgb, std::int64_t height,
                                      std::int64_t width, int quality) {
  MB_CHECK(quality >= 1 && quality <= 100, "encode_jpeg: quality must be in [1, 100], got ",
           quality);
  MB_CHECK(height > 0 && width > 0 && height <= std::numeric_limits<int>::max() &&
               width <= std::numeric_limits<int>::max(),
           "encode_jpeg: bad size ", width, "x", height);
  tjhandle handle = tjInitCompress();
  MB_CHECK(handle != nullptr, "TurboJPEG could not create a compressor");
  unsigned char* buffer = nullptr;
  unsigned long length = 0;
  const int status = tjCompress2(handle, rgb, static_cast<int>(width), 0, static_cast<int>(height),
                                 TJPF_RGB, &buffer, &length, TJSAMP_420, quality, 0);
  const std::string error = status != 0 ? tjGetErrorStr2(handle) : "";
  std::vector<std::uint8_t> out;
  if (status == 0) out.assign(buffer, buffer + length);
  tjFree(buffer);
  tjDestroy(handle);
  MB_CHECK(status == 0, "encode_jpeg: ", error);
  return out;
}

std::vector<std::uint8_t> encode_png(const std::uint8_t* rgb, std::int64_t height,
                                     std::int64_t width) {
  MB_CHECK(height > 0 && width > 0 && height <= (1 << 20) && width <= (1 << 20),
           "encode_png: bad size ", width, "x", height);
  SpngContext context(SPNG_CTX_ENCODER);
  spng_set_option(context.ctx, SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr ihdr{};
  ihdr.width = static_cast<std::uint32_t>(width);
  ihdr.height = static_cast<std::uint32_t>(height);
  ihdr.bit_depth = 8;
  ihdr.color_type = SPNG_COLOR_TYPE_TRUECOLOR;
  spng_set_ihdr(context.ctx, &ihdr);
  int error = spng_encode_image(context.ctx, rgb, static_cast<std::size_t>(height * width * 3),
                                SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
  MB_CHECK(error == 0, "encode_png: ", spng_strerror(error));
  std::size_t length = 0;
  void* buffer = spng_get_png_buffer(context.ctx, &length, &error);
  MB_CHECK(buffer != nullptr && error == 0, "encode_png: ", spng_strerror(error));
  const auto* begin = static_cast<const std::uint8_t*>(buffer);
  std::vector<std::uint8_t> out(begin, begin + length);
  std::free(buffer);  // libspng's buffer, allocated with its default (malloc) allocator
  return out;
}
#else
std::vector<std::uint8_t> encode_jpeg(const std::uint8_t*, std::int64_t, std::int64_t, int) {
  throw_not_built("encode_jpeg");
}
std::vector<std::uint8_t> encode_png(const std::uint8_t*, std::int64_t, std::int64_t) {
  throw_not_built("encode_png");
}
#endif

}  // namespace mb
