// Normalization and augmentation on host tensors.
#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "data/dataset.h"
#include "runtime/error.h"
#include "runtime/philox.h"

namespace mb {
namespace {

constexpr std::uint32_t kAugmentStream = 0xA06u;  // Philox stream id for augmentation

template <typename T>
void crop_flip_plane(const T* src, T* dst, std::int64_t height, std::int64_t width,
                     std::int64_t padding, const AugmentDraw& draw, T fill) {
  for (std::int64_t y = 0; y < height; ++y) {
    const std::int64_t source_y = y + draw.offset_y - padding;
    for (std::int64_t x = 0; x < width; ++x) {
      const std::int64_t cropped_x = draw.flip ? width - 1 - x : x;
      const std::int64_t source_x = cropped_x + draw.offset_x - padding;
      const bool inside = source_y >= 0 && source_y < height && source_x >= 0 && source_x < width;
      dst[y * width + x] = inside ? src[source_y * width + source_x] : fill;
    }
  }
}

void check_draw(std::int64_t padding, const AugmentDraw& draw) {
  MB_CHECK(padding >= 0 && draw.offset_y >= 0 && draw.offset_y <= 2 * padding &&
               draw.offset_x >= 0 && draw.offset_x <= 2 * padding,
           "augmentation: crop offsets (", draw.offset_y, ", ", draw.offset_x,
           ") must lie in [0, 2 * padding] with padding ", padding, " >= 0");
}

}  // namespace

void normalize_inplace(Tensor images, const Normalization& normalization) {
  MB_CHECK(images.defined() && images.device().is_cpu() && images.dtype() == DType::Float32 &&
               (images.ndim() == 4 || images.ndim() == 3),
           "normalize_inplace: need a CPU float32 [N, C, H, W] or [C, H, W] tensor");
  const int channel_axis = images.ndim() == 4 ? 1 : 0;
  const std::int64_t channels = images.dim(channel_axis);
  MB_CHECK(static_cast<std::int64_t>(normalization.mean.size()) == channels &&
               static_cast<std::int64_t>(normalization.std.size()) == channels,
           "normalize_inplace: images have ", channels, " channels but the normalization has ",
           normalization.mean.size(), " means and ", normalization.std.size(), " stds");
  for (std::int64_t c = 0; c < channels; ++c) {
    MB_CHECK(normalization.std[c] > 0.0f && std::isfinite(normalization.std[c]),
             "normalize_inplace: std of channel ", c, " is ", normalization.std[c],
             "; it must be finite and > 0");
  }
  const std::int64_t plane = images.dim(-1) * images.dim(-2);
  const std::int64_t samples = images.ndim() == 4 ? images.dim(0) : 1;
  float* data = images.data<float>();
  for (std::int64_t n = 0; n < samples; ++n) {
    for (std::int64_t c = 0; c < channels; ++c) {
      const float mean = normalization.mean[c];
      const float inverse_std = 1.0f / normalization.std[c];
      float* p = data + (n * channels + c) * plane;
      for (std::int64_t i = 0; i < plane; ++i) p[i] = (p[i] - mean) * inverse_std;
    }
  }
}

Normalization compute_normalization(const Dataset& dataset) {
  const Shape shape = dataset.sample_shape();
  const std::int64_t n = dataset.size(), channels = shape[0], plane = shape[1] * shape[2];
  MB_CHECK(n > 0, "compute_normalization: data set '", dataset.name, "' is empty");
  const float* data = dataset.images.data<float>();
  Normalization result;
  for (std::int64_t c = 0; c < channels; ++c) {
    double sum = 0.0, sum_squares = 0.0;
    for (std::int64_t s = 0; s < n; ++s) {
      const float* p = data + (s * channels + c) * plane;
      for (std::int64_t i = 0; i < plane; ++i) {
        sum += p[i];
        sum_squares += static_cast<double>(p[i]) * p[i];
      }
    }
    const double count = static_cast<double>(n * plane);
    const double mean = sum / count;
    const double variance = std::max(0.0, sum_squares / count - mean * mean);
    const double deviation = std::sqrt(variance);
    result.mean.push_back(static_cast<float>(mean));
    result.std.push_back(deviation > 1e-12 ? static_cast<float>(deviation) : 1.0f);
  }
  return result;
}

Normalization published_normalization(const std::string& dataset_name) {
  if (dataset_name == "fashion-mnist") return Normalization{{0.2860f}, {0.3530f}};
  if (dataset_name == "cifar10") {
    return Normalization{{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  }
  if (dataset_name == "cifar100") {
    return Normalization{{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  }
  if (dataset_name == "imagefolder") {  // ImageNet's, as torchvision's reference recipes use
    return Normalization{{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
  }
  return Normalization{};
}

AugmentDraw draw_augmentation(const AugmentOptions& options, std::uint64_t seed, int epoch,
                              std::int64_t sample_index) {
  MB_CHECK(options.crop_padding >= 0, "augmentation: crop_padding must be >= 0, got ",
           options.crop_padding);
  const PhiloxKey key = philox_key(seed, kAugmentStream);
  const PhiloxCounter counter{static_cast<std::uint32_t>(sample_index),
                              static_cast<std::uint32_t>(sample_index >> 32),
                              static_cast<std::uint32_t>(epoch), 0xA06u};
  const PhiloxOutput bits = philox4x32_10(counter, key);
  AugmentDraw draw;
  const std::uint64_t positions = static_cast<std::uint64_t>(2 * options.crop_padding + 1);
  draw.offset_y = static_cast<std::int64_t>(bits.v[0] % positions);
  draw.offset_x = static_cast<std::int64_t>(bits.v[1] % positions);
  draw.flip = options.flip && (bits.v[2] & 1u) != 0;
  return draw;
}

void augment_sample(const float* src, float* dst, std::int64_t channels, std::int64_t height,
                    std::int64_t width, std::int64_t padding, const AugmentDraw& draw) {
  check_draw(padding, draw);
  const std::int64_t plane = height * width;
  for (std::int64_t c = 0; c < channels; ++c) {
    crop_flip_plane(src + c * plane, dst + c * plane, height, width, padding, draw, 0.0f);
  }
}

void augment_mask(const std::int32_t* src, std::int32_t* dst, std::int64_t height,
                  std::int64_t width, std::int64_t padding, const AugmentDraw& draw,
                  std::int32_t fill) {
  check_draw(padding, draw);
  crop_flip_plane(src, dst, height, width, padding, draw, fill);
}

Tensor augment_images(const Tensor& images, const std::vector<std::int64_t>& sample_indices,
                      const AugmentOptions& options, std::uint64_t seed, int epoch) {
  MB_CHECK(images.defined() && images.device().is_cpu() && images.dtype() == DType::Float32 &&
               images.ndim() == 4,
           "augment_images: need a CPU float32 [N, C, H, W] tensor");
  MB_CHECK(static_cast<std::int64_t>(sample_indices.size()) == images.dim(0),
           "augment_images: ", sample_indices.size(), " sample indices for ", images.dim(0),
           " images");
  const std::int64_t channels = images.dim(1), height = images.dim(2), width = images.dim(3);
  const std::int64_t image = channels * height * width;
  TensorOptions tensor_options;
  tensor_options.tag = images.tag();
  Tensor result = Tensor::empty(images.shape(), tensor_options);
  const float* src = images.data<float>();
  float* dst = result.data<float>();
  for (std::size_t i = 0; i < sample_indices.size(); ++i) {
    const AugmentDraw draw = draw_augmentation(options, seed, epoch, sample_indices[i]);
    augment_sample(src + i * image, dst + i * image, channels, height, width, options.crop_padding,
                   draw);
  }
  return result;
}

}  // namespace mb
