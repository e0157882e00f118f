// The CUDA engine kernels (kernels/cuda/accumulate_grads.h, optimizers.h) against their CPU
// twins (label gpu): accumulation over micro-batches, sums of squares, SGD / AdamW / LARS
// over 3 steps. The public ops (kernels/accumulate_grads.h, optimizers.h) run on the GPU's
// compute stream, so they dispatch to the CUDA twins; the CPU twins on Stream() are the
// truth. Slots include size 0, sizes not a multiple of 4, a multi-chunk tensor and pointers
// offset by one float (the unaligned scalar path). Skips without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/accumulate_grads.h"
#include "kernels/cpu/accumulate_grads.h"
#include "kernels/cpu/optimizers.h"
#include "kernels/optimizers.h"
#include "runtime/error.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace mb {
namespace {

// Sizes and whether the slot's device pointer is offset by one float (misaligned).
const std::vector<std::int64_t> kSizes = {0, 1, 3, 5, 17, 1000, 1027, 3 * 8192 + 5, 70001};
bool misaligned(std::size_t slot) {
  return slot % 3 == 1;
}

Stream gpu() {
  return Stream::compute(Device::cuda(0));
}

// One device copy of a host buffer, possibly at a misaligned address.
class DeviceArray {
 public:
  DeviceArray(const std::vector<float>& values, bool offset) : offset_(offset ? 1 : 0) {
    std::vector<float> padded(values.size() + 1, 0.0f);
    std::copy(values.begin(), values.end(), padded.begin() + offset_);
    TensorOptions options;
    options.device = Device::cuda(0);
    tensor_ = Tensor::from_vector(padded, {static_cast<std::int64_t>(padded.size())}, options);
  }
  float* data() const { return tensor_.data<float>() + offset_; }
  std::vector<float> download() const {
    gpu().synchronize();
    std::vector<float> all = tensor_.to_vector();
    return std::vector<float>(all.begin() + offset_, all.end() - (1 - offset_));
  }

 private:
  int offset_;
  Tensor tensor_;
};

std::vector<float> random_vector(std::int64_t size, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(static_cast<std::size_t>(size));
  for (float& v : values) v = dist(rng);
  return values;
}

void expect_close(const std::vector<float>& actual, const std::vector<float>& expected,
                  double relative, const char* what, std::size_t slot) {
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], relative * (1.0 + std::abs(expected[i])))
        << what << ": slot " << slot << " element " << i;
  }
}

TEST(EngineKernelsGpu, AccumulateOverMicroBatchesMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  std::mt19937 rng(1);
  std::vector<std::vector<float>> host_accum;
  std::vector<DeviceArray> device_accum;
  for (std::size_t s = 0; s < kSizes.size(); ++s) {
    host_accum.emplace_back(kSizes[s], 0.0f);
    device_accum.emplace_back(std::vector<float>(kSizes[s], std::nanf("")), misaligned(s));
  }
  const std::vector<int> split = {6, 6, 1};  // B = 13, uneven last micro-batch
  for (std::size_t k = 0; k < split.size(); ++k) {
    const float factor = split[k] / 13.0f;
    const GradientMode mode = k == 0 ? GradientMode::Overwrite : GradientMode::Accumulate;
    std::vector<std::vector<float>> grads;
    std::vector<DeviceArray> device_grads;
    std::vector<GradSlot> host_slots, device_slots;
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      grads.push_back(random_vector(kSizes[s], rng));
      device_grads.emplace_back(grads.back(), misaligned(s + k));
    }
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      host_slots.push_back({grads[s].data(), host_accum[s].data(), kSizes[s]});
      device_slots.push_back({device_grads[s].data(), device_accum[s].data(), kSizes[s]});
    }
    const int count = static_cast<int>(kSizes.size());
    cpu::accumulate_grads(Stream(), host_slots.data(), count, factor, mode);
    accumulate_grads(gpu(), device_slots.data(), count, factor, mode);
    gpu().synchronize();  // grads die at the end of this scope
  }
  for (std::size_t s = 0; s < kSizes.size(); ++s)
    expect_close(device_accum[s].download(), host_accum[s], 1e-6, "accum", s);
}

TEST(EngineKernelsGpu, SumOfSquaresMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  std::mt19937 rng(2);
  std::vector<std::vector<float>> host;
  std::vector<DeviceArray> device;
  for (std::size_t s = 0; s < kSizes.size(); ++s) {
    host.push_back(random_vector(kSizes[s], rng));
    device.emplace_back(host.back(), misaligned(s));
  }
  std::vector<ConstBufferSlot> host_const, device_const;
  for (std::size_t s = 0; s < kSizes.size(); ++s) {
    host_const.push_back({host[s].data(), kSizes[s]});
    device_const.push_back({device[s].data(), kSizes[s]});
  }
  const int count = static_cast<int>(kSizes.size());

  const double expected = cpu::sum_of_squares(Stream(), host_const.data(), count);
  const double actual = sum_of_squares(gpu(), device_const.data(), count);
  EXPECT_NEAR(actual, expected, 1e-6 * expected);
  // Fixed reduction order: the same bits every time.
  EXPECT_EQ(sum_of_squares(gpu(), device_const.data(), count), actual);
  EXPECT_EQ(sum_of_squares(gpu(), nullptr, 0), 0.0);
}

TEST(EngineKernelsGpu, NanAndInfAreReported) {
  MB_SKIP_WITHOUT_CUDA();
  std::vector<float> values(1000, 1.0f);
  values[777] = std::numeric_limits<float>::infinity();
  DeviceArray with_inf(values, false);
  ConstBufferSlot slot{with_inf.data(), 1000};
  EXPECT_TRUE(std::isinf(sum_of_squares(gpu(), &slot, 1)));
  values[3] = std::numeric_limits<float>::quiet_NaN();
  DeviceArray with_nan(values, true);
  slot.data = with_nan.data();
  EXPECT_TRUE(std::isnan(sum_of_squares(gpu(), &slot, 1)));
}

// Host and device copies of a parameter table with optimizer state.
struct ParamProblem {
  std::vector<std::vector<float>> param, state0, state1;
  std::vector<std::vector<std::vector<float>>> grads;  // [step][slot]
  std::vector<DeviceArray> d_param, d_state0, d_state1;
  std::vector<std::vector<DeviceArray>> d_grads;

  ParamProblem(unsigned seed, int steps) {
    std::mt19937 rng(seed);
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      param.push_back(random_vector(kSizes[s], rng));
      state0.emplace_back(kSizes[s], 0.0f);
      state1.emplace_back(kSizes[s], 0.0f);
      d_param.emplace_back(param[s], misaligned(s));
      d_state0.emplace_back(state0[s], misaligned(s));
      d_state1.emplace_back(state1[s], misaligned(s));
    }
    for (int step = 0; step < steps; ++step) {
      grads.emplace_back();
      d_grads.emplace_back();
      for (std::size_t s = 0; s < kSizes.size(); ++s) {
        grads.back().push_back(random_vector(kSizes[s], rng));
        d_grads.back().emplace_back(grads.back().back(), misaligned(s));
      }
    }
  }
  static float decay(std::size_t s) { return s % 2 == 0 ? 0.05f : 0.0f; }
  std::vector<ParamSlot> host_slots(int step) {
    std::vector<ParamSlot> table;
    for (std::size_t s = 0; s < kSizes.size(); ++s)
      table.push_back({param[s].data(), grads[step][s].data(), state0[s].data(), state1[s].data(),
                       kSizes[s], decay(s), s % 2 == 0});
    return table;
  }
  std::vector<ParamSlot> device_slots(int step) {
    std::vector<ParamSlot> table;
    for (std::size_t s = 0; s < kSizes.size(); ++s)
      table.push_back({d_param[s].data(), d_grads[step][s].data(), d_state0[s].data(),
                       d_state1[s].data(), kSizes[s], decay(s), s % 2 == 0});
    return table;
  }
  void expect_match(double relative) {
    for (std::size_t s = 0; s < kSizes.size(); ++s) {
      expect_close(d_param[s].download(), param[s], relative, "param", s);
      expect_close(d_state0[s].download(), state0[s], relative, "state0", s);
      expect_close(d_state1[s].download(), state1[s], relative, "state1", s);
    }
  }
};

constexpr int kSteps = 3;
const int kCount = static_cast<int>(kSizes.size());

TEST(EngineKernelsGpu, SgdMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  for (bool nesterov : {false, true}) {
    ParamProblem problem(3, kSteps);
    SgdOptions options{0.05f};
    options.momentum = 0.9f;
    options.dampening = nesterov ? 0.0f : 0.1f;
    options.nesterov = nesterov;
    options.grad_scale = 0.5f;
    for (int step = 0; step < kSteps; ++step) {
      options.first_step = step == 0;
      cpu::sgd_update(Stream(), problem.host_slots(step).data(), kCount, options);
      sgd_update(gpu(), problem.device_slots(step).data(), kCount, options);
    }
    problem.expect_match(1e-5);
  }
}

TEST(EngineKernelsGpu, AdamWMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  ParamProblem problem(4, kSteps);
  AdamWOptions options{1e-2f};
  options.grad_scale = 2.0f;
  for (int step = 0; step < kSteps; ++step) {
    options.step = step + 1;
    cpu::adamw_update(Stream(), problem.host_slots(step).data(), kCount, options);
    adamw_update(gpu(), problem.device_slots(step).data(), kCount, options);
  }
  problem.expect_match(1e-5);
}

TEST(EngineKernelsGpu, LarsMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  for (float momentum : {0.9f, 0.0f}) {
    ParamProblem problem(5, kSteps);
    LarsOptions options{1.5f};
    options.momentum = momentum;
    options.grad_scale = 0.25f;
    for (int step = 0; step < kSteps; ++step) {
      cpu::lars_update(Stream(), problem.host_slots(step).data(), kCount, options);
      lars_update(gpu(), problem.device_slots(step).data(), kCount, options);
    }
    problem.expect_match(1e-5);
  }
}

TEST(EngineKernelsGpu, LaunchersRejectBadArguments) {
  MB_SKIP_WITHOUT_CUDA();
  GradSlot null_grad{nullptr, nullptr, 4};
  EXPECT_THROW(accumulate_grads(gpu(), &null_grad, 1, 1.0f, GradientMode::Overwrite),
               InvalidArgument);
  EXPECT_THROW(accumulate_grads(gpu(), nullptr, -1, 1.0f, GradientMode::Overwrite),
               InvalidArgument);
  ConstBufferSlot null_data{nullptr, 4};
  EXPECT_THROW(sum_of_squares(gpu(), &null_data, 1), InvalidArgument);
  ParamSlot no_state{nullptr, nullptr, nullptr, nullptr, 0, 0.0f, false};
  EXPECT_THROW(sgd_update(gpu(), &no_state, 1, SgdOptions{std::nanf("")}), InvalidArgument);
  AdamWOptions step_zero{0.1f};
  step_zero.step = 0;
  EXPECT_THROW(adamw_update(gpu(), &no_state, 1, step_zero), InvalidArgument);
  std::vector<float> one(1, 1.0f);
  DeviceArray w(one, false), g(one, false);
  ParamSlot missing_buffer{w.data(), g.data(), nullptr, nullptr, 1, 0.0f, true};
  EXPECT_THROW(lars_update(gpu(), &missing_buffer, 1, LarsOptions{0.1f}), InvalidArgument);
}

}  // namespace
}  // namespace mb
