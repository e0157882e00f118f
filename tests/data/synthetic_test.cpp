// Synthetic data sets: determinism, prefix stability, label ranges, segmentation masks, and
// that they are learnable (a nearest-class-mean classifier fit on the training split beats
// chance by far on the test split).
#include "data/synthetic.h"

#include <gtest/gtest.h>

#include <set>

#include "data/dataset.h"
#include "runtime/error.h"

namespace mb {
namespace {

SyntheticOptions small(bool segmentation = false) {
  SyntheticOptions o;
  o.samples = 64;
  o.channels = 3;
  o.height = 8;
  o.width = 6;
  o.num_classes = 5;
  o.segmentation = segmentation;
  o.seed = 1234;
  return o;
}

TEST(Synthetic, SameSeedSameDataDifferentSeedDifferentData) {
  for (const bool segmentation : {false, true}) {
    const Dataset a = make_synthetic(small(segmentation));
    const Dataset b = make_synthetic(small(segmentation));
    EXPECT_EQ(a.images.to_vector(), b.images.to_vector());
    EXPECT_EQ(a.labels.to_vector_int(), b.labels.to_vector_int());
    SyntheticOptions other = small(segmentation);
    other.seed = 1235;
    const Dataset c = make_synthetic(other);
    EXPECT_NE(a.images.to_vector(), c.images.to_vector());
  }
}

TEST(Synthetic, ASmallerSetIsAPrefix) {
  SyntheticOptions o = small();
  const Dataset full = make_synthetic(o);
  o.samples = 10;
  const Dataset part = make_synthetic(o);
  const std::vector<float> all = full.images.to_vector();
  EXPECT_EQ(part.images.to_vector(),
            std::vector<float>(all.begin(), all.begin() + part.images.numel()));
  const std::vector<std::int32_t> labels = full.labels.to_vector_int();
  EXPECT_EQ(part.labels.to_vector_int(),
            std::vector<std::int32_t>(labels.begin(), labels.begin() + 10));
}

TEST(Synthetic, ClassificationShapesRangesAndEveryClassPresent) {
  const Dataset data = make_synthetic(small());
  EXPECT_EQ(data.images.shape(), (Shape{64, 3, 8, 6}));
  EXPECT_EQ(data.labels.shape(), (Shape{64}));
  EXPECT_EQ(data.num_classes, 5);
  for (const float v : data.images.to_vector()) {
    ASSERT_GE(v, 0.0f);
    ASSERT_LT(v, 1.0f);
  }
  std::set<std::int32_t> seen;
  for (const std::int32_t label : data.labels.to_vector_int()) {
    ASSERT_GE(label, 0);
    ASSERT_LT(label, 5);
    seen.insert(label);
  }
  EXPECT_EQ(seen.size(), 5u);
}

TEST(Synthetic, SegmentationMasksHaveBackgroundAndRectangles) {
  const Dataset data = make_synthetic(small(true));
  EXPECT_TRUE(data.is_segmentation());
  EXPECT_EQ(data.labels.shape(), (Shape{64, 8, 6}));
  std::set<std::int32_t> seen;
  for (const std::int32_t label : data.labels.to_vector_int()) {
    ASSERT_GE(label, 0);
    ASSERT_LT(label, 5);
    seen.insert(label);
  }
  EXPECT_EQ(seen.size(), 5u);
  // Each mask contains at least one non-background pixel (1 to 3 rectangles of class >= 1).
  const std::int32_t* masks = data.labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < 64; ++i) {
    bool any = false;
    for (std::int64_t p = 0; p < 48; ++p) any = any || masks[i * 48 + p] != 0;
    EXPECT_TRUE(any) << "sample " << i;
  }
}

// Nearest class mean, fit on the training split, scored on the test split.
TEST(Synthetic, NearestClassMeanBeatsChanceOnTheTestSplit) {
  SyntheticOptions o;
  o.channels = 1;
  o.height = 12;
  o.width = 12;
  o.num_classes = 10;
  o.seed = 7;
  const Dataset train = load_dataset("synthetic", "", true, 500, o);
  const Dataset test = load_dataset("synthetic", "", false, 200, o);
  EXPECT_NE(train.images.to_vector()[0], test.images.to_vector()[0]);
  const std::int64_t image = 144;
  std::vector<double> means(10 * image, 0.0);
  std::vector<int> counts(10, 0);
  const float* x = train.images.data<float>();
  const std::int32_t* y = train.labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < train.size(); ++i) {
    ++counts[y[i]];
    for (std::int64_t e = 0; e < image; ++e) means[y[i] * image + e] += x[i * image + e];
  }
  for (int k = 0; k < 10; ++k) {
    for (std::int64_t e = 0; e < image; ++e) means[k * image + e] /= std::max(1, counts[k]);
  }
  int correct = 0;
  const float* tx = test.images.data<float>();
  const std::int32_t* ty = test.labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < test.size(); ++i) {
    int best = 0;
    double best_distance = 1e30;
    for (int k = 0; k < 10; ++k) {
      double distance = 0.0;
      for (std::int64_t e = 0; e < image; ++e) {
        const double d = tx[i * image + e] - means[k * image + e];
        distance += d * d;
      }
      if (distance < best_distance) {
        best_distance = distance;
        best = k;
      }
    }
    correct += best == ty[i];
  }
  EXPECT_GT(correct, 150) << "accuracy " << correct / 200.0 << " (chance 0.1)";
}

TEST(Synthetic, InvalidOptionsAreRejected) {
  SyntheticOptions o = small();
  o.num_classes = 0;
  EXPECT_THROW(make_synthetic(o), InvalidArgument);
  o = small();
  o.height = 0;
  EXPECT_THROW(make_synthetic(o), InvalidArgument);
}

}  // namespace
}  // namespace mb
