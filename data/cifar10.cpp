// CIFAR-10 and CIFAR-100 binary readers and the split loaders.
#include "data/cifar10.h"

#include <cstdio>
#include <filesystem>
#include <memory>

#include "data/dataset.h"
#include "runtime/error.h"

namespace mb {

Cifar10Records read_cifar_file(const std::string& path, const CifarFormat& format,
                               std::int64_t max_records) {
  MB_CHECK(max_records >= 0, "read_cifar_file: max_records must be >= 0, got ", max_records);
  const std::int64_t record_bytes = format.record_bytes();
  std::error_code error;
  const auto file_size = std::filesystem::file_size(path, error);
  if (error) MB_THROW(IoError, path, ": cannot read: ", error.message());
  const auto size = static_cast<std::int64_t>(file_size);
  if (size == 0)
    MB_THROW(IoError, path, ": empty file, expected ", format.name, " records of ", record_bytes,
             " bytes");
  if (size % record_bytes != 0) {
    const std::int64_t whole = size / record_bytes;
    MB_THROW(IoError, path, ": truncated record at byte offset ", whole * record_bytes,
             ": expected ", record_bytes, " bytes per ", format.name, " record (",
             format.label_bytes, " label + 3072 pixels), the file ends after ",
             size - whole * record_bytes);
  }
  std::int64_t count = size / record_bytes;
  if (max_records > 0 && max_records < count) count = max_records;

  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) MB_THROW(IoError, path, ": cannot open for reading");
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(count * record_bytes));
  const std::size_t got = std::fread(raw.data(), 1, raw.size(), file.get());
  if (got != raw.size()) {
    MB_THROW(IoError, path, ": read failed at byte offset ", got, ", expected ", raw.size(),
             " bytes");
  }
  Cifar10Records records;
  records.labels.resize(static_cast<std::size_t>(count));
  records.pixels.resize(static_cast<std::size_t>(count * kCifar10ImageBytes));
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint8_t* record = raw.data() + i * record_bytes;
    const std::uint8_t label = record[format.class_byte];
    if (label >= format.classes) {
      MB_THROW(IoError, path, ": label ", int(label), " at byte offset ",
               i * record_bytes + format.class_byte, " (record ", i, ") is outside [0, ",
               format.classes, "); is this the binary version of ", format.name, "?");
    }
    if (format.coarse_classes > 0 && record[0] >= format.coarse_classes) {
      MB_THROW(IoError, path, ": coarse label ", int(record[0]), " at byte offset ",
               i * record_bytes, " (record ", i, ") is outside [0, ", format.coarse_classes,
               "); is this the binary version of ", format.name, "?");
    }
    records.labels[static_cast<std::size_t>(i)] = label;
    std::copy(record + format.label_bytes, record + record_bytes,
              records.pixels.begin() + i * kCifar10ImageBytes);
  }
  return records;
}

namespace {

// The folder holding the batch files: `dir` itself or `dir`/`subfolder` (the archive's).
std::filesystem::path find_cifar_dir(const std::string& dir, const std::string& probe,
                                     const CifarFormat& format, const std::string& subfolder,
                                     const std::string& archive) {
  const std::filesystem::path base(dir);
  if (std::filesystem::exists(base / probe)) return base;
  if (std::filesystem::exists(base / subfolder / probe)) return base / subfolder;
  MB_THROW(IoError, format.name, " file not found: ", (base / probe).string(), " (nor ",
           (base / subfolder / probe).string(), "). Download the binary version (", archive,
           " from https://www.cs.toronto.edu/~kriz/cifar.html), extract it, and pass "
           "--data-dir DIR naming the folder that holds ",
           subfolder, "/");
}

// The split from its files, in order, up to `limit` records (0: all).
Dataset load_cifar(const std::filesystem::path& folder, const std::vector<std::string>& names,
                   const CifarFormat& format, const std::string& dataset_name, std::int64_t limit) {
  Cifar10Records all;
  for (const std::string& name : names) {
    const std::filesystem::path path = folder / name;
    if (!std::filesystem::exists(path)) {
      MB_THROW(IoError, format.name, " file not found: ", path.string(),
               " (the other batch files are there; re-extract the archive or pass --data-dir)");
    }
    const std::int64_t wanted = limit > 0 ? limit - all.count() : 0;
    Cifar10Records part = read_cifar_file(path.string(), format, wanted);
    all.labels.insert(all.labels.end(), part.labels.begin(), part.labels.end());
    all.pixels.insert(all.pixels.end(), part.pixels.begin(), part.pixels.end());
    if (limit > 0 && all.count() >= limit) break;
  }

  const std::int64_t n = all.count();
  Dataset dataset;
  dataset.name = dataset_name;
  dataset.num_classes = format.classes;
  TensorOptions options;
  options.tag = MemoryTag::Data;
  options.dtype = DType::Int32;
  dataset.labels = Tensor::empty(Shape{n}, options);
  std::int32_t* labels = dataset.labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i) labels[i] = all.labels[static_cast<std::size_t>(i)];
  options.dtype = DType::Float32;
  dataset.images = Tensor::empty(Shape{n, 3, 32, 32}, options);
  float* pixels = dataset.images.data<float>();
  for (std::size_t i = 0; i < all.pixels.size(); ++i)
    pixels[i] = static_cast<float>(all.pixels[i]) / 255.0f;
  return dataset;
}

}  // namespace

Dataset load_cifar10(const std::string& data_dir, bool train, std::int64_t limit) {
  MB_CHECK(limit >= 0, "load_cifar10: limit must be >= 0 (0 = all), got ", limit);
  const std::string dir = data_dir.empty() ? "." : data_dir;
  std::vector<std::string> names;
  if (train) {
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    names.push_back("test_batch.bin");
  }
  const std::filesystem::path folder = find_cifar_dir(
      dir, names.front(), kCifar10Format, "cifar-10-batches-bin", "cifar-10-binary.tar.gz");
  return load_cifar(folder, names, kCifar10Format, "cifar10", limit);
}

Dataset load_cifar100(const std::string& data_dir, bool train, std::int64_t limit) {
  MB_CHECK(limit >= 0, "load_cifar100: limit must be >= 0 (0 = all), got ", limit);
  const std::string dir = data_dir.empty() ? "." : data_dir;
  const std::string name = train ? "train.bin" : "test.bin";
  const std::filesystem::path folder =
      find_cifar_dir(dir, name, kCifar100Format, "cifar-100-binary", "cifar-100-binary.tar.gz");
  return load_cifar(folder, {name}, kCifar100Format, "cifar100", limit);
}

}  // namespace mb
