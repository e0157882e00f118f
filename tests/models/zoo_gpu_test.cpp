// One training step of every zoo model on CUDA against the CPU reference: the same model
// (same seed, the zoo's fused layers), the same small batch, two micro-batches and the
// full-batch end, TF32 off. Skips without a device.
//
// Truth: the CPU backend (every op checked against PyTorch or finite differences). The
// backends sum in different orders (cuDNN's algorithms, block reductions), and at a few
// samples per micro-batch a ReLU input within rounding of 0 may take the other side of its
// mask on one of them (tools/reference/step_cases.py explains it), which moves a gradient
// by a little, everywhere upstream. So each tensor is compared by its relative L2 error,
// bounded far below what a wrong kernel does (a wrong mask word, pooling index or residual
// gives errors of order 1).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "models/zoo.h"
#include "runtime/context.h"
#include "tests/models/step_compare.h"
#include "tests/test_util.h"

namespace mb {
namespace {

const Device kGpu = Device::cuda(0);
constexpr double kRelativeL2 = 1e-3;

// ||actual - expected|| / ||expected|| (0 when both are 0).
double relative_l2(const Tensor& actual, const Tensor& expected) {
  const std::vector<float> a = actual.to_vector();
  const std::vector<float> b = expected.to_vector();
  double difference = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    difference += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return norm > 0.0 ? std::sqrt(difference / norm) : std::sqrt(difference);
}

void expect_close_l2(const Tensor& gpu, const Tensor& cpu, const std::string& what) {
  ASSERT_TRUE(gpu.defined() && cpu.defined()) << what;
  ASSERT_EQ(gpu.shape(), cpu.shape()) << what;
  EXPECT_LT(relative_l2(gpu, cpu), kRelativeL2) << what;
}

struct Case {
  std::string name;
  std::int64_t size;
};

std::vector<Case> zoo_cases() {
  std::vector<Case> cases;
  for (const ModelInfo& info : model_catalog()) {
    cases.push_back(
        {info.name, std::min<std::int64_t>(info.image_size, info.segmentation ? 16 : 32)});
  }
  return cases;
}

class ZooGpu : public ::testing::TestWithParam<Case> {};

TEST_P(ZooGpu, OneTrainingStepMatchesTheCpu) {
  MB_SKIP_WITHOUT_CUDA();
  const Case c = GetParam();
  const ModelInfo& info = find_model(c.name);
  Context& context = Context::get(kGpu);
  const bool tf32 = context.allow_tf32();
  context.set_allow_tf32(false);
  ModelConfig config;
  config.image_size = c.size;
  config.num_classes = info.segmentation ? 3 : 10;
  config.seed = 7;
  config = resolve_config(c.name, config);
  std::shared_ptr<Module> cpu = build_model(c.name, config);
  std::shared_ptr<Module> gpu = build_model(c.name, config);
  gpu->to_device(kGpu);
  const testing::Batch batch = testing::small_batch(info, c.size, config.num_classes, 4);

  const testing::StepResult on_cpu = testing::train_step(*cpu, batch.input, batch.labels);
  const testing::StepResult on_gpu =
      testing::train_step(*gpu, batch.input.to(kGpu), batch.labels.to(kGpu));
  context.synchronize();
  context.set_allow_tf32(tf32);

  EXPECT_NEAR(on_gpu.loss, on_cpu.loss, 1e-4 * std::fabs(on_cpu.loss)) << c.name;
  expect_close_l2(on_gpu.logits, on_cpu.logits, c.name + " logits");
  expect_close_l2(on_gpu.grad_input, on_cpu.grad_input, c.name + " input gradient");
  const auto cpu_params = cpu->named_parameters();
  const auto gpu_params = gpu->named_parameters();
  ASSERT_EQ(cpu_params.size(), gpu_params.size());
  for (std::size_t i = 0; i < cpu_params.size(); ++i) {
    expect_close_l2(gpu_params[i].second->grad, cpu_params[i].second->grad,
                    c.name + " grad " + cpu_params[i].first);
  }
  const auto cpu_buffers = cpu->named_buffers();
  const auto gpu_buffers = gpu->named_buffers();
  for (std::size_t i = 0; i < cpu_buffers.size(); ++i) {
    if (cpu_buffers[i].second->dtype() != DType::Float32) continue;
    expect_close_l2(*gpu_buffers[i].second, *cpu_buffers[i].second,
                    c.name + " buffer " + cpu_buffers[i].first);
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, ZooGpu, ::testing::ValuesIn(zoo_cases()),
                         [](const ::testing::TestParamInfo<Case>& param) {
                           return param.param.name + "_" + std::to_string(param.param.size);
                         });

}  // namespace
}  // namespace mb
