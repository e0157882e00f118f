// The zoo: parameter counts equal torchvision's published numbers, names follow its
// state_dict keys, output shapes are right, and a forward+backward runs for every model.
#include "models/zoo.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "layers/softmax_cross_entropy.h"
#include "runtime/error.h"

namespace mb {
namespace {

std::set<std::string> names_of(Module& model) {
  std::set<std::string> names;
  for (auto& [name, p] : model.named_parameters()) names.insert(name);
  for (auto& [name, b] : model.named_buffers()) names.insert(name);
  return names;
}

// torchvision.models.<name>(num_classes=1000) parameter counts (sum of p.numel()).
TEST(Zoo, ParameterCountsEqualTorchvision) {
  const std::map<std::string, std::int64_t> expected = {
      {"resnet18", 11689512},   {"resnet34", 21797672},  {"resnet50", 25557032},
      {"resnet101", 44549160},  {"resnet152", 60192808}, {"vgg11", 132863336},
      {"vgg11_bn", 132868840},  {"vgg16", 138357544},    {"vgg16_bn", 138365992},
      {"mobilenet_v2", 3504872}};
  for (const auto& [name, count] : expected) {
    auto model = build_model(name);
    EXPECT_EQ(model->parameter_count(), count) << name;
  }
}

TEST(Zoo, SmallModelCountsFromTheirDefinitions) {
  // LeNet-5 at 28x28: conv1 1*6*25+6, conv2 6*16*25+16, fc1 400*120+120, fc2 120*84+84,
  // fc3 84*10+10.
  EXPECT_EQ(build_model("lenet5")->parameter_count(), 156 + 2416 + 48120 + 10164 + 850);
  // ResNet-20 with projection shortcuts (He et al. 2016 report 0.27M).
  EXPECT_EQ(build_model("resnet20")->parameter_count(), 272474);
  // U-Net: double conv (3x3, no bias, BN) per level, 2x2 transposed convs with bias.
  auto double_conv = [](std::int64_t i, std::int64_t o) { return 9 * i * o + 9 * o * o + 4 * o; };
  std::int64_t unet = double_conv(3, 64);
  const std::int64_t w[] = {64, 128, 256, 512, 1024};
  for (int i = 0; i < 4; ++i) unet += double_conv(w[i], w[i + 1]);
  for (int i = 4; i >= 1; --i)
    unet += w[i] * (w[i] / 2) * 4 + w[i] / 2 + double_conv(w[i], w[i - 1]);
  unet += 64 * 2 + 2;
  EXPECT_EQ(build_model("unet")->parameter_count(), unet);
}

TEST(Zoo, NamesFollowTorchvisionStateDict) {
  auto resnet18 = build_model("resnet18");
  EXPECT_EQ(resnet18->named_parameters().size(), 62u);  // torchvision: 62 parameters
  EXPECT_EQ(resnet18->named_buffers().size(), 60u);     // 20 BatchNorms x 3 buffers
  const auto r18 = names_of(*resnet18);
  for (const char* key :
       {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.bias", "layer4.1.bn2.num_batches_tracked", "fc.weight", "fc.bias"}) {
    EXPECT_TRUE(r18.count(key)) << key;
  }
  const auto r50 = names_of(*build_model("resnet50"));
  EXPECT_TRUE(r50.count("layer3.5.conv3.weight"));
  EXPECT_TRUE(r50.count("layer1.0.downsample.1.running_var"));
  const auto mobilenet = names_of(*build_model("mobilenet_v2"));
  for (const char* key :
       {"features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight",
        "features.1.conv.1.weight", "features.2.conv.1.0.weight", "features.2.conv.3.bias",
        "features.18.0.weight", "classifier.1.weight"}) {
    EXPECT_TRUE(mobilenet.count(key)) << key;
  }
  const auto vgg16 = names_of(*build_model("vgg16"));
  EXPECT_TRUE(vgg16.count("features.28.weight"));
  EXPECT_TRUE(vgg16.count("classifier.6.weight"));
  EXPECT_TRUE(names_of(*build_model("vgg16_bn")).count("features.40.weight"));
}

// Shapes from torchvision's state_dict (torchvision.models.<name>(); [] is a scalar).
TEST(Zoo, ShapesOfKeyParameters) {
  const std::map<std::string, std::map<std::string, Shape>> expected = {
      {"resnet18",
       {{"conv1.weight", Shape{64, 3, 7, 7}},
        {"bn1.weight", Shape{64}},
        {"bn1.running_mean", Shape{64}},
        {"layer1.0.conv1.weight", Shape{64, 64, 3, 3}},
        {"layer2.0.conv1.weight", Shape{128, 64, 3, 3}},
        {"layer2.0.downsample.0.weight", Shape{128, 64, 1, 1}},
        {"layer2.0.downsample.1.running_var", Shape{128}},
        {"layer4.1.conv2.weight", Shape{512, 512, 3, 3}},
        {"layer4.1.bn2.num_batches_tracked", Shape{}},
        {"fc.weight", Shape{1000, 512}},
        {"fc.bias", Shape{1000}}}},
      {"resnet50",
       {{"conv1.weight", Shape{64, 3, 7, 7}},
        {"layer1.0.conv1.weight", Shape{64, 64, 1, 1}},
        {"layer1.0.conv2.weight", Shape{64, 64, 3, 3}},
        {"layer1.0.conv3.weight", Shape{256, 64, 1, 1}},
        {"layer1.0.downsample.0.weight", Shape{256, 64, 1, 1}},
        {"layer3.5.conv3.weight", Shape{1024, 256, 1, 1}},
        {"layer4.2.conv2.weight", Shape{512, 512, 3, 3}},
        {"fc.weight", Shape{1000, 2048}}}},
      {"mobilenet_v2",
       {{"features.0.0.weight", Shape{32, 3, 3, 3}},
        {"features.1.conv.0.0.weight", Shape{32, 1, 3, 3}},
        {"features.1.conv.1.weight", Shape{16, 32, 1, 1}},
        {"features.2.conv.0.0.weight", Shape{96, 16, 1, 1}},
        {"features.2.conv.1.0.weight", Shape{96, 1, 3, 3}},
        {"features.2.conv.2.weight", Shape{24, 96, 1, 1}},
        {"features.2.conv.3.bias", Shape{24}},
        {"features.18.0.weight", Shape{1280, 320, 1, 1}},
        {"classifier.1.weight", Shape{1000, 1280}}}},
      {"vgg16",
       {{"features.0.weight", Shape{64, 3, 3, 3}},
        {"features.28.weight", Shape{512, 512, 3, 3}},
        {"classifier.0.weight", Shape{4096, 25088}},
        {"classifier.6.weight", Shape{1000, 4096}}}}};
  for (const auto& [model_name, shapes] : expected) {
    auto model = build_model(model_name);
    std::map<std::string, Shape> actual;
    for (auto& [name, p] : model->named_parameters()) actual.emplace(name, p->value.shape());
    for (auto& [name, b] : model->named_buffers()) actual.emplace(name, b->shape());
    for (const auto& [name, shape] : shapes) {
      const auto found = actual.find(name);
      if (found == actual.end()) {
        ADD_FAILURE() << model_name << " has no " << name;
        continue;
      }
      EXPECT_EQ(found->second, shape)
          << model_name << " " << name << " is " << found->second.to_string();
    }
  }
}

TEST(Zoo, UnknownModelNamesTheKnownOnes) {
  try {
    build_model("resnet19");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("resnet18"), std::string::npos);
  }
}

struct SmallCase {
  const char* name;
  std::int64_t size;
  std::int64_t classes;
};

class ZooForwardBackward : public ::testing::TestWithParam<SmallCase> {};

TEST_P(ZooForwardBackward, OutputShapeAndFiniteGradients) {
  const SmallCase c = GetParam();
  ModelConfig config;
  config.image_size = c.size;
  config.num_classes = c.classes;
  auto model = build_model(c.name, config);
  const ModelInfo& info = find_model(c.name);
  const std::int64_t batch = 2;
  Shape input_shape{batch, info.in_channels, c.size, c.size};
  Tensor input = Tensor::full(input_shape, 0.5f);
  const Shape expected =
      info.segmentation ? Shape{batch, c.classes, c.size, c.size} : Shape{batch, c.classes};
  EXPECT_EQ(model->output_shape(input_shape), expected);
  RunState state;
  Tensor logits = model->forward(input, state);
  EXPECT_EQ(logits.shape(), expected);
  TensorOptions label_options;
  label_options.dtype = DType::Int32;
  Tensor labels =
      Tensor::zeros(info.segmentation ? Shape{batch, c.size, c.size} : Shape{batch}, label_options);
  LossResult loss = SoftmaxCrossEntropy().forward_backward(logits, labels);
  EXPECT_TRUE(std::isfinite(loss.loss));
  BackwardState backward_state;
  backward_state.need_input_grad = false;
  model->backward(loss.grad_logits, backward_state);
  double norm = 0.0;
  for (auto& [name, p] : model->named_parameters()) {
    ASSERT_TRUE(p->grad.defined()) << name;
    for (float g : p->grad.to_vector()) norm += static_cast<double>(g) * g;
  }
  EXPECT_TRUE(std::isfinite(norm));
  EXPECT_GT(norm, 0.0);
  EXPECT_GT(model->forward_flops(input_shape), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Small, ZooForwardBackward,
    ::testing::Values(SmallCase{"lenet5", 28, 10}, SmallCase{"resnet20", 16, 10},
                      SmallCase{"resnet18", 32, 10}, SmallCase{"resnet50", 32, 10},
                      SmallCase{"vgg11_bn", 32, 10}, SmallCase{"vgg16", 32, 10},
                      SmallCase{"mobilenet_v2", 32, 10}, SmallCase{"unet", 16, 3}),
    [](const ::testing::TestParamInfo<SmallCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mb
