// Image folders as data sets: DIR/train/<class>/* for training, DIR/val/<class>/* for
// evaluation (torchvision's ImageFolder rules, data/image_folder.h), each sample decoded and
// transformed when a batch needs it, in the loader's worker threads.
//
// Training samples: RandomResizedCrop(image_size, scale, ratio, bilinear) and a horizontal
// flip with probability 1/2; evaluation samples: Resize(resize) + CenterCrop(image_size).
// Both are 8-bit planar [3, image_size, image_size], normalized on the device with
// kImageNetNormalization (ToTensor + Normalize, kernels/image_input.h).
#pragma once

#include <cstdint>
#include <string>

#include "data/dataset.h"
#include "data/image_folder.h"
#include "data/image_transforms.h"

namespace mb {

struct ImageFolderOptions {
  std::int64_t image_size = 224;
  std::int64_t resize = 0;  // evaluation's shorter side; 0: image_size * 256 / 224
  RandomResizedCropOptions crop;
  bool flip = true;
  // JPEG: decode at the smallest DCT scale that still gives the crop at least its output's
  // pixels (data/image_codec.h). Off: always decode at full size.
  bool dct_scaling = true;
};

enum class ImageSplit { Train, Eval };

// One image folder (ROOT/<class>/...) with the transforms of `split`.
class ImageFolderSource : public SampleSource {
 public:
  ImageFolderSource(ImageFolderIndex index, ImageSplit split, const ImageFolderOptions& options);
  std::int64_t size() const override { return index_.size(); }
  Shape sample_shape() const override;
  DType image_dtype() const override { return DType::UInt8; }
  void load(std::int64_t index, std::uint64_t seed, int epoch, void* image,
            std::int32_t* label) const override;
  std::string sample_name(std::int64_t index) const override;
  const ImageFolderIndex& index() const { return index_; }

 private:
  ImageFolderIndex index_;
  ImageSplit split_;
  ImageFolderOptions options_;
};

// What one sample's transform does to a decoded image of full size height x width; the
// region is in full-size pixels (map it by the DCT scale before resampling).
struct SampleGeometry {
  Region region;  // of the full-size image
  // Training crops first, as torchvision does, so the filter reads only the crop's pixels;
  // evaluation resizes the whole image first, so it reads across the crop's edges.
  bool taps_within_region = true;
  std::int64_t min_height = 0;  // the fewest decoded rows and columns that keep the output's
  std::int64_t min_width = 0;   // resolution (for the DCT scale)
  bool flip = false;
};
SampleGeometry sample_geometry(ImageSplit split, const ImageFolderOptions& options,
                               std::int64_t height, std::int64_t width, std::uint64_t seed,
                               int epoch, std::int64_t sample_index);

// Loads DIR/train (train) or DIR/val as a streamed Dataset named "imagefolder". `limit` > 0
// keeps `limit` samples spread evenly over the folder's order (every class keeps its share).
// Throws mb::IoError naming the folder when DIR/train or DIR/val is missing (and the fix).
Dataset load_image_folder(const std::string& dir, bool train, std::int64_t limit,
                          const ImageFolderOptions& options);

}  // namespace mb
