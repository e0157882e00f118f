// Functional add / add_into / concat_channels / split_channels /
// relu_backward_from_output and the Flatten module, on the CPU: values against naive
// loops, the concat/split round trip, and the errors for mismatched shapes.
#include <gtest/gtest.h>

#include <string>

#include "layers/elementwise.h"
#include "layers/flatten.h"
#include "runtime/error.h"
#include "tests/layers/gradcheck.h"

namespace mb {
namespace {

TEST(Elementwise, AddAddIntoScale) {
  const Tensor a = testing::random_tensor(Shape{2, 3, 4}, 1);
  const Tensor b = testing::random_tensor(Shape{2, 3, 4}, 2);
  const Tensor sum = add(a, b);
  EXPECT_EQ(sum.tag(), MemoryTag::Activation);
  const std::vector<float> av = a.to_vector(), bv = b.to_vector(), sv = sum.to_vector();
  Tensor acc = a.clone();
  add_into(acc, b);
  const std::vector<float> accv = acc.to_vector();
  for (std::size_t i = 0; i < av.size(); ++i) {
    EXPECT_EQ(sv[i], av[i] + bv[i]);
    EXPECT_EQ(accv[i], av[i] + bv[i]);
  }
  EXPECT_EQ(a.to_vector(), av);  // inputs untouched
}

TEST(Elementwise, MismatchedShapesThrowNamingBoth) {
  const Tensor a = Tensor::zeros(Shape{2, 3});
  const Tensor b = Tensor::zeros(Shape{3, 2});
  try {
    add(a, b);
    FAIL() << "add accepted mismatched shapes";
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("add"), std::string::npos) << message;
    EXPECT_NE(message.find("[2, 3]"), std::string::npos) << message;
    EXPECT_NE(message.find("[3, 2]"), std::string::npos) << message;
  }
  Tensor dst = a.clone();
  EXPECT_THROW(add_into(dst, b), InvalidArgument);
  EXPECT_THROW(add(a, Tensor::from_vector_int({0, 0, 0, 0, 0, 0}, Shape{2, 3})), InvalidArgument);
}

TEST(Elementwise, ConcatChannelsMatchesNaiveAndSplitInvertsIt) {
  const Tensor a = testing::random_tensor(Shape{2, 3, 4, 5}, 3);
  const Tensor b = testing::random_tensor(Shape{2, 2, 4, 5}, 4);
  const Tensor c = concat_channels(a, b);
  ASSERT_EQ(c.shape(), (Shape{2, 5, 4, 5}));
  const std::vector<float> av = a.to_vector(), bv = b.to_vector(), cv = c.to_vector();
  for (int n = 0; n < 2; ++n) {
    for (int ch = 0; ch < 5; ++ch) {
      for (int p = 0; p < 20; ++p) {
        const float expected = ch < 3 ? av[(n * 3 + ch) * 20 + p] : bv[(n * 2 + ch - 3) * 20 + p];
        ASSERT_EQ(cv[(n * 5 + ch) * 20 + p], expected);
      }
    }
  }
  const auto [ga, gb] = split_channels(c, 3);
  EXPECT_EQ(ga.shape(), a.shape());
  EXPECT_EQ(gb.shape(), b.shape());
  EXPECT_EQ(ga.to_vector(), av);
  EXPECT_EQ(gb.to_vector(), bv);
  // Two-dimensional tensors concatenate along features.
  const Tensor f = concat_channels(Tensor::from_vector({1, 2, 3, 4}, Shape{2, 2}),
                                   Tensor::from_vector({5, 6}, Shape{2, 1}));
  EXPECT_EQ(f.to_vector(), (std::vector<float>{1, 2, 5, 3, 4, 6}));
}

TEST(Elementwise, ConcatAndSplitRejectBadShapes) {
  EXPECT_THROW(concat_channels(Tensor::zeros(Shape{2, 3, 4, 4}), Tensor::zeros(Shape{2, 3, 4, 5})),
               InvalidArgument);
  EXPECT_THROW(concat_channels(Tensor::zeros(Shape{2, 3, 4, 4}), Tensor::zeros(Shape{3, 3, 4, 4})),
               InvalidArgument);
  EXPECT_THROW(concat_channels(Tensor::zeros(Shape{2, 3, 4, 4}), Tensor::zeros(Shape{2, 3, 16})),
               InvalidArgument);
  EXPECT_THROW(split_channels(Tensor::zeros(Shape{2, 3, 4, 4}), 4), InvalidArgument);
  EXPECT_THROW(split_channels(Tensor::zeros(Shape{6}), 1), InvalidArgument);
}

TEST(Elementwise, ReluBackwardFromOutput) {
  const Tensor y = Tensor::from_vector({0, 1.5f, 0, 2}, Shape{4});
  const Tensor g = Tensor::from_vector({1, 2, 3, 4}, Shape{4});
  EXPECT_EQ(relu_backward_from_output(y, g).to_vector(), (std::vector<float>{0, 2, 0, 4}));
}

TEST(Flatten, ViewsAndRestoresShape) {
  Flatten flatten;
  const Tensor x = testing::random_tensor(Shape{3, 2, 4, 5}, 5);
  const Tensor y = flatten.forward(x, RunState{});
  EXPECT_EQ(y.shape(), (Shape{3, 40}));
  EXPECT_EQ(y.raw_data(), x.raw_data());  // a view, no copy
  EXPECT_EQ(y.to_vector(), x.to_vector());
  const Tensor g = testing::random_tensor(Shape{3, 40}, 6);
  const Tensor dx = flatten.backward(g, BackwardState{});
  EXPECT_EQ(dx.shape(), x.shape());
  EXPECT_EQ(dx.to_vector(), g.to_vector());
  EXPECT_THROW(flatten.backward(Tensor::zeros(Shape{3, 41}), BackwardState{}), InvalidArgument);
  EXPECT_EQ(flatten.output_shape(Shape{7, 512, 1, 1}), (Shape{7, 512}));
}

}  // namespace
}  // namespace mb
