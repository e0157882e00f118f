// Softmax cross-entropy on CUDA beyond one pass of its grid (label gpu; skips without a
// device), against the CPU twin: loss, loss sum, valid and correct counts, and the gradient.
//
// The kernels (kernels/cuda/softmax_cross_entropy.cu) launch at most 4096 blocks of 256
// threads, one partial loss per block: classification gives a warp to a row, so more than
// 4096 * 8 = 32,768 rows make warps loop over rows; segmentation gives a thread to a pixel,
// so more than 4096 * 256 = 1,048,576 pixels make threads loop. Cases: 40,000 and 65,537 rows,
// 51,200 pixels (more than 32k, one pass) and 1,920,000 pixels (two passes), with ignored
// labels and label smoothing, mean and sum reductions, labels on the host and on the device.
//
// Tolerances: each element's loss and gradient is a few float operations (exp, log, one
// division) that the backends round differently (CUDA's expf is within 2 ulp); the loss is
// summed in double on both. So the loss agrees to 1e-5 relative and every gradient element
// to 1e-4 relative plus 1e-6 of the gradient's scale (seed / valid elements for a mean,
// seed for a sum); the counts exactly. A row or pixel skipped or visited twice by the loop
// moves the loss by about 1 / rows and leaves gradients at 0 or doubled.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "layers/softmax_cross_entropy.h"
#include "tests/layers/gradcheck.h"
#include "tests/test_util.h"

namespace mb {
namespace {

const Device kGpu = Device::cuda(0);

struct Case {
  Shape logits, labels;
  const char* name;
};

const Case kCases[] = {
    {Shape{40000, 10}, Shape{40000}, "40000 rows x 10 classes"},
    {Shape{65537, 37}, Shape{65537}, "65537 rows x 37 classes"},
    {Shape{2, 5, 160, 160}, Shape{2, 160, 160}, "51200 pixels x 5 classes"},
    {Shape{3, 3, 800, 800}, Shape{3, 800, 800}, "1920000 pixels x 3 classes"},
};

// Labels (i * 31) mod C, every 7th one ignored (-100).
Tensor labels_for(const Case& c) {
  const std::int64_t classes = c.logits[1];
  std::vector<std::int32_t> values(static_cast<std::size_t>(c.labels.numel()));
  for (std::size_t i = 0; i < values.size(); ++i) {
    values[i] = i % 7 == 3 ? -100 : static_cast<std::int32_t>((i * 31) % classes);
  }
  return Tensor::from_vector_int(values, c.labels);
}

TEST(SoftmaxLargeGpu, ManyRowsAndPixelsMatchTheCpu) {
  MB_SKIP_WITHOUT_CUDA();
  std::uint64_t seed = 30;
  for (const Case& c : kCases) {
    const Tensor logits = testing::random_tensor(c.logits, ++seed, -5.0f, 5.0f);
    const Tensor labels = labels_for(c);
    const Tensor gpu_logits = logits.to(kGpu);
    const Tensor gpu_labels = labels.to(kGpu);
    for (const Reduction reduction : {Reduction::Mean, Reduction::Sum}) {
      for (const float smoothing : {0.0f, 0.1f}) {
        const std::string what = std::string(c.name) +
                                 (reduction == Reduction::Mean ? ", mean" : ", sum") +
                                 (smoothing > 0.0f ? ", smoothing 0.1" : "");
        SCOPED_TRACE(what);
        LossOptions options;
        options.reduction = reduction;
        options.label_smoothing = smoothing;
        const SoftmaxCrossEntropy loss(options);
        const float seed_scale = 0.25f;
        const LossResult expected = loss.forward_backward(logits, labels, seed_scale);
        ASSERT_GT(expected.valid_count, 0);
        const double grad_scale = reduction == Reduction::Mean
                                      ? seed_scale / static_cast<double>(expected.valid_count)
                                      : seed_scale;
        for (const bool labels_on_gpu : {false, true}) {
          SCOPED_TRACE(labels_on_gpu ? "labels on the GPU" : "labels on the host");
          const LossResult r =
              loss.forward_backward(gpu_logits, labels_on_gpu ? gpu_labels : labels, seed_scale);
          EXPECT_EQ(r.valid_count, expected.valid_count);
          EXPECT_EQ(r.correct, expected.correct);
          EXPECT_NEAR(r.loss_sum, expected.loss_sum, 1e-5 * std::fabs(expected.loss_sum));
          EXPECT_NEAR(r.loss, expected.loss, 1e-5 * std::fabs(expected.loss));
          ASSERT_TRUE(r.grad_logits.defined());
          EXPECT_EQ(r.grad_logits.device(), kGpu);
          ASSERT_EQ(r.grad_logits.shape(), c.logits);
          testing::expect_close(r.grad_logits.to_vector(), expected.grad_logits.to_vector(), 1e-4,
                                1e-6 * grad_scale, what + " gradient");
        }
        const LossResult forward_only = loss.forward(gpu_logits, gpu_labels);
        EXPECT_FALSE(forward_only.grad_logits.defined());
        EXPECT_EQ(forward_only.correct, expected.correct);
        EXPECT_NEAR(forward_only.loss, expected.loss, 1e-5 * std::fabs(expected.loss));
      }
    }
  }
}

}  // namespace
}  // namespace mb
