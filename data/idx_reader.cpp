// IDX reading through zlib (gzread reads plain files transparently) and the Fashion-MNIST
// loader built on it.
#include "data/idx_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "data/dataset.h"
#include "runtime/error.h"

namespace mb {
namespace {

std::string hex32(std::uint32_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << std::setw(8) << std::setfill('0') << value;
  return out.str();
}

std::uint32_t read_be32(const std::uint8_t* p) {
  return (static_cast<std::uint32_t>(p[0]) << 24) | (static_cast<std::uint32_t>(p[1]) << 16) |
         (static_cast<std::uint32_t>(p[2]) << 8) | static_cast<std::uint32_t>(p[3]);
}

// The bytes of an IDX file, decompressed on the fly when it starts with the gzip magic
// (1f 8b), read as they are otherwise. Reads only as much as asked: the reader takes the
// header first and then no more than the header promises, so a small file that inflates
// to gigabytes costs what its header says, not what it inflates to. Offsets in errors are
// exact: the decompressed byte where the stream broke and the compressed byte zlib reached.
class ByteSource {
 public:
  explicit ByteSource(const std::string& path) : path_(path) {
    if (!std::filesystem::exists(path)) MB_THROW(IoError, path, ": no such file");
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) MB_THROW(IoError, path, ": cannot open for reading");
    fill();
    gzip_ = available_ >= 2 && input_[0] == 0x1f && input_[1] == 0x8b;
    if (gzip_) {
      // 15 + 16: a gzip wrapper (not zlib, not raw deflate), the largest window.
      if (inflateInit2(&stream_, 15 + 16) != Z_OK) {
        std::fclose(file_);
        MB_THROW(IoError, path, ": cannot start zlib (out of memory?)");
      }
    }
  }
  ~ByteSource() {
    if (gzip_) inflateEnd(&stream_);
    std::fclose(file_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Up to `size` bytes into `out`; fewer only where the data ends.
  std::size_t read(std::uint8_t* out, std::size_t size) {
    std::size_t got = 0;
    while (got < size) {
      const std::size_t step =
          gzip_ ? inflate_some(out + got, size - got) : copy_some(out + got, size - got);
      if (step == 0) break;
      got += step;
    }
    offset_ += got;
    return got;
  }

  // Decompressed bytes delivered so far.
  std::uint64_t offset() const { return offset_; }

 private:
  void fill() {
    available_ = std::fread(input_, 1, sizeof input_, file_);
    next_ = 0;
    if (available_ == 0 && std::ferror(file_)) MB_THROW(IoError, path_, ": read error");
    consumed_ += available_;
  }

  std::size_t copy_some(std::uint8_t* out, std::size_t size) {
    if (next_ == available_) fill();
    const std::size_t n = std::min(size, available_ - next_);
    std::copy(input_ + next_, input_ + next_ + n, out);
    next_ += n;
    return n;
  }

  std::size_t inflate_some(std::uint8_t* out, std::size_t size) {
    for (;;) {
      if (finished_) {
        // Concatenated gzip members are one stream (gzip(1) and zlib's gzread agree);
        // anything else after the last member is not gzip data.
        if (next_ == available_) fill();
        if (next_ == available_) return 0;
        if (available_ - next_ >= 2 && input_[next_] == 0x1f && input_[next_ + 1] == 0x8b) {
          inflateReset(&stream_);
          finished_ = false;
        } else {
          MB_THROW(IoError, path_, ": ", available_ - next_ + remaining_in_file(),
                   " bytes of trailing garbage after the gzip stream ends at compressed byte "
                   "offset ",
                   compressed_offset(), "; re-download or re-install the file");
        }
      }
      if (next_ == available_) {
        fill();
        if (available_ == 0) {
          MB_THROW(IoError, path_,
                   ": truncated gzip stream: the file ends at compressed byte "
                   "offset ",
                   compressed_offset(), " (decompressed byte offset ", offset_,
                   ") before the end of its gzip data; re-download or re-install the file");
        }
      }
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(size, 1u << 30));
      stream_.next_in = input_ + next_;
      stream_.avail_in = static_cast<unsigned>(available_ - next_);
      stream_.next_out = out;
      stream_.avail_out = chunk;
      const int status = inflate(&stream_, Z_NO_FLUSH);
      next_ = available_ - stream_.avail_in;
      const std::size_t produced = chunk - stream_.avail_out;
      if (status == Z_STREAM_END) {
        finished_ = true;
      } else if (status != Z_OK && status != Z_BUF_ERROR) {
        MB_THROW(IoError, path_, ": corrupt gzip stream at compressed byte offset ",
                 compressed_offset(), " (decompressed byte offset ", offset_ + produced,
                 "; zlib: ", stream_.msg != nullptr ? stream_.msg : zError(status),
                 "); re-download or re-install the file");
      }
      if (produced > 0) return produced;
    }
  }

  std::uint64_t compressed_offset() const { return consumed_ - (available_ - next_); }
  std::uint64_t remaining_in_file() {
    const long here = std::ftell(file_);
    if (here < 0 || std::fseek(file_, 0, SEEK_END) != 0) return 0;
    const long end = std::ftell(file_);
    return end > here ? static_cast<std::uint64_t>(end - here) : 0;
  }

  std::string path_;
  std::FILE* file_ = nullptr;
  bool gzip_ = false;
  bool finished_ = false;
  z_stream stream_{};
  std::uint8_t input_[1 << 16];
  std::size_t available_ = 0, next_ = 0;
  std::uint64_t consumed_ = 0;  // compressed bytes read from the file
  std::uint64_t offset_ = 0;    // decompressed bytes delivered
};

// Note: a guard against absurd headers: the largest real IDX file is 47 MB, and the loader
// turns each byte into a 4-byte float. 2^34 bytes (16 GiB) is far beyond any real file.
constexpr std::uint64_t kMaxIdxPayload = std::uint64_t{1} << 34;

}  // namespace

IdxArray read_idx_file(const std::string& path, std::uint32_t expected_magic) {
  ByteSource source(path);
  std::uint8_t header[4 + 4 * 255];
  if (source.read(header, 4) < 4) {
    MB_THROW(IoError, path, ": truncated at byte offset ", source.offset(),
             ": expected a 4-byte IDX magic number ", hex32(expected_magic));
  }
  const std::uint32_t magic = read_be32(header);
  if (magic != expected_magic) {
    MB_THROW(IoError, path, ": bad IDX magic ", hex32(magic), " at byte offset 0, expected ",
             hex32(expected_magic), " (unsigned bytes, ", expected_magic & 0xFFu,
             " dimensions); is this the right file?");
  }
  const std::size_t ndim = expected_magic & 0xFFu;
  const std::size_t header_bytes = 4 + 4 * ndim;
  if (source.read(header + 4, 4 * ndim) < 4 * ndim) {
    MB_THROW(IoError, path, ": truncated at byte offset ", source.offset(), ": expected ", ndim,
             " big-endian uint32 dimensions ending at byte offset ", header_bytes);
  }
  IdxArray result;
  std::uint64_t payload = 1;
  for (std::size_t d = 0; d < ndim; ++d) {
    const std::uint32_t extent = read_be32(header + 4 + 4 * d);
    if (extent > (1u << 30) || payload * extent > kMaxIdxPayload) {
      MB_THROW(IoError, path, ": implausible dimension ", extent, " at byte offset ", 4 + 4 * d,
               ": the header would promise more than ", kMaxIdxPayload, " data bytes");
    }
    payload *= extent;
    result.dims.push_back(extent);
  }
  const std::uint64_t expected_total = header_bytes + payload;
  // Grown as the data arrives, so a header that promises much more than the file holds
  // costs what the file holds.
  constexpr std::size_t kChunk = std::size_t{1} << 22;
  while (result.data.size() < payload) {
    const std::size_t old_size = result.data.size();
    const std::size_t want = static_cast<std::size_t>(
        std::min<std::uint64_t>(kChunk, payload - static_cast<std::uint64_t>(old_size)));
    result.data.resize(old_size + want);
    const std::size_t got = source.read(result.data.data() + old_size, want);
    result.data.resize(old_size + got);
    if (got < want) {
      MB_THROW(IoError, path, ": truncated at byte offset ", source.offset(), ": expected ",
               payload, " data bytes from byte offset ", header_bytes, " to ", expected_total,
               " (decompressed)");
    }
  }
  // Anything after the promised bytes is an error; count it up to a bound, not to the end
  // of a stream that may inflate without end.
  constexpr std::uint64_t kCountExtraUpTo = std::uint64_t{1} << 26;
  std::uint8_t scratch[1 << 14];
  std::uint64_t extra = 0;
  for (;;) {
    const std::size_t got = source.read(scratch, sizeof scratch);
    extra += got;
    if (got < sizeof scratch || extra >= kCountExtraUpTo) break;
  }
  if (extra > 0) {
    MB_THROW(IoError, path, ": ", extra >= kCountExtraUpTo ? "at least " : "", extra,
             " unexpected extra bytes after byte offset ", expected_total,
             ": the header promises exactly ", payload, " data bytes");
  }
  return result;
}

namespace {

// `<dir>/<stem>.gz` if present, else `<dir>/<stem>`; IoError with the fix if neither.
std::string find_idx_file(const std::string& dir, const std::string& stem) {
  const std::filesystem::path base = std::filesystem::path(dir) / stem;
  const std::string gz = base.string() + ".gz";
  if (std::filesystem::exists(gz)) return gz;
  if (std::filesystem::exists(base)) return base.string();
  MB_THROW(IoError, "Fashion-MNIST file not found: ", gz, " (nor ", base.string(),
           "). Install the data with `apt-get install dataset-fashion-mnist` (it goes to ",
           kDefaultFashionMnistDir, ") or pass --data-dir DIR naming a folder that holds ", stem,
           ".gz");
}

}  // namespace

Dataset load_fashion_mnist(const std::string& data_dir, bool train, std::int64_t limit) {
  MB_CHECK(limit >= 0, "load_fashion_mnist: limit must be >= 0 (0 = all), got ", limit);
  const std::string dir = data_dir.empty() ? kDefaultFashionMnistDir : data_dir;
  const std::string prefix = train ? "train" : "t10k";
  const std::string images_path = find_idx_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_idx_file(dir, prefix + "-labels-idx1-ubyte");
  const IdxArray images = read_idx_file(images_path, kIdxImagesMagic);
  const IdxArray labels = read_idx_file(labels_path, kIdxLabelsMagic);
  if (images.dims[0] != labels.dims[0]) {
    MB_THROW(IoError, images_path, " holds ", images.dims[0], " images but ", labels_path,
             " holds ", labels.dims[0], " labels; the two files do not belong together");
  }
  constexpr std::int64_t kClasses = 10;
  const std::int64_t available = images.dims[0];
  const std::int64_t n = limit > 0 && limit < available ? limit : available;
  const std::int64_t height = images.dims[1], width = images.dims[2];

  Dataset dataset;
  dataset.name = "fashion-mnist";
  dataset.num_classes = kClasses;
  TensorOptions options;
  options.tag = MemoryTag::Data;
  options.dtype = DType::Int32;
  dataset.labels = Tensor::empty(Shape{n}, options);
  std::int32_t* label_out = dataset.labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint8_t label = labels.data[static_cast<std::size_t>(i)];
    if (label >= kClasses) {
      MB_THROW(IoError, labels_path, ": label ", int(label), " at byte offset ", 8 + i,
               " is outside [0, ", kClasses, ")");
    }
    label_out[i] = label;
  }
  options.dtype = DType::Float32;
  dataset.images = Tensor::empty(Shape{n, 1, height, width}, options);
  float* pixels = dataset.images.data<float>();
  const std::int64_t count = n * height * width;
  for (std::int64_t i = 0; i < count; ++i) {
    pixels[i] = static_cast<float>(images.data[static_cast<std::size_t>(i)]) / 255.0f;
  }
  return dataset;
}

}  // namespace mb
