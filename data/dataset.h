// Data sets, and the functions that load them.
//
// Every loader returns a complete Dataset or throws: nothing returns partially filled data.
// A Dataset either holds its samples in host memory (images float32 [N, C, H, W] with raw
// pixel values scaled to [0, 1]; labels int32, [N] for classification or [N, H, W] for
// segmentation masks; normalization and augmentation are separate steps: transforms.h,
// loader.h), or streams them from a SampleSource (image folders: each sample decoded and
// transformed when a batch needs it, as 8-bit planar images the device normalizes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/synthetic.h"
#include "runtime/tensor.h"

namespace mb {

// Samples made on demand (an image folder's files, decoded and transformed).
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual std::int64_t size() const = 0;
  virtual Shape sample_shape() const = 0;  // [C, H, W] of what load() writes
  virtual DType image_dtype() const = 0;   // UInt8: the device normalizes (kernels/image_input.h)
  // Writes sample `index`'s image (sample_shape(), image_dtype()) and its class. Random
  // transforms draw from (seed, epoch, index) alone, so any thread may call it in any order.
  // Throws mb::IoError naming the file when the sample cannot be made (a bad image).
  virtual void load(std::int64_t index, std::uint64_t seed, int epoch, void* image,
                    std::int32_t* label) const = 0;
  // The file (or other origin) of a sample, for messages.
  virtual std::string sample_name(std::int64_t index) const = 0;
};

struct Dataset {
  std::string name;
  Tensor images;  // CPU, float32 [N, C, H, W]; undefined when `source` makes the samples
  Tensor labels;  // CPU, int32 [N] or [N, H, W]; undefined with a source
  std::int64_t num_classes = 0;
  std::vector<std::string> class_names;  // where the data set names its classes
  std::shared_ptr<const SampleSource> source;

  std::int64_t size() const {
    return source != nullptr ? source->size() : (images.defined() ? images.dim(0) : 0);
  }
  Shape sample_shape() const;  // [C, H, W]
  bool is_segmentation() const { return labels.defined() && labels.ndim() == 3; }
  bool streamed() const { return source != nullptr; }
};

// Where the Debian package dataset-fashion-mnist installs the files.
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Fashion-MNIST from the IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
// t10k-...) in `data_dir` (empty: kDefaultFashionMnistDir), gzip or uncompressed.
// `limit` > 0 keeps the first `limit` samples. Throws mb::IoError when files are missing
// (naming the path, the package and --data-dir), truncated or corrupt.
Dataset load_fashion_mnist(const std::string& data_dir, bool train, std::int64_t limit = 0);

// CIFAR-10, binary version: data_batch_1.bin .. data_batch_5.bin (train) or test_batch.bin,
// in `data_dir` or in `data_dir`/cifar-10-batches-bin. Each record is 1 label byte and
// 3072 pixel bytes (R, G, B planes of 32x32). `limit` > 0 keeps the first `limit` samples.
Dataset load_cifar10(const std::string& data_dir, bool train, std::int64_t limit = 0);

// CIFAR-100, binary version: train.bin or test.bin, in `data_dir` or in
// `data_dir`/cifar-100-binary. Each record is a coarse label byte (0..19), a fine label byte
// (0..99: the class, as torchvision's CIFAR100 uses) and 3072 pixel bytes.
Dataset load_cifar100(const std::string& data_dir, bool train, std::int64_t limit = 0);

// name: "fashion-mnist" | "cifar10" | "cifar100" | "synthetic" (which uses `synthetic`, with
// samples replaced by `limit` when limit > 0, and the seed offset for the test split).
// Image folders load through load_image_folder (data/image_dataset.h), which takes their
// transform options.
Dataset load_dataset(const std::string& name, const std::string& data_dir, bool train,
                     std::int64_t limit, const SyntheticOptions& synthetic);

}  // namespace mb
