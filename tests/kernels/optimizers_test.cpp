// cpu::sgd_update, adamw_update and lars_update against reference loops in double written
// here from the published update rules (PyTorch's SGD and AdamW documentation; LARS as in
// You, Gitman & Ginsburg 2017), over 3 steps and slot tables with odd sizes, plus
// hand-computed single-element values and argument checks.
#include "kernels/cpu/optimizers.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace mb::cpu {
namespace {

const std::vector<std::int64_t> kSizes = {0, 1, 3, 5, 17, 1000, 1027};
constexpr int kSteps = 3;

// Parameters, per-step gradients and optimizer state for a table of slots, with a double
// copy of everything for the reference loop.
struct Problem {
  std::vector<std::vector<float>> param, state0, state1;
  std::vector<std::vector<std::vector<float>>> grads;  // [step][slot][element]
  std::vector<std::vector<double>> ref_param, ref_state0, ref_state1;
  std::vector<float> weight_decay;
  std::vector<bool> trust;

  explicit Problem(unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      std::vector<float> values(kSizes[s]);
      for (float& v : values) v = dist(rng);
      param.push_back(values);
      ref_param.emplace_back(values.begin(), values.end());
      state0.emplace_back(kSizes[s], 0.0f);
      state1.emplace_back(kSizes[s], 0.0f);
      ref_state0.emplace_back(kSizes[s], 0.0);
      ref_state1.emplace_back(kSizes[s], 0.0);
      weight_decay.push_back(s % 2 == 0 ? 0.05f : 0.0f);  // odd slots act as biases
      trust.push_back(s % 2 == 0);
    }
    for (int step = 0; step < kSteps; ++step) {
      grads.emplace_back();
      for (std::int64_t size : kSizes) {
        std::vector<float> values(size);
        for (float& v : values) v = dist(rng);
        grads.back().push_back(values);
      }
    }
  }

  std::vector<ParamSlot> slots(int step, bool with_state0, bool with_state1) {
    std::vector<ParamSlot> table;
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      table.push_back({param[s].data(), grads[step][s].data(),
                       with_state0 ? state0[s].data() : nullptr,
                       with_state1 ? state1[s].data() : nullptr, kSizes[s], weight_decay[s],
                       static_cast<bool>(trust[s])});
    }
    return table;
  }

  void expect_matches_reference(double relative_tolerance) const {
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      for (std::int64_t i = 0; i < kSizes[s]; ++i) {
        ASSERT_NEAR(param[s][i], ref_param[s][i],
                    relative_tolerance * (1.0 + std::abs(ref_param[s][i])))
            << "slot " << s << " element " << i;
        ASSERT_NEAR(state0[s][i], ref_state0[s][i],
                    relative_tolerance * (1.0 + std::abs(ref_state0[s][i])))
            << "state0, slot " << s << " element " << i;
        ASSERT_NEAR(state1[s][i], ref_state1[s][i],
                    relative_tolerance * (1.0 + std::abs(ref_state1[s][i])))
            << "state1, slot " << s << " element " << i;
      }
    }
  }
};

void run_sgd_case(SgdOptions options) {
  Problem problem(21);
  const bool momentum = options.momentum != 0.0f;
  for (int step = 0; step < kSteps; ++step) {
    options.first_step = step == 0;
    std::vector<ParamSlot> table = problem.slots(step, momentum, false);
    sgd_update(Stream(), table.data(), static_cast<int>(table.size()), options);
    // Reference: torch.optim.SGD's documented loop, in double.
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      for (std::int64_t i = 0; i < kSizes[s]; ++i) {
        double& w = problem.ref_param[s][i];
        double& buf = problem.ref_state0[s][i];
        double g = static_cast<double>(options.grad_scale) * problem.grads[step][s][i] +
                   static_cast<double>(problem.weight_decay[s]) * w;
        if (momentum) {
          buf = step == 0 ? g
                          : static_cast<double>(options.momentum) * buf +
                                (1.0 - static_cast<double>(options.dampening)) * g;
          g = options.nesterov ? g + static_cast<double>(options.momentum) * buf : buf;
        }
        w -= static_cast<double>(options.lr) * g;
      }
    }
  }
  problem.expect_matches_reference(1e-5);
}

TEST(SgdUpdate, PlainSgdMatchesReference) {
  SgdOptions options{0.1f};
  run_sgd_case(options);
}

TEST(SgdUpdate, MomentumWithDampeningAndGradScaleMatchesReference) {
  SgdOptions options{0.05f};
  options.momentum = 0.9f;
  options.dampening = 0.1f;
  options.grad_scale = 0.5f;
  run_sgd_case(options);
}

TEST(SgdUpdate, NesterovMatchesReference) {
  SgdOptions options{0.05f};
  options.momentum = 0.9f;
  options.nesterov = true;
  run_sgd_case(options);
}

TEST(SgdUpdate, HandComputedTwoSteps) {
  // w = 1, grad = 0.5, lr = 0.1, momentum = 0.9, weight_decay = 0.01:
  // step 1: g = 0.5 + 0.01 = 0.51, buf = 0.51, w = 1 - 0.051 = 0.949
  // step 2: g = 0.5 + 0.00949 = 0.50949, buf = 0.459 + 0.50949 = 0.96849, w = 0.852151
  float w = 1.0f, grad = 0.5f, buf = 123.0f;  // garbage buffer: first_step must not read it
  ParamSlot slot{&w, &grad, &buf, nullptr, 1, 0.01f, false};
  SgdOptions options{0.1f};
  options.momentum = 0.9f;
  options.first_step = true;
  sgd_update(Stream(), &slot, 1, options);
  EXPECT_NEAR(w, 0.949f, 1e-6);
  EXPECT_NEAR(buf, 0.51f, 1e-6);
  options.first_step = false;
  sgd_update(Stream(), &slot, 1, options);
  EXPECT_NEAR(w, 0.852151f, 1e-6);
  EXPECT_NEAR(buf, 0.96849f, 1e-6);
}

TEST(SgdUpdate, NanGradientPropagates) {
  float w = 1.0f, grad = std::numeric_limits<float>::quiet_NaN();
  ParamSlot slot{&w, &grad, nullptr, nullptr, 1, 0.0f, false};
  sgd_update(Stream(), &slot, 1, SgdOptions{0.1f});
  EXPECT_TRUE(std::isnan(w));
}

TEST(AdamWUpdate, ThreeStepsMatchReference) {
  Problem problem(33);
  AdamWOptions options{1e-2f};
  options.grad_scale = 0.5f;
  for (int step = 0; step < kSteps; ++step) {
    options.step = step + 1;
    std::vector<ParamSlot> table = problem.slots(step, true, true);
    adamw_update(Stream(), table.data(), static_cast<int>(table.size()), options);
    // Reference: torch.optim.AdamW's documented algorithm, in double.
    const double b1 = options.beta1, b2 = options.beta2, lr = options.lr;
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      for (std::int64_t i = 0; i < kSizes[s]; ++i) {
        double& w = problem.ref_param[s][i];
        double& m = problem.ref_state0[s][i];
        double& v = problem.ref_state1[s][i];
        const double g = static_cast<double>(options.grad_scale) * problem.grads[step][s][i];
        w *= 1.0 - lr * static_cast<double>(problem.weight_decay[s]);
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        const double m_hat = m / (1.0 - std::pow(b1, step + 1));
        const double v_hat = v / (1.0 - std::pow(b2, step + 1));
        w -= lr * m_hat / (std::sqrt(v_hat) + static_cast<double>(options.eps));
      }
    }
  }
  problem.expect_matches_reference(1e-5);
}

TEST(AdamWUpdate, HandComputedFirstStep) {
  // Step 1 of Adam moves by lr * sign(g) (m_hat = g, sqrt(v_hat) = |g|), after the decay:
  // w = 1 * (1 - 0.1 * 0.01) - 0.1 = 0.899.
  float w = 1.0f, grad = 0.5f, m = 0.0f, v = 0.0f;
  ParamSlot slot{&w, &grad, &m, &v, 1, 0.01f, false};
  adamw_update(Stream(), &slot, 1, AdamWOptions{0.1f});
  EXPECT_NEAR(w, 0.899f, 1e-6);
  EXPECT_NEAR(m, 0.05f, 1e-7);
  // beta2 = 0.999f is 0.99900001 in float, so 1 - beta2 = 0.00099998713: v = 0.000249997.
  EXPECT_NEAR(v, 0.00025f, 1e-8);
}

void run_lars_case(LarsOptions options, bool zero_first_weights) {
  Problem problem(45);
  if (zero_first_weights) {
    // Slot 2 (trust ratio on) has ||w|| = 0: its local lr must fall back to 1.
    for (float& v : problem.param[2]) v = 0.0f;
    for (double& v : problem.ref_param[2]) v = 0.0;
  }
  const bool momentum = options.momentum != 0.0f;
  for (int step = 0; step < kSteps; ++step) {
    if (step == 1) {
      // A zero gradient for slot 4 (trust ratio on): local lr 1, only decay moves it.
      for (float& v : problem.grads[step][4]) v = 0.0f;
    }
    std::vector<ParamSlot> table = problem.slots(step, momentum, false);
    lars_update(Stream(), table.data(), static_cast<int>(table.size()), options);
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      const double wd = problem.weight_decay[s];
      const double scale = options.grad_scale;
      double local_lr = 1.0;
      if (problem.trust[s]) {
        double w2 = 0.0, g2 = 0.0;
        for (std::int64_t i = 0; i < kSizes[s]; ++i) {
          w2 += problem.ref_param[s][i] * problem.ref_param[s][i];
          const double g = scale * problem.grads[step][s][i];
          g2 += g * g;
        }
        const double w_norm = std::sqrt(w2), g_norm = std::sqrt(g2);
        if (w_norm > 0.0 && g_norm > 0.0) {
          local_lr = options.trust_coefficient * w_norm / (g_norm + wd * w_norm + options.eps);
        }
      }
      for (std::int64_t i = 0; i < kSizes[s]; ++i) {
        double& w = problem.ref_param[s][i];
        double& buf = problem.ref_state0[s][i];
        const double update = local_lr * (scale * problem.grads[step][s][i] + wd * w);
        buf = momentum ? static_cast<double>(options.momentum) * buf + update : update;
        w -= static_cast<double>(options.lr) * buf;
      }
      if (!momentum) {
        for (double& v : problem.ref_state0[s]) v = 0.0;  // state0 is not used then
      }
    }
  }
  problem.expect_matches_reference(1e-5);
}

TEST(LarsUpdate, MomentumMatchesReference) {
  LarsOptions options{2.0f};
  options.grad_scale = 0.5f;
  run_lars_case(options, true);
}

TEST(LarsUpdate, WithoutMomentumMatchesReference) {
  LarsOptions options{1.0f};
  options.momentum = 0.0f;
  options.trust_coefficient = 0.02f;
  run_lars_case(options, false);
}

TEST(LarsUpdate, HandComputedTrustRatio) {
  // ||w|| = ||(3, 4)|| = 5, ||g|| = ||(0.3, 0.4)|| = 0.5, no decay, eps 0:
  // local_lr = 0.001 * 5 / 0.5 = 0.01; buf = (0.003, 0.004); lr = 1: w = (2.997, 3.996).
  std::vector<float> w = {3.0f, 4.0f}, grad = {0.3f, 0.4f}, buf = {0.0f, 0.0f};
  ParamSlot slot{w.data(), grad.data(), buf.data(), nullptr, 2, 0.0f, true};
  LarsOptions options{1.0f};
  options.eps = 0.0f;
  lars_update(Stream(), &slot, 1, options);
  EXPECT_NEAR(w[0], 2.997f, 1e-6);
  EXPECT_NEAR(w[1], 3.996f, 1e-6);
  EXPECT_NEAR(buf[1], 0.004f, 1e-8);
  // Without the trust ratio the same slot is plain momentum SGD: w -= lr * g.
  slot.use_trust_ratio = false;
  buf = {0.0f, 0.0f};
  lars_update(Stream(), &slot, 1, options);
  EXPECT_NEAR(w[0], 2.697f, 1e-6);
  EXPECT_NEAR(w[1], 3.596f, 1e-6);
}

TEST(Optimizers, RejectBadArguments) {
  float w = 1.0f, grad = 1.0f, state = 0.0f;
  ParamSlot no_state{&w, &grad, nullptr, nullptr, 1, 0.0f, true};
  ParamSlot full{&w, &grad, &state, &state, 1, 0.0f, true};
  const float nan = std::numeric_limits<float>::quiet_NaN();

  EXPECT_THROW(sgd_update(Stream(), &full, 1, SgdOptions{nan}), InvalidArgument);
  EXPECT_THROW(sgd_update(Stream(), &full, 1, SgdOptions{-0.1f}), InvalidArgument);
  EXPECT_THROW(sgd_update(Stream(), &full, -1, SgdOptions{0.1f}), InvalidArgument);
  EXPECT_THROW(sgd_update(Stream(), nullptr, 2, SgdOptions{0.1f}), InvalidArgument);
  SgdOptions momentum{0.1f};
  momentum.momentum = 0.9f;
  EXPECT_THROW(sgd_update(Stream(), &no_state, 1, momentum), InvalidArgument);
  EXPECT_NO_THROW(sgd_update(Stream(), &no_state, 1, SgdOptions{0.1f}));  // no momentum: no state
  EXPECT_FLOAT_EQ(w, 0.9f);
  w = 1.0f;
  SgdOptions nesterov{0.1f};
  nesterov.nesterov = true;
  EXPECT_THROW(sgd_update(Stream(), &full, 1, nesterov), InvalidArgument);
  ParamSlot null_param{nullptr, &grad, &state, &state, 1, 0.0f, true};
  EXPECT_THROW(sgd_update(Stream(), &null_param, 1, SgdOptions{0.1f}), InvalidArgument);
  ParamSlot negative_decay{&w, &grad, &state, &state, 1, -0.1f, true};
  EXPECT_THROW(sgd_update(Stream(), &negative_decay, 1, SgdOptions{0.1f}), InvalidArgument);

  AdamWOptions step_zero{0.1f};
  step_zero.step = 0;
  EXPECT_THROW(adamw_update(Stream(), &full, 1, step_zero), InvalidArgument);
  EXPECT_THROW(adamw_update(Stream(), &no_state, 1, AdamWOptions{0.1f}), InvalidArgument);
  EXPECT_THROW(
      adamw_update(Stream(), &full, 1, AdamWOptions{std::numeric_limits<float>::infinity()}),
      InvalidArgument);
  AdamWOptions bad_beta{0.1f};
  bad_beta.beta2 = 1.0f;
  EXPECT_THROW(adamw_update(Stream(), &full, 1, bad_beta), InvalidArgument);

  EXPECT_THROW(lars_update(Stream(), &full, 1, LarsOptions{nan}), InvalidArgument);
  EXPECT_THROW(lars_update(Stream(), &no_state, 1, LarsOptions{0.1f}), InvalidArgument);
  LarsOptions zero_trust{0.1f};
  zero_trust.trust_coefficient = 0.0f;
  EXPECT_THROW(lars_update(Stream(), &full, 1, zero_trust), InvalidArgument);
  EXPECT_EQ(w, 1.0f);  // nothing above touched the parameter before throwing
}

}  // namespace
}  // namespace mb::cpu
