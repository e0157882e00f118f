// Data sets held in host memory, and the functions that load them.
//
// Every loader returns a complete Dataset or throws: nothing returns partially filled data.
// Images are float32 [N, C, H, W] with raw pixel values scaled to [0, 1]; labels are int32,
// [N] for classification or [N, H, W] for segmentation masks. Normalization and augmentation
// are separate steps (transforms.h, loader.h).
#pragma once

#include <cstdint>
#include <string>

#include "data/synthetic.h"
#include "runtime/tensor.h"

namespace mb {

struct Dataset {
  std::string name;
  Tensor images;  // CPU, float32 [N, C, H, W]
  Tensor labels;  // CPU, int32 [N] or [N, H, W]
  std::int64_t num_classes = 0;

  std::int64_t size() const { return images.defined() ? images.dim(0) : 0; }
  Shape sample_shape() const;  // [C, H, W]
  bool is_segmentation() const { return labels.defined() && labels.ndim() == 3; }
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
Dataset load_dataset(const std::string& name, const std::string& data_dir, bool train,
                     std::int64_t limit, const SyntheticOptions& synthetic);

}  // namespace mb
