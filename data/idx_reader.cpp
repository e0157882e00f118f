// IDX reading through zlib (gzread reads plain files transparently) and the Fashion-MNIST
// loader built on it.
#include "data/idx_reader.h"

#include <zlib.h>

#include <algorithm>
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

// The whole (decompressed) content of `path`.
std::vector<std::uint8_t> read_all_bytes(const std::string& path) {
  if (!std::filesystem::exists(path)) MB_THROW(IoError, path, ": no such file");
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) MB_THROW(IoError, path, ": cannot open for reading");
  std::vector<std::uint8_t> bytes;
  constexpr std::size_t kChunk = 1 << 20;
  gzbuffer(file, kChunk);
  for (;;) {
    const std::size_t old_size = bytes.size();
    bytes.resize(old_size + kChunk);
    const int got = gzread(file, bytes.data() + old_size, static_cast<unsigned>(kChunk));
    bytes.resize(old_size + static_cast<std::size_t>(std::max(got, 0)));
    if (got < 0) break;  // reported below through gzerror
    if (got == 0) break;
  }
  int error_code = Z_OK;
  const char* message = gzerror(file, &error_code);
  const std::string error_text = message != nullptr ? message : "";
  gzclose(file);
  if (error_code != Z_OK && error_code != Z_STREAM_END) {
    MB_THROW(IoError, path, ": corrupt or truncated gzip stream after decompressed byte offset ",
             bytes.size(), " (zlib: ", error_text, "); re-download or re-install the file");
  }
  return bytes;
}

}  // namespace

IdxArray read_idx_file(const std::string& path, std::uint32_t expected_magic) {
  std::vector<std::uint8_t> bytes = read_all_bytes(path);
  if (bytes.size() < 4) {
    MB_THROW(IoError, path, ": truncated at byte offset ", bytes.size(),
             ": expected a 4-byte IDX magic number ", hex32(expected_magic));
  }
  const std::uint32_t magic = read_be32(bytes.data());
  if (magic != expected_magic) {
    MB_THROW(IoError, path, ": bad IDX magic ", hex32(magic), " at byte offset 0, expected ",
             hex32(expected_magic), " (unsigned bytes, ", expected_magic & 0xFFu,
             " dimensions); is this the right file?");
  }
  const std::size_t ndim = expected_magic & 0xFFu;
  const std::size_t header_bytes = 4 + 4 * ndim;
  if (bytes.size() < header_bytes) {
    MB_THROW(IoError, path, ": truncated at byte offset ", bytes.size(), ": expected ", ndim,
             " big-endian uint32 dimensions ending at byte offset ", header_bytes);
  }
  IdxArray result;
  std::uint64_t payload = 1;
  for (std::size_t d = 0; d < ndim; ++d) {
    const std::uint32_t extent = read_be32(bytes.data() + 4 + 4 * d);
    // Note: a guard against absurd headers; the largest real IDX file is 47 MB.
    if (extent > (1u << 30) || payload * extent > (std::uint64_t{1} << 40)) {
      MB_THROW(IoError, path, ": implausible dimension ", extent, " at byte offset ", 4 + 4 * d);
    }
    payload *= extent;
    result.dims.push_back(extent);
  }
  const std::uint64_t expected_total = header_bytes + payload;
  if (bytes.size() < expected_total) {
    MB_THROW(IoError, path, ": truncated at byte offset ", bytes.size(), ": expected ", payload,
             " data bytes from byte offset ", header_bytes, " to ", expected_total,
             " (decompressed)");
  }
  if (bytes.size() > expected_total) {
    MB_THROW(IoError, path, ": ", bytes.size() - expected_total,
             " unexpected extra bytes after byte offset ", expected_total,
             ": the header promises exactly ", payload, " data bytes");
  }
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header_bytes));
  result.data = std::move(bytes);
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
