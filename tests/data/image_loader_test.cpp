// Image folders through the BatchLoader: batches identical whatever the worker count,
// every sample once per epoch, transforms keyed by (seed, epoch, index), the training crop's
// statistics within RandomResizedCrop's ranges, and every kind of bad input (corrupt,
// truncated, non-image, empty class folder, missing train/ or val/) named, skipped and
// counted (or stopping the epoch with --on-bad-image error), never duplicating a sample.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "data/image_codec.h"
#include "data/image_dataset.h"
#include "data/loader.h"
#include "images_available.h"
#include "runtime/error.h"
#include "temp_dir.h"

namespace mb {
namespace {

using testing::TempDir;
using testing::write_bytes;

// Image `i` of a class: a gradient whose colour says the class and whose phase says i.
std::vector<std::uint8_t> image_pixels(std::int64_t height, std::int64_t width, int label, int i) {
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(height * width * 3));
  for (std::int64_t y = 0; y < height; ++y) {
    for (std::int64_t x = 0; x < width; ++x) {
      std::uint8_t* p = rgb.data() + (y * width + x) * 3;
      p[0] = static_cast<std::uint8_t>((x * 255 / width + 40 * i) % 256);
      p[1] = static_cast<std::uint8_t>(y * 255 / height);
      p[2] = static_cast<std::uint8_t>(60 * label);
    }
  }
  return rgb;
}

// DIR/<split>/class<c>/img<i>.{jpg,png}: `per_class` images per class, sizes varying.
void write_folder(const std::filesystem::path& dir, const std::string& split, int classes,
                  int per_class) {
  for (int c = 0; c < classes; ++c) {
    const std::filesystem::path folder = dir / split / ("class" + std::to_string(c));
    std::filesystem::create_directories(folder);
    for (int i = 0; i < per_class; ++i) {
      const std::int64_t h = 40 + 7 * i, w = 60 + 5 * c;
      const std::vector<std::uint8_t> rgb = image_pixels(h, w, c, i);
      const bool png = i % 3 == 2;
      write_bytes((folder / ("img" + std::to_string(i) + (png ? ".png" : ".jpg"))).string(),
                  png ? encode_png(rgb.data(), h, w) : encode_jpeg(rgb.data(), h, w, 92));
    }
  }
}

ImageFolderOptions small_options() {
  ImageFolderOptions options;
  options.image_size = 24;
  return options;
}

struct EpochData {
  std::vector<std::vector<std::uint8_t>> images;  // per batch
  std::vector<std::vector<std::int32_t>> labels;
  std::vector<std::int64_t> indices;
  LoaderStats stats;
};

EpochData run_epoch(const Dataset& data, int workers, int epoch, std::int64_t batch_size = 5,
                    BadImagePolicy policy = BadImagePolicy::Skip) {
  LoaderOptions options;
  options.batch_size = batch_size;
  options.seed = 11;
  options.workers = workers;
  options.on_bad_image = policy;
  BatchLoader loader(data, options);
  loader.start_epoch(epoch);
  EpochData out;
  Batch batch;
  while (loader.next(batch)) {
    EXPECT_EQ(batch.images.dtype(), DType::UInt8);
    const auto* p = batch.images.data<std::uint8_t>();
    out.images.emplace_back(p, p + batch.images.numel());
    const std::int32_t* l = batch.labels.data<std::int32_t>();
    out.labels.emplace_back(l, l + batch.labels.numel());
    out.indices.insert(out.indices.end(), batch.sample_indices.begin(), batch.sample_indices.end());
  }
  out.stats = loader.stats();
  return out;
}

TEST(ImageFolderLoader, BatchesAreTheSameWhateverTheWorkerCount) {
  MB_SKIP_WITHOUT_IMAGES();
  TempDir dir;
  write_folder(dir.path(), "train", 3, 6);
  const Dataset data = load_image_folder(dir.path().string(), true, 0, small_options());
  ASSERT_EQ(data.size(), 18);
  EXPECT_EQ(data.num_classes, 3);
  EXPECT_EQ(data.sample_shape(), (Shape{3, 24, 24}));
  const EpochData one = run_epoch(data, 1, 0);
  const EpochData three = run_epoch(data, 3, 0);
  EXPECT_EQ(one.images, three.images);
  EXPECT_EQ(one.labels, three.labels);
  EXPECT_EQ(one.indices, three.indices);
  EXPECT_EQ(three.stats.workers, 3);
  EXPECT_EQ(three.stats.samples, 18);
  // Every sample once; its label is its class folder's index.
  std::vector<std::int64_t> sorted = one.indices;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 18; ++i) EXPECT_EQ(sorted[static_cast<std::size_t>(i)], i);
  // Another epoch draws other crops (and another order).
  const EpochData next = run_epoch(data, 2, 1);
  EXPECT_NE(one.images, next.images);
}

TEST(ImageFolderLoader, EvaluationSamplesAreTheCentreCropOfEachImage) {
  MB_SKIP_WITHOUT_IMAGES();
  TempDir dir;
  write_folder(dir.path(), "val", 2, 3);
  ImageFolderOptions options = small_options();
  options.dct_scaling = false;
  const Dataset data = load_image_folder(dir.path().string(), false, 0, options);
  const auto* source = dynamic_cast<const ImageFolderSource*>(data.source.get());
  ASSERT_NE(source, nullptr);
  // Sample 4 (class1/img1.jpg) through the source equals decode + the evaluation geometry.
  std::vector<std::uint8_t> ours(3 * 24 * 24);
  std::int32_t label = -1;
  source->load(4, 0, 0, ours.data(), &label);
  EXPECT_EQ(label, 1);
  const std::vector<std::uint8_t> bytes = read_file_bytes(source->sample_name(4));
  const DecodedImage image = decode_image(bytes.data(), bytes.size(), "x");
  const SampleGeometry g =
      sample_geometry(ImageSplit::Eval, options, image.height, image.width, 0, 0, 4);
  std::vector<std::uint8_t> want(ours.size());
  resize_bilinear_to_planar(image.pixels.data(), image.height, image.width, g.region, false,
                            want.data(), 24, 24, false);
  EXPECT_EQ(ours, want);
  // The same sample under another seed or epoch is the same (no randomness in evaluation).
  std::vector<std::uint8_t> again(ours.size());
  source->load(4, 99, 5, again.data(), &label);
  EXPECT_EQ(ours, again);
}

TEST(ImageFolderLoader, DctScalingDecodesLessButKeepsTheCropsResolution) {
  MB_SKIP_WITHOUT_IMAGES();
  // A 400x480 JPEG evaluated at 24x24 (Resize 27): the decoder may take 1/8 (50x60 >= 27),
  // and the result stays close to the full decode's.
  TempDir dir;
  const std::filesystem::path folder = dir.path() / "val" / "only";
  std::filesystem::create_directories(folder);
  const std::vector<std::uint8_t> rgb = image_pixels(400, 480, 1, 0);
  write_bytes((folder / "big.jpg").string(), encode_jpeg(rgb.data(), 400, 480, 95));
  ImageFolderOptions scaled = small_options();
  ImageFolderOptions full = small_options();
  full.dct_scaling = false;
  std::vector<std::uint8_t> a(3 * 24 * 24), b(a.size());
  std::int32_t label = 0;
  load_image_folder(dir.path().string(), false, 0, scaled).source->load(0, 0, 0, a.data(), &label);
  load_image_folder(dir.path().string(), false, 0, full).source->load(0, 0, 0, b.data(), &label);
  double total = 0;
  for (std::size_t i = 0; i < a.size(); ++i) total += std::abs(int(a[i]) - int(b[i]));
  EXPECT_LT(total / static_cast<double>(a.size()), 3.0);
  const SampleGeometry g = sample_geometry(ImageSplit::Eval, scaled, 400, 480, 0, 0, 0);
  EXPECT_EQ(g.min_height, 27);  // the resized image's rows: 400 * 24 / (24 * 400 / 27)
}

TEST(ImageFolderLoader, TrainingCropsStayWithinRandomResizedCropsRanges) {
  const RandomResizedCropOptions options;
  // Square: RandomResizedCrop rejects tall and wide crops alike, so the accepted log-ratio
  // stays symmetric (on a landscape image wide crops are accepted more often).
  const std::int64_t h = 480, w = 480;
  int flips = 0;
  double log_ratio_sum = 0;
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    ImageFolderOptions folder;
    const SampleGeometry g = sample_geometry(ImageSplit::Train, folder, h, w, 3, 0, i);
    const Region& r = g.region;
    ASSERT_GE(r.top, 0);
    ASSERT_GE(r.left, 0);
    ASSERT_LE(r.top + r.height, h);
    ASSERT_LE(r.left + r.width, w);
    const double area = r.height * r.width / (h * w);
    // Rounding the sides moves the area and the ratio a little past the drawn values.
    EXPECT_GE(area, options.scale_min * 0.95);
    EXPECT_LE(area, options.scale_max);
    const double ratio = r.width / r.height;
    EXPECT_GE(ratio, options.ratio_min * 0.97);
    EXPECT_LE(ratio, options.ratio_max * 1.03);
    log_ratio_sum += std::log(ratio);
    flips += g.flip;
    // Keyed: the same (seed, epoch, index) gives the same crop.
    const SampleGeometry again = sample_geometry(ImageSplit::Train, folder, h, w, 3, 0, i);
    EXPECT_EQ(again.region.top, r.top);
    EXPECT_EQ(again.region.width, r.width);
  }
  // Half the samples flip; the log-ratio is uniform on a symmetric range: mean near 0.
  EXPECT_NEAR(flips, n / 2, 4 * std::sqrt(n / 4.0));
  EXPECT_NEAR(log_ratio_sum / n, 0.0, 0.02);  // 5 standard errors (sd of U(-0.29, 0.29): 0.166)
}

TEST(ImageFolderLoader, BadImagesAreSkippedCountedAndNamed) {
  MB_SKIP_WITHOUT_IMAGES();
  TempDir dir;
  write_folder(dir.path(), "train", 2, 4);
  const std::filesystem::path c0 = dir.path() / "train" / "class0";
  const std::vector<std::uint8_t> rgb = image_pixels(64, 64, 0, 0);
  std::vector<std::uint8_t> jpeg = encode_jpeg(rgb.data(), 64, 64, 90);
  jpeg.resize(jpeg.size() * 2 / 3);
  write_bytes((c0 / "cut.jpg").string(), jpeg);                        // truncated
  write_bytes((c0 / "text.png").string(), {'n', 'o', 't', ' ', 'p'});  // not an image
  write_bytes((c0 / "zero.jpg").string(), {});                         // empty
  write_bytes((c0 / "notes.txt").string(), {'x'});                     // ignored: extension
  const Dataset data = load_image_folder(dir.path().string(), true, 0, small_options());
  ASSERT_EQ(data.size(), 11);  // 8 images and 3 bad ones; notes.txt is not a sample
  const auto* source = dynamic_cast<const ImageFolderSource*>(data.source.get());
  ASSERT_EQ(source->index().ignored.size(), 1u);
  const EpochData epoch = run_epoch(data, 2, 0, 4);
  EXPECT_EQ(epoch.stats.skipped, 3);
  EXPECT_EQ(epoch.stats.samples, 8);
  ASSERT_EQ(epoch.stats.first_skipped.size(), 3u);
  std::string all;
  for (const std::string& s : epoch.stats.first_skipped) all += s + "\n";
  EXPECT_NE(all.find("cut.jpg: truncated JPEG"), std::string::npos) << all;
  EXPECT_NE(all.find("text.png: not a JPEG or PNG"), std::string::npos) << all;
  EXPECT_NE(all.find("zero.jpg: empty file"), std::string::npos) << all;
  // No sample twice; the bad ones are absent (their batches are smaller).
  std::set<std::int64_t> seen(epoch.indices.begin(), epoch.indices.end());
  EXPECT_EQ(seen.size(), epoch.indices.size());
  EXPECT_EQ(epoch.indices.size(), 8u);
  for (std::int64_t index : epoch.indices) {
    EXPECT_EQ(source->sample_name(index).find("class0/cut.jpg"), std::string::npos);
  }
  std::size_t rows = 0;
  for (const auto& labels : epoch.labels) rows += labels.size();
  EXPECT_EQ(rows, 8u);

  // --on-bad-image error: the epoch stops, naming the file.
  try {
    run_epoch(data, 2, 0, 4, BadImagePolicy::Error);
    ADD_FAILURE() << "no error";
  } catch (const IoError& error) {
    const std::string text = error.message();
    EXPECT_TRUE(text.find("cut.jpg") != std::string::npos ||
                text.find("text.png") != std::string::npos ||
                text.find("zero.jpg") != std::string::npos)
        << text;
    EXPECT_NE(text.find("--on-bad-image"), std::string::npos) << text;
  }
}

TEST(ImageFolderLoader, MissingOrEmptyFoldersAreNamedWithTheFix) {
  TempDir dir;
  const auto message = [&](bool train) {
    try {
      load_image_folder(dir.path().string(), train, 0, small_options());
    } catch (const IoError& error) {
      return error.message();
    }
    return std::string("(loaded)");
  };
  std::string text = message(true);
  EXPECT_NE(text.find("has no train/ folder"), std::string::npos) << text;
  EXPECT_NE(text.find("--data-dir"), std::string::npos) << text;
  text = message(false);
  EXPECT_NE(text.find("has no val/ folder"), std::string::npos) << text;

  std::filesystem::create_directories(dir.path() / "train");
  text = message(true);
  EXPECT_NE(text.find("has no class folders"), std::string::npos) << text;

  std::filesystem::create_directories(dir.path() / "train" / "cat");
  std::filesystem::create_directories(dir.path() / "train" / "dog");
  write_bytes((dir.path() / "train" / "dog" / "a.jpg").string(), {0xFF, 0xD8, 0xFF});
  write_bytes((dir.path() / "train" / "cat" / "readme.md").string(), {'x'});
  text = message(true);
  EXPECT_NE(text.find("class folder(s) cat hold no image file"), std::string::npos) << text;
}

}  // namespace
}  // namespace mb
