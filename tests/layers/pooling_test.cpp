// MaxPool2d, AvgPool2d and GlobalAvgPool2d on the CPU: forward against naive loops written
// independently here, finite-difference gradients with strides, padding and odd sizes,
// output sizes PyTorch documents, and argument checking.
#include "layers/pooling.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "tests/layers/gradcheck.h"

namespace mb {
namespace {

using testing::check_gradients;
using testing::expect_close;
using testing::random_tensor;

// Distinct values 0.05 apart in random order: no ties, and a finite-difference step of
// 1e-2 never changes which element of a window is the maximum.
Tensor distinct_tensor(const Shape& shape, std::uint64_t seed) {
  std::vector<float> values(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < values.size(); ++i) {
    values[i] = 0.05f * static_cast<float>(i) - 0.025f * static_cast<float>(values.size());
  }
  std::mt19937_64 rng(seed);
  std::shuffle(values.begin(), values.end(), rng);
  return Tensor::from_vector(values, shape);
}

// Reference pooling straight from the definition: the padded input holds -inf (max) or 0
// (average, divided by kernel * kernel).
std::vector<float> naive_pool(const Tensor& x, int k, int s, int p, bool max) {
  const std::int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  const std::int64_t oh_count = (h + 2 * p - k) / s + 1, ow_count = (w + 2 * p - k) / s + 1;
  const std::vector<float> v = x.to_vector();
  std::vector<float> y;
  for (std::int64_t plane = 0; plane < n * c; ++plane)
    for (std::int64_t oh = 0; oh < oh_count; ++oh)
      for (std::int64_t ow = 0; ow < ow_count; ++ow) {
        double acc = max ? -std::numeric_limits<double>::infinity() : 0.0;
        for (int dh = 0; dh < k; ++dh)
          for (int dw = 0; dw < k; ++dw) {
            const std::int64_t ih = oh * s - p + dh, iw = ow * s - p + dw;
            const bool inside = ih >= 0 && ih < h && iw >= 0 && iw < w;
            const double value = inside ? v[(plane * h + ih) * w + iw]
                                        : (max ? -std::numeric_limits<double>::infinity() : 0.0);
            acc = max ? std::max(acc, value) : acc + value;
          }
        y.push_back(static_cast<float>(max ? acc : acc / (k * k)));
      }
  return y;
}

struct PoolCase {
  Shape input;
  int kernel;
  int stride;  // -1: kernel
  int padding;
};

const std::vector<PoolCase> kCases = {
    {Shape{2, 3, 7, 9}, 3, 2, 1},   // ResNet stem pattern, odd sizes
    {Shape{1, 2, 6, 5}, 2, -1, 0},  // default stride; the odd last column is dropped
    {Shape{2, 1, 5, 5}, 3, 1, 0},   // overlapping windows
    {Shape{1, 2, 4, 7}, 4, 3, 2},   // padding = kernel / 2, uneven stride
};

TEST(MaxPool2d, ForwardMatchesNaiveLoops) {
  for (const PoolCase& pc : kCases) {
    MaxPool2d pool(pc.kernel, pc.stride, pc.padding);
    Tensor x = random_tensor(pc.input, 1);
    Tensor y = pool.forward(x, RunState{});
    const int s = pc.stride == -1 ? pc.kernel : pc.stride;
    EXPECT_EQ(y.shape(), pool.output_shape(pc.input));
    EXPECT_EQ(y.tag(), MemoryTag::Activation);
    expect_close(y.to_vector(), naive_pool(x, pc.kernel, s, pc.padding, true), 0.0, 0.0,
                 "max pool " + pc.input.to_string());
  }
}

TEST(MaxPool2d, GradientsMatchFiniteDifferences) {
  for (const PoolCase& pc : kCases) {
    MaxPool2d pool(pc.kernel, pc.stride, pc.padding);
    check_gradients(pool, distinct_tensor(pc.input, 2), 3);
  }
}

TEST(MaxPool2d, BackwardRoutesGradientToTheMaximum) {
  // One plane, 2x2 windows: the gradient lands only on each window's largest element.
  MaxPool2d pool(2);
  Tensor x = Tensor::from_vector({1, 5, 2, 0,  //
                                  3, 4, 8, 7,  //
                                  9, 0, 1, 1,  //
                                  2, 2, 6, 3},
                                 Shape{1, 1, 4, 4});
  Tensor y = pool.forward(x, RunState{});
  EXPECT_EQ(y.to_vector(), (std::vector<float>{5, 8, 9, 6}));
  Tensor dx = pool.backward(Tensor::from_vector({10, 20, 30, 40}, Shape{1, 1, 2, 2}), {});
  EXPECT_EQ(dx.to_vector(), (std::vector<float>{0, 10, 0, 0,  //
                                                0, 0, 20, 0,  //
                                                30, 0, 0, 0,  //
                                                0, 0, 40, 0}));
}

TEST(MaxPool2d, OverlappingWindowsSumTheirGradients) {
  // 3x3 stride 1 over a 3x4 plane: both windows choose the 9, which receives the sum.
  MaxPool2d pool(3, 1);
  Tensor x = Tensor::from_vector({0, 1, 2, 0,  //
                                  1, 9, 3, 1,  //
                                  0, 2, 1, 0},
                                 Shape{1, 1, 3, 4});
  pool.forward(x, RunState{});
  Tensor dx = pool.backward(Tensor::from_vector({1.5f, 2.5f}, Shape{1, 1, 1, 2}), {});
  std::vector<float> expected(12, 0.0f);
  expected[5] = 4.0f;
  EXPECT_EQ(dx.to_vector(), expected);
}

TEST(MaxPool2d, NaNPropagatesLikePyTorch) {
  MaxPool2d pool(2);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::from_vector({1, nan, 3, 2}, Shape{1, 1, 2, 2});
  Tensor y = pool.forward(x, RunState{});
  EXPECT_TRUE(std::isnan(y.to_vector()[0]));
  Tensor dx = pool.backward(Tensor::from_vector({1.0f}, Shape{1, 1, 1, 1}), {});
  EXPECT_EQ(dx.to_vector(), (std::vector<float>{0, 1, 0, 0}));
}

TEST(AvgPool2d, ForwardMatchesNaiveLoopsCountingPadding) {
  for (const PoolCase& pc : kCases) {
    AvgPool2d pool(pc.kernel, pc.stride, pc.padding);
    Tensor x = random_tensor(pc.input, 4);
    Tensor y = pool.forward(x, RunState{});
    const int s = pc.stride == -1 ? pc.kernel : pc.stride;
    EXPECT_EQ(y.shape(), pool.output_shape(pc.input));
    expect_close(y.to_vector(), naive_pool(x, pc.kernel, s, pc.padding, false), 1e-6, 1e-7,
                 "avg pool " + pc.input.to_string());
  }
}

TEST(AvgPool2d, PaddedCornerDividesByFullWindow) {
  // PyTorch: AvgPool2d(3, stride=2, padding=1)(ones(1,1,4,4))[0,0,0,0] == 4/9.
  AvgPool2d pool(3, 2, 1);
  Tensor y = pool.forward(Tensor::full(Shape{1, 1, 4, 4}, 1.0f), RunState{});
  EXPECT_NEAR(y.to_vector()[0], 4.0f / 9.0f, 1e-7);
  // [0, 1]: rows -1..1 x cols 1..3 hold 2 x 3 real elements; [1, 1] lies fully inside.
  EXPECT_NEAR(y.to_vector()[1], 6.0f / 9.0f, 1e-7);
  EXPECT_NEAR(y.to_vector()[3], 1.0f, 1e-7);
}

TEST(AvgPool2d, GradientsMatchFiniteDifferences) {
  for (const PoolCase& pc : kCases) {
    AvgPool2d pool(pc.kernel, pc.stride, pc.padding);
    check_gradients(pool, random_tensor(pc.input, 5), 6);
  }
}

TEST(GlobalAvgPool2d, ForwardIsPlaneMean) {
  GlobalAvgPool2d pool;
  Tensor x = random_tensor(Shape{3, 4, 5, 7}, 7);
  Tensor y = pool.forward(x, RunState{});
  ASSERT_EQ(y.shape(), (Shape{3, 4, 1, 1}));
  const std::vector<float> v = x.to_vector();
  std::vector<float> expected;
  for (int plane = 0; plane < 12; ++plane) {
    double sum = 0.0;
    for (int i = 0; i < 35; ++i) sum += v[plane * 35 + i];
    expected.push_back(static_cast<float>(sum / 35.0));
  }
  expect_close(y.to_vector(), expected, 1e-6, 1e-7, "global average");
}

TEST(GlobalAvgPool2d, GradientsMatchFiniteDifferences) {
  GlobalAvgPool2d pool;
  check_gradients(pool, random_tensor(Shape{2, 3, 3, 5}, 8), 9);
  check_gradients(pool, random_tensor(Shape{1, 2, 1, 1}, 10), 11);
}

TEST(Pooling, NoInputGradientWhenNotNeeded) {
  BackwardState state;
  state.need_input_grad = false;
  Tensor x = random_tensor(Shape{1, 2, 4, 4}, 12);
  MaxPool2d max_pool(2);
  AvgPool2d avg_pool(2);
  GlobalAvgPool2d global_pool;
  for (Module* m : std::vector<Module*>{&max_pool, &avg_pool, &global_pool}) {
    Tensor y = m->forward(x, RunState{});
    EXPECT_FALSE(m->backward(Tensor::zeros(y.shape()), state).defined()) << m->type_name();
  }
}

TEST(Pooling, OutputShapesMatchPyTorch) {
  // torchvision ResNet stem: MaxPool2d(3, 2, 1) maps 112x112 to 56x56; AlexNet's
  // MaxPool2d(3, 2) maps 55 to 27; VGG's MaxPool2d(2, 2) maps 224 to 112.
  EXPECT_EQ(MaxPool2d(3, 2, 1).output_shape(Shape{8, 64, 112, 112}), (Shape{8, 64, 56, 56}));
  EXPECT_EQ(MaxPool2d(3, 2).output_shape(Shape{1, 64, 55, 55}), (Shape{1, 64, 27, 27}));
  EXPECT_EQ(MaxPool2d(2, 2).output_shape(Shape{1, 3, 224, 224}), (Shape{1, 3, 112, 112}));
  EXPECT_EQ(AvgPool2d(2).output_shape(Shape{2, 3, 7, 6}), (Shape{2, 3, 3, 3}));
  EXPECT_EQ(GlobalAvgPool2d().output_shape(Shape{4, 512, 7, 7}), (Shape{4, 512, 1, 1}));
}

TEST(Pooling, FlopsAndSavedBytes) {
  const Shape in{2, 3, 8, 8};
  EXPECT_EQ(MaxPool2d(2).forward_flops(in), 2 * 3 * 4 * 4 * 4);
  // One byte of argmax per output.
  EXPECT_EQ(MaxPool2d(2).saved_bytes(in), static_cast<std::size_t>(2 * 3 * 4 * 4));
  EXPECT_EQ(AvgPool2d(2).saved_bytes(in), 0u);
  EXPECT_EQ(GlobalAvgPool2d().forward_flops(in), in.numel());
}

TEST(Pooling, MaxPoolWindowsBeyondAByteOfArgmaxAreRefusedNamingTheFix) {
  EXPECT_NO_THROW(MaxPool2d(16));
  try {
    MaxPool2d too_large(17);
    FAIL() << "a 17x17 window was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("kernel_size <= 16"), std::string::npos) << e.what();
  }
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no InvalidArgument thrown";
}

void expect_mentions(const std::string& message, const std::vector<std::string>& parts) {
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

TEST(Pooling, BadArgumentsThrowNamingLayerAndShapes) {
  expect_mentions(message_of([] { MaxPool2d(3, 0); }), {"MaxPool2d", "stride"});
  expect_mentions(message_of([] { AvgPool2d(3, -2); }), {"AvgPool2d", "stride"});
  expect_mentions(message_of([] { MaxPool2d(0); }), {"MaxPool2d", "kernel_size"});
  expect_mentions(message_of([] { MaxPool2d(3, 1, 2); }), {"MaxPool2d", "padding"});
  MaxPool2d max_pool(5, 1, 1);
  expect_mentions(message_of([&] {
                    max_pool.forward(Tensor::zeros(Shape{1, 2, 2, 8}), {});
                  }),
                  {"MaxPool2d", "[1, 2, 2, 8]", "bigger"});
  AvgPool2d avg_pool(2);
  expect_mentions(message_of([&] {
                    avg_pool.forward(Tensor::zeros(Shape{2, 8, 8}), {});
                  }),
                  {"AvgPool2d", "[2, 8, 8]"});
  expect_mentions(message_of([&] {
                    avg_pool.output_shape(Shape{1, 1, 1, 4});
                  }),
                  {"AvgPool2d", "[1, 1, 1, 4]"});
  GlobalAvgPool2d global_pool;
  expect_mentions(message_of([&] {
                    global_pool.forward(Tensor::zeros(Shape{4, 3}), {});
                  }),
                  {"GlobalAvgPool2d", "[4, 3]"});
  expect_mentions(message_of([&] {
                    max_pool.backward(Tensor::zeros(Shape{1, 1, 1, 1}), {});
                  }),
                  {"MaxPool2d", "forward"});
  max_pool.forward(Tensor::zeros(Shape{1, 1, 6, 6}), {});
  expect_mentions(message_of([&] {
                    max_pool.backward(Tensor::zeros(Shape{1, 1, 5, 5}), {});
                  }),
                  {"MaxPool2d", "[1, 1, 5, 5]", "[1, 1, 4, 4]"});
}

}  // namespace
}  // namespace mb
