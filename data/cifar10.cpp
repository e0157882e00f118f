// CIFAR-10 binary reader and the split loader.
#include "data/cifar10.h"

#include <cstdio>
#include <filesystem>
#include <memory>

#include "data/dataset.h"
#include "runtime/error.h"

namespace mb {

Cifar10Records read_cifar10_file(const std::string& path, std::int64_t max_records) {
  MB_CHECK(max_records >= 0, "read_cifar10_file: max_records must be >= 0, got ", max_records);
  std::error_code error;
  const auto file_size = std::filesystem::file_size(path, error);
  if (error) MB_THROW(IoError, path, ": cannot read: ", error.message());
  const auto size = static_cast<std::int64_t>(file_size);
  if (size == 0)
    MB_THROW(IoError, path, ": empty file, expected records of ", kCifar10RecordBytes, " bytes");
  if (size % kCifar10RecordBytes != 0) {
    const std::int64_t whole = size / kCifar10RecordBytes;
    MB_THROW(IoError, path, ": truncated record at byte offset ", whole * kCifar10RecordBytes,
             ": expected ", kCifar10RecordBytes,
             " bytes per record (1 label + 3072 pixels), the file ends after ",
             size - whole * kCifar10RecordBytes);
  }
  std::int64_t count = size / kCifar10RecordBytes;
  if (max_records > 0 && max_records < count) count = max_records;

  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) MB_THROW(IoError, path, ": cannot open for reading");
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(count * kCifar10RecordBytes));
  const std::size_t got = std::fread(raw.data(), 1, raw.size(), file.get());
  if (got != raw.size()) {
    MB_THROW(IoError, path, ": read failed at byte offset ", got, ", expected ", raw.size(),
             " bytes");
  }
  Cifar10Records records;
  records.labels.resize(static_cast<std::size_t>(count));
  records.pixels.resize(static_cast<std::size_t>(count * kCifar10ImageBytes));
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint8_t* record = raw.data() + i * kCifar10RecordBytes;
    if (record[0] >= kCifar10Classes) {
      MB_THROW(IoError, path, ": label ", int(record[0]), " at byte offset ",
               i * kCifar10RecordBytes, " (record ", i, ") is outside [0, ", kCifar10Classes,
               "); is this the binary version of CIFAR-10?");
    }
    records.labels[static_cast<std::size_t>(i)] = record[0];
    std::copy(record + 1, record + kCifar10RecordBytes,
              records.pixels.begin() + i * kCifar10ImageBytes);
  }
  return records;
}

namespace {

// The folder holding the batch files: `dir` itself or `dir`/cifar-10-batches-bin.
std::filesystem::path find_cifar10_dir(const std::string& dir, const std::string& probe) {
  const std::filesystem::path base(dir);
  if (std::filesystem::exists(base / probe)) return base;
  if (std::filesystem::exists(base / "cifar-10-batches-bin" / probe))
    return base / "cifar-10-batches-bin";
  MB_THROW(IoError, "CIFAR-10 file not found: ", (base / probe).string(), " (nor ",
           (base / "cifar-10-batches-bin" / probe).string(),
           "). Download the binary version (cifar-10-binary.tar.gz from "
           "https://www.cs.toronto.edu/~kriz/cifar.html), extract it, and pass --data-dir DIR "
           "naming the folder that holds cifar-10-batches-bin/");
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
  const std::filesystem::path folder = find_cifar10_dir(dir, names.front());

  Cifar10Records all;
  for (const std::string& name : names) {
    const std::filesystem::path path = folder / name;
    if (!std::filesystem::exists(path)) {
      MB_THROW(IoError, "CIFAR-10 file not found: ", path.string(),
               " (the other batch files are there; re-extract the archive or pass --data-dir)");
    }
    const std::int64_t wanted = limit > 0 ? limit - all.count() : 0;
    Cifar10Records part = read_cifar10_file(path.string(), wanted);
    all.labels.insert(all.labels.end(), part.labels.begin(), part.labels.end());
    all.pixels.insert(all.pixels.end(), part.pixels.begin(), part.pixels.end());
    if (limit > 0 && all.count() >= limit) break;
  }

  const std::int64_t n = all.count();
  Dataset dataset;
  dataset.name = "cifar10";
  dataset.num_classes = kCifar10Classes;
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

}  // namespace mb
