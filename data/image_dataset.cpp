// Image folders as streamed data sets: decode, crop, resize, flip, one sample at a time.
#include "data/image_dataset.h"

#include <cmath>
#include <filesystem>
#include <utility>

#include "data/image_codec.h"
#include "runtime/error.h"

namespace mb {
namespace {

std::int64_t ceil_div_scaled(std::int64_t full, std::int64_t out, double crop) {
  // The decoded size at which `crop` full-size pixels become `out` pixels.
  return static_cast<std::int64_t>(
      std::ceil(static_cast<double>(full) * static_cast<double>(out) / crop - 1e-9));
}

}  // namespace

SampleGeometry sample_geometry(ImageSplit split, const ImageFolderOptions& options,
                               std::int64_t height, std::int64_t width, std::uint64_t seed,
                               int epoch, std::int64_t sample_index) {
  const std::int64_t size = options.image_size;
  SampleGeometry geometry;
  if (split == ImageSplit::Train) {
    SampleRandom random(seed, epoch, sample_index);
    const CropBox box = random_resized_crop_box(height, width, options.crop, random);
    geometry.region = Region{static_cast<double>(box.top), static_cast<double>(box.left),
                             static_cast<double>(box.height), static_cast<double>(box.width)};
    geometry.taps_within_region = true;
    geometry.flip = options.flip && random.next() < 0.5;
  } else {
    const std::int64_t resize = options.resize > 0 ? options.resize : size * 256 / 224;
    const ImageSize resized = resize_shorter_side(height, width, resize);
    const CropBox box = center_crop_box(resized.height, resized.width, size, size);
    const double sy = static_cast<double>(height) / static_cast<double>(resized.height);
    const double sx = static_cast<double>(width) / static_cast<double>(resized.width);
    geometry.region = Region{box.top * sy, box.left * sx, size * sy, size * sx};
    geometry.taps_within_region = false;
  }
  geometry.min_height = ceil_div_scaled(height, size, geometry.region.height);
  geometry.min_width = ceil_div_scaled(width, size, geometry.region.width);
  return geometry;
}

ImageFolderSource::ImageFolderSource(ImageFolderIndex index, ImageSplit split,
                                     const ImageFolderOptions& options)
    : index_(std::move(index)), split_(split), options_(options) {
  MB_CHECK(options_.image_size > 0, "image folder: --image-size must be > 0, got ",
           options_.image_size);
  MB_CHECK(options_.resize == 0 || options_.resize >= options_.image_size,
           "image folder: evaluation resizes to ", options_.resize, " but crops ",
           options_.image_size, ". Fix: resize to at least the crop size");
}

Shape ImageFolderSource::sample_shape() const {
  return Shape{3, options_.image_size, options_.image_size};
}

std::string ImageFolderSource::sample_name(std::int64_t index) const {
  return index_.paths.at(static_cast<std::size_t>(index));
}

void ImageFolderSource::load(std::int64_t index, std::uint64_t seed, int epoch, void* image,
                             std::int32_t* label) const {
  MB_CHECK(index >= 0 && index < size(), "image folder: sample ", index, " of ", size());
  const std::string& path = index_.paths[static_cast<std::size_t>(index)];
  const std::vector<std::uint8_t> bytes = read_file_bytes(path);
  const ImageInfo info = read_image_info(bytes.data(), bytes.size(), path);
  const SampleGeometry geometry =
      sample_geometry(split_, options_, info.height, info.width, seed, epoch, index);
  const DecodedImage decoded =
      options_.dct_scaling
          ? decode_image(bytes.data(), bytes.size(), path, geometry.min_height, geometry.min_width)
          : decode_image(bytes.data(), bytes.size(), path);
  // The region in the decoded image's pixels (the DCT scale rounds sizes up, so use the
  // actual ratio of each side).
  const double sy = static_cast<double>(decoded.height) / static_cast<double>(info.height);
  const double sx = static_cast<double>(decoded.width) / static_cast<double>(info.width);
  Region region = geometry.region;
  if (sy != 1.0 || sx != 1.0) {
    region = Region{region.top * sy, region.left * sx, region.height * sy, region.width * sx};
  }
  resize_bilinear_to_planar(decoded.pixels.data(), decoded.height, decoded.width, region,
                            geometry.taps_within_region, static_cast<std::uint8_t*>(image),
                            options_.image_size, options_.image_size, geometry.flip);
  *label = index_.labels[static_cast<std::size_t>(index)];
}

Dataset load_image_folder(const std::string& dir, bool train, std::int64_t limit,
                          const ImageFolderOptions& options) {
  const std::string split = train ? "train" : "val";
  const std::string root = dir + "/" + split;
  std::error_code ignored;
  if (!std::filesystem::exists(root, ignored)) {
    MB_THROW(IoError, "image folder ", dir, " has no ", split,
             "/ folder. Fix: pass --data-dir DIR where DIR/train/<class>/ and DIR/val/<class>/ "
             "hold the images (torchvision's ImageFolder layout)");
  }
  ImageFolderIndex index = scan_image_folder(root);
  if (limit > 0 && limit < index.size()) {
    ImageFolderIndex kept;
    kept.root = index.root;
    kept.classes = index.classes;
    kept.ignored = index.ignored;
    for (std::int64_t i = 0; i < limit; ++i) {
      const std::int64_t from = i * index.size() / limit;
      kept.paths.push_back(index.paths[static_cast<std::size_t>(from)]);
      kept.labels.push_back(index.labels[static_cast<std::size_t>(from)]);
    }
    index = std::move(kept);
  }
  Dataset dataset;
  dataset.name = "imagefolder";
  dataset.num_classes = static_cast<std::int64_t>(index.classes.size());
  dataset.class_names = index.classes;
  dataset.source = std::make_shared<ImageFolderSource>(
      std::move(index), train ? ImageSplit::Train : ImageSplit::Eval, options);
  return dataset;
}

}  // namespace mb
