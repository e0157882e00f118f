// Per-channel normalization and the seeded augmentations (random crop with zero padding,
// horizontal flip) the loader applies to each sample.
//
// Augmentation draws are keyed by (seed, epoch, dataset sample index), never by position in
// a batch or a micro-batch, so they are reproducible and do not change when a batch is
// split differently.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace mb {

struct Dataset;

// x -> (x - mean[c]) / std[c] per channel c.
struct Normalization {
  std::vector<float> mean;
  std::vector<float> std;
  bool empty() const { return mean.empty(); }
};

// Normalizes a CPU float32 [N, C, H, W] (or [C, H, W]) tensor in place. Throws
// mb::InvalidArgument unless mean and std have C entries and every std is > 0.
void normalize_inplace(Tensor images, const Normalization& normalization);
// Per-channel mean and population standard deviation over all samples and pixels
// (accumulated in double). A constant channel gets std 1 so normalizing stays finite.
Normalization compute_normalization(const Dataset& dataset);
// The published constants of a data set's full training split (pixels scaled to [0, 1]),
// so that training on a subset and evaluating with another normalize alike:
//   fashion-mnist: mean 0.2860, std 0.3530 (recomputed here from Debian's
//                  dataset-fashion-mnist: 0.28604, 0.35302);
//   cifar10:       mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616);
//   cifar100:      mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762);
//   imagefolder:   ImageNet's, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), as
//                  torchvision's reference recipes use for photos.
// Empty for data sets without published constants ("synthetic").
Normalization published_normalization(const std::string& dataset_name);

struct AugmentOptions {
  std::int64_t crop_padding = 0;  // pad by this many zeros on each side, crop back to H x W
  bool flip = false;              // horizontal flip with probability 1/2
  bool enabled() const { return crop_padding > 0 || flip; }
};

// What augmentation does to one sample: crop window origin in the padded image, in
// [0, 2 * padding], and whether to flip.
struct AugmentDraw {
  std::int64_t offset_y = 0;
  std::int64_t offset_x = 0;
  bool flip = false;
};

AugmentDraw draw_augmentation(const AugmentOptions& options, std::uint64_t seed, int epoch,
                              std::int64_t sample_index);

// dst[c, y, x] = padded(src)[c, y + offset_y, x' + offset_x] with x' = W-1-x when flipping
// (crop, then flip, as torchvision's RandomCrop + RandomHorizontalFlip), where padded(src)
// has `padding` zeros (`fill` for masks) on every side. src and dst must not overlap.
void augment_sample(const float* src, float* dst, std::int64_t channels, std::int64_t height,
                    std::int64_t width, std::int64_t padding, const AugmentDraw& draw);
// The same geometry for an int32 mask [H, W]; pixels from the padding get `fill`.
void augment_mask(const std::int32_t* src, std::int32_t* dst, std::int64_t height,
                  std::int64_t width, std::int64_t padding, const AugmentDraw& draw,
                  std::int32_t fill = 0);

// Augments a CPU float32 [N, C, H, W] batch whose row i is dataset sample
// sample_indices[i]; returns a new tensor.
Tensor augment_images(const Tensor& images, const std::vector<std::int64_t>& sample_indices,
                      const AugmentOptions& options, std::uint64_t seed, int epoch);

}  // namespace mb
