// Normalization and augmentation against naive definitions: flip twice is the identity,
// padding 0 crops are the identity, a corner crop is a shift with zero fill, draws depend
// only on (seed, epoch, sample index), and normalization gives mean 0 and std 1.
#include "data/transforms.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "data/dataset.h"
#include "runtime/error.h"

namespace mb {
namespace {

constexpr std::int64_t kC = 2, kH = 5, kW = 7, kImage = kC * kH * kW;

std::vector<float> ramp() {
  std::vector<float> v(kImage);
  for (std::int64_t i = 0; i < kImage; ++i) v[i] = static_cast<float>(i + 1);
  return v;
}

TEST(Augment, FlipTwiceIsIdentityAndFlipMirrorsColumns) {
  const std::vector<float> src = ramp();
  std::vector<float> once(kImage), twice(kImage);
  AugmentDraw flip;
  flip.flip = true;
  augment_sample(src.data(), once.data(), kC, kH, kW, 0, flip);
  augment_sample(once.data(), twice.data(), kC, kH, kW, 0, flip);
  EXPECT_EQ(twice, src);
  for (std::int64_t c = 0; c < kC; ++c) {
    for (std::int64_t y = 0; y < kH; ++y) {
      for (std::int64_t x = 0; x < kW; ++x) {
        EXPECT_EQ(once[(c * kH + y) * kW + x], src[(c * kH + y) * kW + (kW - 1 - x)]);
      }
    }
  }
}

TEST(Augment, CropWithoutPaddingOrCentredIsIdentity) {
  const std::vector<float> src = ramp();
  std::vector<float> dst(kImage);
  AugmentOptions options;
  options.crop_padding = 0;
  for (std::int64_t i = 0; i < 20; ++i) {
    const AugmentDraw draw = draw_augmentation(options, 3, 1, i);
    EXPECT_EQ(draw.offset_y, 0);
    EXPECT_EQ(draw.offset_x, 0);
    EXPECT_FALSE(draw.flip);
    augment_sample(src.data(), dst.data(), kC, kH, kW, 0, draw);
    EXPECT_EQ(dst, src);
  }
  AugmentDraw centred;
  centred.offset_y = 2;
  centred.offset_x = 2;
  augment_sample(src.data(), dst.data(), kC, kH, kW, 2, centred);
  EXPECT_EQ(dst, src);
}

TEST(Augment, CornerCropShiftsWithZeroFillAndThenFlips) {
  const std::vector<float> src = ramp();
  std::vector<float> dst(kImage);
  const std::int64_t p = 2;
  for (const bool flip : {false, true}) {
    AugmentDraw draw;  // top-left corner of the padded image
    draw.flip = flip;
    augment_sample(src.data(), dst.data(), kC, kH, kW, p, draw);
    for (std::int64_t c = 0; c < kC; ++c) {
      for (std::int64_t y = 0; y < kH; ++y) {
        for (std::int64_t x = 0; x < kW; ++x) {
          const std::int64_t cropped_x = flip ? kW - 1 - x : x;
          const std::int64_t sy = y - p, sx = cropped_x - p;
          const float expected = sy >= 0 && sx >= 0 ? src[(c * kH + sy) * kW + sx] : 0.0f;
          EXPECT_EQ(dst[(c * kH + y) * kW + x], expected) << c << "," << y << "," << x;
        }
      }
    }
  }
  AugmentDraw bad;
  bad.offset_x = 2 * p + 1;
  EXPECT_THROW(augment_sample(src.data(), dst.data(), kC, kH, kW, p, bad), InvalidArgument);
}

TEST(Augment, MaskFollowsTheSameGeometry) {
  std::vector<std::int32_t> mask(kH * kW);
  std::vector<float> plane(kH * kW);
  for (std::int64_t i = 0; i < kH * kW; ++i) {
    mask[i] = static_cast<std::int32_t>(i + 1);
    plane[i] = static_cast<float>(i + 1);
  }
  AugmentDraw draw;
  draw.offset_y = 3;
  draw.offset_x = 1;
  draw.flip = true;
  std::vector<std::int32_t> mask_out(kH * kW);
  std::vector<float> plane_out(kH * kW);
  augment_mask(mask.data(), mask_out.data(), kH, kW, 2, draw, 0);
  augment_sample(plane.data(), plane_out.data(), 1, kH, kW, 2, draw);
  for (std::int64_t i = 0; i < kH * kW; ++i)
    EXPECT_EQ(static_cast<float>(mask_out[i]), plane_out[i]);
}

TEST(Augment, DrawsAreReproducibleVariedAndKeyedBySample) {
  AugmentOptions options;
  options.crop_padding = 4;
  options.flip = true;
  std::set<std::int64_t> offsets;
  int flips = 0;
  for (std::int64_t i = 0; i < 400; ++i) {
    const AugmentDraw a = draw_augmentation(options, 11, 2, i);
    const AugmentDraw b = draw_augmentation(options, 11, 2, i);
    EXPECT_EQ(a.offset_y, b.offset_y);
    EXPECT_EQ(a.offset_x, b.offset_x);
    EXPECT_EQ(a.flip, b.flip);
    ASSERT_GE(a.offset_y, 0);
    ASSERT_LE(a.offset_y, 8);
    ASSERT_LE(a.offset_x, 8);
    offsets.insert(a.offset_y * 9 + a.offset_x);
    flips += a.flip;
  }
  EXPECT_GT(offsets.size(), 60u);  // 81 positions, 400 draws
  EXPECT_GT(flips, 150);
  EXPECT_LT(flips, 250);
  int differ_by_epoch = 0;
  for (std::int64_t i = 0; i < 50; ++i) {
    const AugmentDraw a = draw_augmentation(options, 11, 2, i),
                      b = draw_augmentation(options, 11, 3, i);
    differ_by_epoch += a.offset_y != b.offset_y || a.offset_x != b.offset_x || a.flip != b.flip;
  }
  EXPECT_GT(differ_by_epoch, 40);
}

TEST(Augment, BatchResultDoesNotDependOnTheSplit) {
  SyntheticOptions o;
  o.samples = 6;
  o.channels = 3;
  o.height = 8;
  o.width = 8;
  const Dataset data = make_synthetic(o);
  AugmentOptions options;
  options.crop_padding = 2;
  options.flip = true;
  const std::vector<std::int64_t> indices = {40, 7, 3, 19, 0, 5};
  const std::vector<float> whole = augment_images(data.images, indices, options, 9, 4).to_vector();
  const std::vector<float> first =
      augment_images(data.images.slice(0, 4), {40, 7, 3, 19}, options, 9, 4).to_vector();
  const std::vector<float> second =
      augment_images(data.images.slice(4, 6), {0, 5}, options, 9, 4).to_vector();
  std::vector<float> joined = first;
  joined.insert(joined.end(), second.begin(), second.end());
  EXPECT_EQ(whole, joined);
}

TEST(Normalization, GivesZeroMeanAndUnitStdPerChannel) {
  SyntheticOptions o;
  o.samples = 50;
  o.channels = 3;
  o.height = 6;
  o.width = 5;
  Dataset data = make_synthetic(o);
  // Make the channels differ in scale and offset so the statistics are not all alike.
  float* x = data.images.data<float>();
  for (std::int64_t i = 0; i < data.images.numel(); ++i) {
    const std::int64_t c = (i / 30) % 3;
    x[i] = x[i] * static_cast<float>(c + 1) * 3.0f + static_cast<float>(c) * 10.0f;
  }
  const Normalization n = compute_normalization(data);
  ASSERT_EQ(n.mean.size(), 3u);
  normalize_inplace(data.images, n);
  for (std::int64_t c = 0; c < 3; ++c) {
    double sum = 0.0, squares = 0.0;
    for (std::int64_t s = 0; s < 50; ++s) {
      for (std::int64_t p = 0; p < 30; ++p) {
        const double v = x[(s * 3 + c) * 30 + p];
        sum += v;
        squares += v * v;
      }
    }
    EXPECT_NEAR(sum / 1500.0, 0.0, 1e-5) << "channel " << c;
    EXPECT_NEAR(std::sqrt(squares / 1500.0), 1.0, 1e-4) << "channel " << c;
  }
}

TEST(Normalization, RejectsMismatchedOrZeroStd) {
  Tensor images = Tensor::zeros(Shape{2, 3, 2, 2});
  EXPECT_THROW(normalize_inplace(images, Normalization{{0.5f}, {0.2f}}), InvalidArgument);
  EXPECT_THROW(normalize_inplace(images, Normalization{{0, 0, 0}, {1, 0, 1}}), InvalidArgument);
  Dataset constant;
  constant.images = Tensor::full(Shape{4, 1, 2, 2}, 0.25f);
  const Normalization n = compute_normalization(constant);
  EXPECT_FLOAT_EQ(n.mean[0], 0.25f);
  EXPECT_FLOAT_EQ(n.std[0], 1.0f);
}

}  // namespace
}  // namespace mb
