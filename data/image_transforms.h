// torchvision's image transforms for training on photos, on 8-bit RGB pixels:
//   training:   RandomResizedCrop(size, scale, ratio, bilinear) + RandomHorizontalFlip
//   evaluation: Resize(resize) + CenterCrop(size)
// The output is 8-bit planar (C, H, W): the device converts it to float and normalizes it
// (kernels/image_input.h), so batches cross to the device at a quarter of the bytes.
//
// Draws are keyed by (seed, epoch, sample index), never by worker or position in a batch,
// so a run is reproducible whatever the worker count and batch split.
#pragma once

#include <cstdint>

namespace mb {

// A crop in pixel coordinates of the full-size image (as torchvision's get_params returns:
// top, left, height, width).
struct CropBox {
  std::int64_t top = 0;
  std::int64_t left = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;
};

struct RandomResizedCropOptions {
  double scale_min = 0.08;  // of the image's area
  double scale_max = 1.0;
  double ratio_min = 3.0 / 4.0;  // width / height
  double ratio_max = 4.0 / 3.0;
};

// Uniform numbers in [0, 1) for one sample's transform, from Philox keyed by (seed, epoch,
// sample index); next() gives the stream's numbers in order.
class SampleRandom {
 public:
  SampleRandom(std::uint64_t seed, int epoch, std::int64_t sample_index);
  double next();

 private:
  std::uint64_t seed_;
  std::uint32_t epoch_;
  std::uint64_t sample_;
  std::uint32_t block_ = 0;
  std::uint32_t bits_[4] = {};
  int used_ = 4;
};

// torchvision's RandomResizedCrop.get_params: up to 10 tries of an area fraction uniform in
// [scale_min, scale_max] and a log-uniform aspect ratio, rounding the sides; the first crop
// that fits is placed uniformly; after 10 misses, the centred crop of the whole image with
// its ratio clamped to [ratio_min, ratio_max].
CropBox random_resized_crop_box(std::int64_t height, std::int64_t width,
                                const RandomResizedCropOptions& options, SampleRandom& random);

// torchvision's Resize(size) with an int: the shorter side becomes `size`, the longer one
// int(size * long / short). Returns {height, width}.
struct ImageSize {
  std::int64_t height = 0;
  std::int64_t width = 0;
};
ImageSize resize_shorter_side(std::int64_t height, std::int64_t width, std::int64_t size);
// torchvision's CenterCrop: top = int(round((height - crop_height) / 2)), likewise left.
// The crop must fit (the caller pads first otherwise).
CropBox center_crop_box(std::int64_t height, std::int64_t width, std::int64_t crop_height,
                        std::int64_t crop_width);

// Resamples the region (top, left, height, width) of an RGB image (rows of width * 3 bytes;
// the region in that image's coordinates, fractional where a DCT scale mapped it) to
// out_height x out_width with PIL's bilinear filter and its fixed-point arithmetic (a triangle
// whose support widens with the reduction factor, i.e. antialiased; separable, horizontal
// pass first, rounded to 8 bits between the passes), so on the same pixels the result is
// PIL's. taps_within_region: the filter reads only the region's pixels (PIL on the cropped
// image: torchvision's resized_crop); otherwise any pixel of the image (PIL resizing the
// whole image, then cropping: Resize + CenterCrop). Writes planar dst[c][y][x], mirrored in x
// when `flip`.
struct Region {
  double top = 0, left = 0, height = 0, width = 0;
};
void resize_bilinear_to_planar(const std::uint8_t* rgb, std::int64_t height, std::int64_t width,
                               const Region& region, bool taps_within_region, std::uint8_t* dst,
                               std::int64_t out_height, std::int64_t out_width, bool flip);

}  // namespace mb
