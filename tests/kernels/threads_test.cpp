// The CPU kernels give the same bits for 1, 2 and 3 threads (kernels/threads.h: every loop
// is cut by the problem's size, never by the thread count), op by op and for whole training
// steps; the blocked GEMM behind it is checked against a double-precision triple loop within
// the Higham bound gamma_k * sum |a||b| (an independent truth for the block offsets).
#include "kernels/threads.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "engine/trainer.h"
#include "kernels/accumulate_grads.h"
#include "kernels/conv.h"
#include "kernels/cpu/gemm.h"
#include "kernels/multi_tensor.h"
#include "models/zoo.h"
#include "runtime/error.h"
#include "tests/kernels/conv_test_util.h"
#include "tests/mbp/mbp_test_util.h"

namespace mb {
namespace {

using testing::random_values;

// Runs `compute` (which returns its outputs) at each thread count; all must agree bit for
// bit with the single-threaded run.
void expect_same_bits_for_any_thread_count(const std::string& what,
                                           const std::function<std::vector<float>()>& compute) {
  const int saved = cpu_threads();
  set_cpu_threads(1);
  const std::vector<float> reference = compute();
  for (int threads : {2, 3}) {
    set_cpu_threads(threads);
    const std::vector<float> result = compute();
    ASSERT_EQ(result.size(), reference.size()) << what;
    std::size_t differing = 0;
    for (std::size_t i = 0; i < result.size(); ++i) {
      // Bitwise: NaN never appears here, and -0 vs 0 would count as a difference.
      differing += std::memcmp(&result[i], &reference[i], sizeof(float)) != 0;
    }
    EXPECT_EQ(differing, 0u) << what << ": " << differing << " of " << result.size()
                             << " values differ between 1 and " << threads << " threads";
  }
  set_cpu_threads(saved);
}

TEST(CpuThreads, SetAndQueryAndRefuseNonsense) {
  EXPECT_GE(available_cpu_cores(), 1);
  const int saved = cpu_threads();
  set_cpu_threads(3);
  EXPECT_EQ(cpu_threads(), 3);
  EXPECT_THROW(set_cpu_threads(0), InvalidArgument);
  EXPECT_THROW(set_cpu_threads(100000), InvalidArgument);
  set_cpu_threads(saved);
}

struct ConvCase {
  const char* name;
  ConvGeometry g;
};

TEST(CpuThreads, ConvolutionIsThreadCountInvariant) {
  const auto geometry = testing::conv_geometry;
  const std::vector<ConvCase> cases = {
      {"3x3 pad 1, batch 33", geometry(33, 8, 12, 16, 3, 1, 1, 1, 1)},
      {"5x5 stride 2, batch 7", geometry(7, 3, 17, 6, 5, 2, 2, 1, 1)},
      {"pointwise, batch 20", geometry(20, 16, 9, 24, 1, 1, 0, 1, 1)},
      {"groups 2 dilation 2, batch 9", geometry(9, 8, 14, 8, 3, 1, 2, 2, 2)},
      {"depthwise stride 2, batch 12", geometry(12, 16, 10, 16, 3, 2, 1, 1, 16)},
      {"one sample", geometry(1, 32, 16, 32, 3, 1, 1, 1, 1)},
  };
  const Stream cpu = Stream::compute(Device::cpu());
  for (const ConvCase& c : cases) {
    const ConvGeometry& g = c.g;
    const std::size_t x_size = static_cast<std::size_t>(g.batch * g.in_channels * g.in_h * g.in_w);
    const std::size_t w_size = static_cast<std::size_t>(
        g.out_channels * (g.in_channels / g.groups) * g.kernel_h * g.kernel_w);
    const std::size_t y_size =
        static_cast<std::size_t>(g.batch * g.out_channels * g.out_h() * g.out_w());
    const std::vector<float> x = random_values(x_size, 1), w = random_values(w_size, 2),
                             dy = random_values(y_size, 3);
    for (GradientMode mode : {GradientMode::Overwrite, GradientMode::Accumulate}) {
      const std::string name =
          std::string(c.name) + (mode == GradientMode::Overwrite ? " overwrite" : " accumulate");
      expect_same_bits_for_any_thread_count(name + " forward", [&] {
        std::vector<float> y = random_values(y_size, 4);
        conv2d_forward(cpu, g, x.data(), w.data(), y.data(), mode);
        return y;
      });
      expect_same_bits_for_any_thread_count(name + " backward data", [&] {
        std::vector<float> dx = random_values(x_size, 5);
        conv2d_backward_data(cpu, g, w.data(), dy.data(), dx.data(), mode);
        return dx;
      });
      expect_same_bits_for_any_thread_count(name + " backward filter", [&] {
        std::vector<float> dw = random_values(w_size, 6);
        conv2d_backward_filter(cpu, g, x.data(), dy.data(), dw.data(), mode);
        return dw;
      });
    }
  }
}

// Large enough to take the blocked path, cut along n (n >= m) or along m, every transpose.
TEST(CpuThreads, BlockedGemmMatchesDoubleLoopsAndIsThreadCountInvariant) {
  struct Size {
    std::int64_t m, n, k;
  };
  for (const Size s : {Size{300, 700, 33}, Size{900, 280, 41}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        SCOPED_TRACE(std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k) +
                     (ta ? " A^T" : "") + (tb ? " B^T" : ""));
        const std::vector<float> a = random_values(static_cast<std::size_t>(s.m * s.k), 7);
        const std::vector<float> b = random_values(static_cast<std::size_t>(s.k * s.n), 8);
        const std::int64_t lda = ta ? s.m : s.k, ldb = tb ? s.k : s.n;
        auto A = [&](std::int64_t i, std::int64_t p) {
          return ta ? a[p * s.m + i] : a[i * s.k + p];
        };
        auto B = [&](std::int64_t p, std::int64_t j) {
          return tb ? b[j * s.k + p] : b[p * s.n + j];
        };
        std::vector<float> c(static_cast<std::size_t>(s.m * s.n), 0.5f);
        cpu::gemm(Stream(), ta, tb, s.m, s.n, s.k, a.data(), lda, b.data(), ldb, c.data(), s.n,
                  GradientMode::Accumulate);
        const double u = std::numeric_limits<float>::epsilon() / 2;
        const double gamma = (s.k + 1) * u / (1 - (s.k + 1) * u);
        std::int64_t bad = 0;
        for (std::int64_t i = 0; i < s.m; ++i) {
          for (std::int64_t j = 0; j < s.n; ++j) {
            double exact = 0.5, magnitude = 0.5;
            for (std::int64_t p = 0; p < s.k; ++p) {
              exact += static_cast<double>(A(i, p)) * B(p, j);
              magnitude += std::abs(static_cast<double>(A(i, p)) * B(p, j));
            }
            bad += std::abs(c[i * s.n + j] - exact) > gamma * magnitude + 1e-30;
          }
        }
        EXPECT_EQ(bad, 0) << "elements outside the round-off bound";
        expect_same_bits_for_any_thread_count("gemm", [&] {
          std::vector<float> out(static_cast<std::size_t>(s.m * s.n), 0.0f);
          cpu::gemm(Stream(), ta, tb, s.m, s.n, s.k, a.data(), lda, b.data(), ldb, out.data(), s.n,
                    GradientMode::Overwrite);
          return out;
        });
      }
    }
  }
}

TEST(CpuThreads, SumOfSquaresIsThreadCountInvariantAndAccurate) {
  const std::vector<float> data = random_values(3'000'001, 9);
  double exact = 0.0;
  for (const float v : data) exact += static_cast<double>(v) * v;
  const ConstBufferSlot slot{data.data(), static_cast<std::int64_t>(data.size())};
  const Stream cpu = Stream::compute(Device::cpu());
  expect_same_bits_for_any_thread_count("sum_of_squares", [&] {
    const double total = sum_of_squares(cpu, &slot, 1);
    EXPECT_NEAR(total, exact, 1e-9 * exact);
    return std::vector<float>{static_cast<float>(total),
                              static_cast<float>(total - static_cast<float>(total))};
  });
}

// Whole training steps: micro-batches, BatchNorm, pooling, the loss, clipping and AdamW or
// SGD momentum, two steps each; every parameter the same bits for any thread count.
TEST(CpuThreads, TrainingStepsAreThreadCountInvariant) {
  struct Run {
    const char* name;
    std::function<std::shared_ptr<Module>()> model;
    OptimizerKind optimizer;
    std::int64_t batch;
  };
  const std::vector<Run> runs = {
      {"small_cnn + BatchNorm, SGD momentum",
       [] { return testing::small_cnn(testing::Extra::BatchNorm); }, OptimizerKind::Sgd, 40},
      {"lenet5, AdamW", [] { return build_model("lenet5"); }, OptimizerKind::AdamW, 48},
  };
  for (const Run& run : runs) {
    expect_same_bits_for_any_thread_count(run.name, [&] {
      auto model = run.model();
      TrainerOptions options;
      options.micro_batch = 16;
      options.optimizer.kind = run.optimizer;
      options.clip_norm = 1.0;
      Trainer trainer(model, options);
      const Shape input =
          run.optimizer == OptimizerKind::AdamW ? Shape{run.batch, 1, 28, 28} : Shape{};
      for (int step = 0; step < 2; ++step) {
        if (input.ndim() == 0) {
          testing::Batch batch = testing::make_batch(run.batch, 100 + step);
          trainer.step(batch.images, batch.labels, 0.05f);
        } else {
          const std::vector<float> pixels =
              random_values(static_cast<std::size_t>(input.numel()), 200 + step);
          std::vector<float> labels_f = random_values(static_cast<std::size_t>(run.batch), 300);
          std::vector<std::int32_t> labels(labels_f.size());
          for (std::size_t i = 0; i < labels.size(); ++i) {
            labels[i] = static_cast<std::int32_t>(std::abs(labels_f[i]) * 9.99f);
          }
          trainer.step(Tensor::from_vector(pixels, input),
                       Tensor::from_vector_int(labels, Shape{run.batch}), 0.01f);
        }
      }
      std::vector<float> all;
      for (const auto& values : testing::parameter_values(*model)) {
        all.insert(all.end(), values.begin(), values.end());
      }
      return all;
    });
  }
}

}  // namespace
}  // namespace mb
