// Finite-difference gradient checking for Modules (CPU), shared by the layer tests.
//
// The scalar loss is a fixed random projection of the output, L = <r, y>, so dL/dy = r.
// Input and parameter gradients from backward() are compared with central differences
// computed in double from float forward passes.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "layers/module.h"
#include "runtime/tensor.h"

namespace mb::testing {

inline Tensor random_tensor(const Shape& shape, std::uint64_t seed, float low = -1.0f,
                            float high = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(low, high);
  std::vector<float> values(static_cast<std::size_t>(shape.numel()));
  for (float& v : values) v = dist(rng);
  return Tensor::from_vector(values, shape);
}

// random_tensor over an [N, C, H, W] shape, each value v of channel ch replaced by
// per_channel(v, ch): offsets and scales per channel, so channels have distinct statistics.
template <typename PerChannel>
Tensor channel_data(const Shape& shape, std::uint64_t seed, PerChannel per_channel) {
  Tensor x = random_tensor(shape, seed);
  float* d = x.data<float>();
  const std::int64_t c = shape[1], hw = shape[2] * shape[3];
  for (std::int64_t e = 0; e < x.numel(); ++e) d[e] = per_channel(d[e], (e / hw) % c);
  return x;
}

// Expects |a - b| <= atol + rtol * |b| elementwise; reports the first few mismatches.
// `allowed_fraction` of the elements may differ (central differences across a ReLU kink);
// the relative L2 error of the whole vector must stay below 5% even then.
inline void expect_close(const std::vector<float>& actual, const std::vector<float>& expected,
                         double rtol, double atol, const std::string& what,
                         double allowed_fraction = 0.0) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int reported = 0;
  std::size_t mismatches = 0;
  const std::size_t allowed = static_cast<std::size_t>(allowed_fraction * actual.size());
  double diff_norm = 0.0, expected_norm = 0.0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    diff_norm += diff * diff;
    expected_norm += static_cast<double>(expected[i]) * expected[i];
    if (!(diff <= atol + rtol * std::fabs(expected[i]))) {
      ++mismatches;
      if (allowed == 0 && reported++ < 5) {
        ADD_FAILURE() << what << ": element " << i << " is " << actual[i] << ", expected "
                      << expected[i] << " (diff " << diff << ")";
      }
    }
  }
  EXPECT_LE(mismatches, allowed) << what << ": " << mismatches << " of " << actual.size()
                                 << " elements differ";
  if (allowed > 0) {
    EXPECT_LE(std::sqrt(diff_norm), 0.05 * std::sqrt(expected_norm) + atol)
        << what << ": relative L2 error too large";
  }
}

inline double projected_loss(Module& module, const Tensor& input, const std::vector<float>& r,
                             const RunState& state) {
  std::vector<float> y = module.forward(input, state).to_vector();
  module.clear_cache();
  double loss = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) loss += static_cast<double>(r[i]) * y[i];
  return loss;
}

struct GradCheckOptions {
  double eps = 1e-2;
  double rtol = 2e-2;
  double atol = 2e-3;
  bool check_input = true;
  bool check_parameters = true;
  RunState state{};
  // Fraction of elements allowed to miss (see expect_close); 0 for single smooth layers.
  double allowed_mismatch_fraction = 0.0;
};

// Checks module's input and parameter gradients at `input` by central differences.
inline void check_gradients(Module& module, const Tensor& input, std::uint64_t seed,
                            const GradCheckOptions& options = {}) {
  const Shape out_shape = module.output_shape(input.shape());
  Tensor r_tensor = random_tensor(out_shape, seed ^ 0x5EED);
  const std::vector<float> r = r_tensor.to_vector();

  module.forward(input, options.state);
  BackwardState backward_state;
  backward_state.mode = GradientMode::Overwrite;
  backward_state.need_input_grad = options.check_input;
  Tensor grad_input = module.backward(r_tensor, backward_state);

  if (options.check_input) {
    ASSERT_TRUE(grad_input.defined()) << module.type_name() << ": no input gradient";
    Tensor x = input.clone();
    float* xd = x.data<float>();
    std::vector<float> numeric(static_cast<std::size_t>(x.numel()));
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const float saved = xd[i];
      xd[i] = saved + static_cast<float>(options.eps);
      const double plus = projected_loss(module, x, r, options.state);
      xd[i] = saved - static_cast<float>(options.eps);
      const double minus = projected_loss(module, x, r, options.state);
      xd[i] = saved;
      numeric[i] = static_cast<float>((plus - minus) / (2.0 * options.eps));
    }
    expect_close(grad_input.to_vector(), numeric, options.rtol, options.atol,
                 module.type_name() + " input gradient", options.allowed_mismatch_fraction);
  }
  if (options.check_parameters) {
    for (auto& [name, p] : module.named_parameters()) {
      ASSERT_TRUE(p->grad.defined()) << module.type_name() << ": no gradient for " << name;
      const std::vector<float> analytic = p->grad.to_vector();
      float* pd = p->value.data<float>();
      std::vector<float> numeric(static_cast<std::size_t>(p->value.numel()));
      for (std::int64_t i = 0; i < p->value.numel(); ++i) {
        const float saved = pd[i];
        pd[i] = saved + static_cast<float>(options.eps);
        const double plus = projected_loss(module, input, r, options.state);
        pd[i] = saved - static_cast<float>(options.eps);
        const double minus = projected_loss(module, input, r, options.state);
        pd[i] = saved;
        numeric[i] = static_cast<float>((plus - minus) / (2.0 * options.eps));
      }
      expect_close(analytic, numeric, options.rtol, options.atol,
                   module.type_name() + " gradient of " + name, options.allowed_mismatch_fraction);
    }
  }
}

}  // namespace mb::testing
