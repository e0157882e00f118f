// UpsampleNearest2d: forward against the nearest-neighbour definition, gradients against
// central differences, a hand-computed 2x2 example, and shape errors.
#include <gtest/gtest.h>

#include "layers/upsample.h"
#include "runtime/error.h"
#include "tests/layers/gradcheck.h"

namespace mb {
namespace {

TEST(UpsampleNearest2d, ForwardCopiesNearestPixel) {
  UpsampleNearest2d up;  // x2
  const Tensor x = testing::random_tensor(Shape{2, 3, 4, 5}, 1);
  const Tensor y = up.forward(x, RunState{});
  ASSERT_EQ(y.shape(), (Shape{2, 3, 8, 10}));
  EXPECT_EQ(up.output_shape(x.shape()), y.shape());
  const std::vector<float> xv = x.to_vector(), yv = y.to_vector();
  for (std::int64_t p = 0; p < 6; ++p) {
    for (std::int64_t oy = 0; oy < 8; ++oy) {
      for (std::int64_t ox = 0; ox < 10; ++ox) {
        ASSERT_EQ(yv[(p * 8 + oy) * 10 + ox], xv[(p * 4 + oy / 2) * 5 + ox / 2]);
      }
    }
  }
}

TEST(UpsampleNearest2d, KnownSmallExample) {
  UpsampleNearest2d up(2);
  const Tensor x = Tensor::from_vector({1, 2, 3, 4}, Shape{1, 1, 2, 2});
  EXPECT_EQ(up.forward(x, RunState{}).to_vector(),
            (std::vector<float>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}));
  std::vector<float> g(16);
  for (int i = 0; i < 16; ++i) g[i] = static_cast<float>(i);
  // Block sums: {0+1+4+5, 2+3+6+7, 8+9+12+13, 10+11+14+15}.
  EXPECT_EQ(up.backward(Tensor::from_vector(g, Shape{1, 1, 4, 4}), BackwardState{}).to_vector(),
            (std::vector<float>{10, 18, 42, 50}));
}

TEST(UpsampleNearest2d, GradientMatchesFiniteDifferences) {
  UpsampleNearest2d up2(2);
  testing::check_gradients(up2, testing::random_tensor(Shape{2, 2, 3, 3}, 2), 3);
  UpsampleNearest2d up3(3);
  testing::check_gradients(up3, testing::random_tensor(Shape{1, 2, 2, 3}, 4), 5);
}

TEST(UpsampleNearest2d, RejectsBadShapesAndScale) {
  EXPECT_THROW(UpsampleNearest2d(0), InvalidArgument);
  UpsampleNearest2d up;
  EXPECT_THROW(up.forward(Tensor::zeros(Shape{2, 3, 4}), RunState{}), InvalidArgument);
  up.forward(Tensor::zeros(Shape{1, 1, 2, 2}), RunState{});
  EXPECT_THROW(up.backward(Tensor::zeros(Shape{1, 1, 2, 2}), BackwardState{}), InvalidArgument);
}

}  // namespace
}  // namespace mb
