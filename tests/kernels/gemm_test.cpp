// cpu::gemm against a naive triple loop, all four transpose combinations.
#include "kernels/cpu/gemm.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace mb::cpu {
namespace {

TEST(Gemm, MatchesNaiveLoopsForAllTransposes) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int m = 5, n = 7, k = 3;
  for (GradientMode mode : {GradientMode::Overwrite, GradientMode::Accumulate}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        std::vector<float> a(m * k), b(k * n), c(m * n, 1.0f), expected(m * n);
        for (float& v : a) v = dist(rng);
        for (float& v : b) v = dist(rng);
        auto A = [&](int i, int p) { return ta ? a[p * m + i] : a[i * k + p]; };
        auto B = [&](int p, int j) { return tb ? b[j * k + p] : b[p * n + j]; };
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < n; ++j) {
            double sum = 0;
            for (int p = 0; p < k; ++p) sum += A(i, p) * B(p, j);
            // C starts at 1: Accumulate keeps it, Overwrite does not.
            expected[i * n + j] = static_cast<float>(sum + (mode == GradientMode::Accumulate));
          }
        gemm(Stream(), ta, tb, m, n, k, a.data(), ta ? m : k, b.data(), tb ? k : n, c.data(), n,
             mode);
        for (int i = 0; i < m * n; ++i) EXPECT_NEAR(c[i], expected[i], 1e-5) << ta << tb << i;
      }
    }
  }
}

}  // namespace
}  // namespace mb::cpu
