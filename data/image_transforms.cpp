// RandomResizedCrop, Resize + CenterCrop and PIL's bilinear resampling on 8-bit RGB.
#include "data/image_transforms.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/error.h"
#include "runtime/philox.h"

namespace mb {
namespace {

// Keeps the image transforms' numbers apart from every other keyed stream.
constexpr std::uint32_t kImageStream = 0x1A6E5u;

// Python's round() of a double: to nearest, ties to even (nearbyint in the default mode).
std::int64_t python_round(double value) {
  return static_cast<std::int64_t>(std::nearbyint(value));
}

// PIL's resampling coefficients (Resample.c, precompute_coeffs + normalize_coeffs_8bpc):
// for each output pixel the first input tap and fixed-point weights with 22 fraction bits.
constexpr int kPrecisionBits = 32 - 8 - 2;

struct Taps {
  std::int64_t size = 0;  // most taps of any output pixel
  std::vector<std::int64_t> first, count;
  std::vector<std::int32_t> weights;  // [out][size]
};

double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Output pixels over [begin, begin + extent) of the input, taps limited to [lo, hi).
Taps make_taps(double begin, double extent, std::int64_t out, std::int64_t lo, std::int64_t hi) {
  const double scale = extent / static_cast<double>(out);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;
  Taps taps;
  taps.size = static_cast<std::int64_t>(std::ceil(support)) * 2 + 1;
  taps.first.resize(static_cast<std::size_t>(out));
  taps.count.resize(static_cast<std::size_t>(out));
  taps.weights.assign(static_cast<std::size_t>(out * taps.size), 0);
  std::vector<double> w(static_cast<std::size_t>(taps.size));
  for (std::int64_t x = 0; x < out; ++x) {
    // The input coordinates are relative to `lo` in PIL (it crops first); shifting both the
    // centre and the bounds by lo leaves every weight the same.
    const double center = begin + (static_cast<double>(x) + 0.5) * scale - static_cast<double>(lo);
    const std::int64_t extent_taps = hi - lo;
    std::int64_t first = static_cast<std::int64_t>(center - support + 0.5);
    if (first < 0) first = 0;
    std::int64_t last = static_cast<std::int64_t>(center + support + 0.5);
    if (last > extent_taps) last = extent_taps;
    const std::int64_t count = std::max<std::int64_t>(last - first, 0);
    double total = 0.0;
    for (std::int64_t k = 0; k < count; ++k) {
      w[static_cast<std::size_t>(k)] =
          bilinear_filter((static_cast<double>(k + first) - center + 0.5) / filter_scale);
      total += w[static_cast<std::size_t>(k)];
    }
    for (std::int64_t k = 0; k < count; ++k) {
      double value = total != 0.0 ? w[static_cast<std::size_t>(k)] / total : 0.0;
      value *= static_cast<double>(1 << kPrecisionBits);
      taps.weights[static_cast<std::size_t>(x * taps.size + k)] =
          static_cast<std::int32_t>(value < 0 ? -0.5 + value : 0.5 + value);
    }
    taps.first[static_cast<std::size_t>(x)] = first + lo;
    taps.count[static_cast<std::size_t>(x)] = count;
  }
  return taps;
}

inline std::uint8_t clip8(std::int32_t value) {
  const std::int32_t shifted = value >> kPrecisionBits;
  return static_cast<std::uint8_t>(shifted < 0 ? 0 : (shifted > 255 ? 255 : shifted));
}

}  // namespace

SampleRandom::SampleRandom(std::uint64_t seed, int epoch, std::int64_t sample_index)
    : seed_(seed),
      epoch_(static_cast<std::uint32_t>(epoch)),
      sample_(static_cast<std::uint64_t>(sample_index)) {}

double SampleRandom::next() {
  if (used_ + 2 > 4) {
    const PhiloxKey key = philox_key(seed_, kImageStream);
    const PhiloxCounter counter{static_cast<std::uint32_t>(sample_),
                                static_cast<std::uint32_t>(sample_ >> 32), epoch_,
                                0x1A6E0000u + block_++};
    const PhiloxOutput bits = philox4x32_10(counter, key);
    for (int i = 0; i < 4; ++i) bits_[i] = bits.v[i];
    used_ = 0;
  }
  const std::uint64_t word = (static_cast<std::uint64_t>(bits_[used_]) << 32) | bits_[used_ + 1];
  used_ += 2;
  return static_cast<double>(word >> 11) * 0x1.0p-53;
}

CropBox random_resized_crop_box(std::int64_t height, std::int64_t width,
                                const RandomResizedCropOptions& options, SampleRandom& random) {
  MB_CHECK(height > 0 && width > 0, "random_resized_crop_box: empty image ", width, "x", height);
  MB_CHECK(options.scale_min > 0 && options.scale_min <= options.scale_max,
           "RandomResizedCrop: scale must be 0 < min <= max, got (", options.scale_min, ", ",
           options.scale_max, ")");
  MB_CHECK(options.ratio_min > 0 && options.ratio_min <= options.ratio_max,
           "RandomResizedCrop: ratio must be 0 < min <= max, got (", options.ratio_min, ", ",
           options.ratio_max, ")");
  const double area = static_cast<double>(height) * static_cast<double>(width);
  const double log_min = std::log(options.ratio_min), log_max = std::log(options.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area =
        area * (options.scale_min + (options.scale_max - options.scale_min) * random.next());
    const double aspect = std::exp(log_min + (log_max - log_min) * random.next());
    const std::int64_t w = python_round(std::sqrt(target_area * aspect));
    const std::int64_t h = python_round(std::sqrt(target_area / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      CropBox box;
      box.height = h;
      box.width = w;
      box.top =
          std::min(static_cast<std::int64_t>(random.next() * static_cast<double>(height - h + 1)),
                   height - h);
      box.left = std::min(
          static_cast<std::int64_t>(random.next() * static_cast<double>(width - w + 1)), width - w);
      return box;
    }
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  CropBox box;
  if (in_ratio < options.ratio_min) {
    box.width = width;
    box.height = python_round(static_cast<double>(box.width) / options.ratio_min);
  } else if (in_ratio > options.ratio_max) {
    box.height = height;
    box.width = python_round(static_cast<double>(box.height) * options.ratio_max);
  } else {
    box.width = width;
    box.height = height;
  }
  box.top = (height - box.height) / 2;  // Python's // on non-negative numbers
  box.left = (width - box.width) / 2;
  return box;
}

ImageSize resize_shorter_side(std::int64_t height, std::int64_t width, std::int64_t size) {
  MB_CHECK(height > 0 && width > 0 && size > 0, "resize_shorter_side: bad sizes ", width, "x",
           height, " to ", size);
  const bool portrait = width <= height;
  const std::int64_t shorter = portrait ? width : height, longer = portrait ? height : width;
  const auto new_long =
      static_cast<std::int64_t>(static_cast<double>(size * longer) / static_cast<double>(shorter));
  return portrait ? ImageSize{new_long, size} : ImageSize{size, new_long};
}

CropBox center_crop_box(std::int64_t height, std::int64_t width, std::int64_t crop_height,
                        std::int64_t crop_width) {
  MB_CHECK(crop_height > 0 && crop_width > 0 && crop_height <= height && crop_width <= width,
           "center_crop_box: a ", crop_width, "x", crop_height, " crop of a ", width, "x", height,
           " image");
  CropBox box;
  box.height = crop_height;
  box.width = crop_width;
  box.top = python_round(static_cast<double>(height - crop_height) / 2.0);
  box.left = python_round(static_cast<double>(width - crop_width) / 2.0);
  return box;
}

void resize_bilinear_to_planar(const std::uint8_t* rgb, std::int64_t height, std::int64_t width,
                               const Region& region, bool taps_within_region, std::uint8_t* dst,
                               std::int64_t out_height, std::int64_t out_width, bool flip) {
  MB_CHECK(out_height > 0 && out_width > 0, "resize: empty output ", out_width, "x", out_height);
  MB_CHECK(region.width > 0 && region.height > 0 && region.left >= 0 && region.top >= 0 &&
               region.left + region.width <= static_cast<double>(width) + 1e-9 &&
               region.top + region.height <= static_cast<double>(height) + 1e-9,
           "resize: region (top ", region.top, ", left ", region.left, ", ", region.height, "x",
           region.width, ") outside a ", height, "x", width, " image");
  std::int64_t lo_x = 0, hi_x = width, lo_y = 0, hi_y = height;
  if (taps_within_region) {
    lo_x = static_cast<std::int64_t>(std::floor(region.left));
    hi_x = std::min(width, static_cast<std::int64_t>(std::ceil(region.left + region.width)));
    lo_y = static_cast<std::int64_t>(std::floor(region.top));
    hi_y = std::min(height, static_cast<std::int64_t>(std::ceil(region.top + region.height)));
  }
  const Taps horizontal = make_taps(region.left, region.width, out_width, lo_x, hi_x);
  const Taps vertical = make_taps(region.top, region.height, out_height, lo_y, hi_y);
  // PIL skips a pass whose size and box are the identity; its weights would be 1 and 0 then,
  // so running it changes nothing.
  const std::int64_t row_first = vertical.first.front();
  const std::int64_t row_last = vertical.first.back() + vertical.count.back();
  const std::int64_t rows = row_last - row_first;
  // Horizontal pass over the rows the vertical pass reads, into 8-bit (as PIL rounds there).
  std::vector<std::uint8_t> across(static_cast<std::size_t>(rows * out_width * 3));
  for (std::int64_t y = 0; y < rows; ++y) {
    const std::uint8_t* in = rgb + (row_first + y) * width * 3;
    std::uint8_t* out = across.data() + y * out_width * 3;
    for (std::int64_t x = 0; x < out_width; ++x) {
      const std::int32_t* k = horizontal.weights.data() + x * horizontal.size;
      const std::uint8_t* p = in + horizontal.first[static_cast<std::size_t>(x)] * 3;
      std::int32_t r = 1 << (kPrecisionBits - 1), g = r, b = r;
      for (std::int64_t t = 0; t < horizontal.count[static_cast<std::size_t>(x)]; ++t) {
        r += p[3 * t] * k[t];
        g += p[3 * t + 1] * k[t];
        b += p[3 * t + 2] * k[t];
      }
      out[3 * x] = clip8(r);
      out[3 * x + 1] = clip8(g);
      out[3 * x + 2] = clip8(b);
    }
  }
  const std::int64_t plane = out_height * out_width;
  for (std::int64_t y = 0; y < out_height; ++y) {
    const std::int32_t* k = vertical.weights.data() + y * vertical.size;
    const std::int64_t first = vertical.first[static_cast<std::size_t>(y)] - row_first;
    const std::int64_t count = vertical.count[static_cast<std::size_t>(y)];
    for (std::int64_t x = 0; x < out_width; ++x) {
      std::int32_t sum[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1),
                             1 << (kPrecisionBits - 1)};
      for (std::int64_t t = 0; t < count; ++t) {
        const std::uint8_t* p = across.data() + ((first + t) * out_width + x) * 3;
        sum[0] += p[0] * k[t];
        sum[1] += p[1] * k[t];
        sum[2] += p[2] * k[t];
      }
      const std::int64_t column = flip ? out_width - 1 - x : x;
      for (int c = 0; c < 3; ++c) dst[c * plane + y * out_width + column] = clip8(sum[c]);
    }
  }
}

}  // namespace mb
