// Image folders against torchvision 0.14 / PIL 9.4 (fixtures written by
// tools/reference/image_cases.py): ImageFolder's class and sample order, RandomResizedCrop's
// fallback crop, resized_crop's pixels (PIL bilinear with its antialiasing, crop then
// resize, with and without a flip), Resize + CenterCrop's sizes and offsets, and the whole
// evaluation transform on pixels.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../fixture.h"
#include "data/image_dataset.h"
#include "data/image_folder.h"
#include "data/image_transforms.h"
#include "temp_dir.h"

namespace mb {
namespace {

using testing::Fixture;
using testing::TempDir;

std::vector<std::int32_t> ints(const Tensor& t) {
  const std::int32_t* p = t.data<std::int32_t>();
  return std::vector<std::int32_t>(p, p + t.numel());
}

// An [H, W, 3] int32 fixture image as RGB bytes.
std::vector<std::uint8_t> rgb_bytes(const Tensor& t) {
  std::vector<std::uint8_t> out;
  for (std::int32_t v : ints(t)) out.push_back(static_cast<std::uint8_t>(v));
  return out;
}

TEST(ImageFolderReference, ClassesAndSamplesInTorchvisionsOrder) {
  const Fixture f("images_folder_rule.safetensors");
  const auto files = nlohmann::json::parse(f.meta("files"));
  const auto dirs = nlohmann::json::parse(f.meta("dirs"));
  const auto classes = nlohmann::json::parse(f.meta("classes")).get<std::vector<std::string>>();
  const auto samples = nlohmann::json::parse(f.meta("samples")).get<std::vector<std::string>>();
  TempDir root;
  for (const auto& dir : dirs) {
    std::filesystem::create_directories(root.path() / dir.get<std::string>());
  }
  for (const auto& file : files) {
    const std::filesystem::path path = root.path() / file.get<std::string>();
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << "x";
  }
  const ImageFolderIndex index = scan_image_folder(root.path().string());
  EXPECT_EQ(index.classes, classes);
  std::vector<std::string> relative;
  for (const std::string& path : index.paths) {
    relative.push_back(path.substr(root.path().string().size() + 1));
  }
  EXPECT_EQ(relative, samples);
  EXPECT_EQ(index.labels, ints(f.tensor("labels")));
}

TEST(ImageTransformsReference, RandomResizedCropFallbackIsTorchvisions) {
  const Fixture f("images_rrc_fallback.safetensors");
  const std::vector<float> params = f.values("params");
  const std::vector<std::int32_t> boxes = ints(f.tensor("boxes"));
  const std::size_t cases = boxes.size() / 4;
  ASSERT_GT(cases, 10u);
  for (std::size_t k = 0; k < cases; ++k) {
    const float* p = params.data() + 6 * k;
    RandomResizedCropOptions options;
    options.scale_min = p[2];
    options.scale_max = p[3];
    options.ratio_min = p[4];
    options.ratio_max = p[5];
    SampleRandom random(7, 0, static_cast<std::int64_t>(k));
    const CropBox box = random_resized_crop_box(static_cast<std::int64_t>(p[0]),
                                                static_cast<std::int64_t>(p[1]), options, random);
    const std::int32_t* want = boxes.data() + 4 * k;
    EXPECT_EQ(box.top, want[0]) << "case " << k << ": " << p[0] << "x" << p[1];
    EXPECT_EQ(box.left, want[1]) << "case " << k;
    EXPECT_EQ(box.height, want[2]) << "case " << k;
    EXPECT_EQ(box.width, want[3]) << "case " << k;
  }
}

TEST(ImageTransformsReference, ResizedCropPixelsArePils) {
  const Fixture f("images_resized_crop.safetensors");
  const int cases = std::stoi(f.meta("cases"));
  ASSERT_GT(cases, 5);
  for (int k = 0; k < cases; ++k) {
    const std::string key = "case" + std::to_string(k);
    const Tensor& image = f.tensor(key + ".image");
    const std::vector<std::uint8_t> rgb = rgb_bytes(image);
    const std::vector<std::int32_t> box = ints(f.tensor(key + ".box"));
    const std::vector<std::int32_t> size = ints(f.tensor(key + ".size"));
    const bool flip = ints(f.tensor(key + ".flip"))[0] != 0;
    const std::vector<std::int32_t> want = ints(f.tensor(key + ".output"));  // [h, w, 3]
    const Region region{double(box[0]), double(box[1]), double(box[2]), double(box[3])};
    std::vector<std::uint8_t> planar(static_cast<std::size_t>(3 * size[0] * size[1]));
    resize_bilinear_to_planar(rgb.data(), image.dim(0), image.dim(1), region, true, planar.data(),
                              size[0], size[1], flip);
    int mismatches = 0;
    for (std::int64_t y = 0; y < size[0]; ++y) {
      for (std::int64_t x = 0; x < size[1]; ++x) {
        for (int c = 0; c < 3; ++c) {
          const int ours = planar[static_cast<std::size_t>((c * size[0] + y) * size[1] + x)];
          const int theirs = want[static_cast<std::size_t>((y * size[1] + x) * 3 + c)];
          if (ours != theirs && ++mismatches <= 3) {
            ADD_FAILURE() << key << " (" << f.meta("names") << ") pixel (" << y << ", " << x
                          << ") channel " << c << ": ours " << ours << ", PIL " << theirs;
          }
        }
      }
    }
    EXPECT_EQ(mismatches, 0) << key;
  }
}

TEST(ImageTransformsReference, ResizeAndCenterCropGeometryIsTorchvisions) {
  const Fixture f("images_eval_resize.safetensors");
  const std::vector<std::int32_t> sizes = ints(f.tensor("sizes"));
  const std::vector<std::int32_t> resize = ints(f.tensor("resize"));
  const std::vector<std::int32_t> resized = ints(f.tensor("resized"));
  const std::vector<std::int32_t> crop = ints(f.tensor("crop"));
  const std::vector<std::int32_t> boxes = ints(f.tensor("crop_boxes"));
  for (std::size_t k = 0; k < resize.size(); ++k) {
    const ImageSize out = resize_shorter_side(sizes[2 * k], sizes[2 * k + 1], resize[k]);
    EXPECT_EQ(out.height, resized[2 * k]) << "case " << k;
    EXPECT_EQ(out.width, resized[2 * k + 1]) << "case " << k;
    const CropBox box = center_crop_box(out.height, out.width, crop[k], crop[k]);
    EXPECT_EQ(box.top, boxes[4 * k]) << "case " << k;
    EXPECT_EQ(box.left, boxes[4 * k + 1]) << "case " << k;
  }
}

TEST(ImageTransformsReference, EvaluationTransformPixelsArePils) {
  // Resize(20) + CenterCrop(16) of a 61x47 image, done in one resampling of the crop's
  // region of the original (with the filter reading across the crop's edges, as PIL does
  // when it resizes the whole image first).
  const Fixture f("images_eval_resize.safetensors");
  const Tensor& image = f.tensor("pipeline.image");
  const std::vector<std::uint8_t> rgb = rgb_bytes(image);
  const std::vector<std::int32_t> want = ints(f.tensor("pipeline.output"));
  ImageFolderOptions options;
  options.image_size = std::stoi(f.meta("pipeline_crop"));
  options.resize = std::stoi(f.meta("pipeline_resize"));
  const SampleGeometry geometry =
      sample_geometry(ImageSplit::Eval, options, image.dim(0), image.dim(1), 0, 0, 0);
  EXPECT_FALSE(geometry.flip);
  const std::int64_t s = options.image_size;
  std::vector<std::uint8_t> planar(static_cast<std::size_t>(3 * s * s));
  resize_bilinear_to_planar(rgb.data(), image.dim(0), image.dim(1), geometry.region,
                            geometry.taps_within_region, planar.data(), s, s, false);
  int mismatches = 0;
  for (std::int64_t i = 0; i < s * s; ++i) {
    for (int c = 0; c < 3; ++c) {
      mismatches += planar[static_cast<std::size_t>(c * s * s + i)] !=
                    want[static_cast<std::size_t>(i * 3 + c)];
    }
  }
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace mb
