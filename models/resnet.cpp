// ResNet-18/34/50/101/152 (torchvision, v1.5: stride in the 3x3 conv) and the CIFAR
// ResNet-20 (He et al. 2016, section 4.2, with projection shortcuts).
#include "layers/activation.h"
#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/pooling.h"
#include "models/blocks.h"
#include "models/zoo.h"
#include "runtime/error.h"

namespace mb {
namespace {

std::shared_ptr<Sequential> make_stage(std::int64_t& channels, std::int64_t planes, int blocks,
                                       int stride, bool bottleneck) {
  auto stage = std::make_shared<Sequential>();
  for (int i = 0; i < blocks; ++i) {
    stage->add(std::make_shared<ResidualBlock>(channels, planes, i == 0 ? stride : 1, bottleneck));
    channels = bottleneck ? planes * 4 : planes;
  }
  return stage;
}

}  // namespace

std::shared_ptr<Module> make_resnet(int depth, const ModelConfig& c) {
  std::vector<int> blocks;
  bool bottleneck = false;
  switch (depth) {
    case 18: blocks = {2, 2, 2, 2}; break;
    case 34: blocks = {3, 4, 6, 3}; break;
    case 50:
      blocks = {3, 4, 6, 3};
      bottleneck = true;
      break;
    case 101:
      blocks = {3, 4, 23, 3};
      bottleneck = true;
      break;
    case 152:
      blocks = {3, 8, 36, 3};
      bottleneck = true;
      break;
    default:
      MB_THROW(InvalidArgument, "resnet: depth ", depth, " not built. Fix: 18, 34, 50, 101 or 152");
  }
  MB_CHECK(c.image_size >= 32, "resnet", depth, ": image size ", c.image_size,
           " too small (needs >= 32)");
  auto net = std::make_shared<Sequential>();
  net->add("conv1", std::make_shared<Conv2d>(c.in_channels, 64, 7, 2, 3, 1, 1, false));
  net->add("bn1", std::make_shared<BatchNorm2d>(64));
  net->add("relu", std::make_shared<ReLU>());
  net->add("maxpool", std::make_shared<MaxPool2d>(3, 2, 1));
  std::int64_t channels = 64;
  const std::int64_t planes[] = {64, 128, 256, 512};
  for (int i = 0; i < 4; ++i) {
    auto stage = make_stage(channels, planes[i], blocks[i], i == 0 ? 1 : 2, bottleneck);
    stage->set_recompute(c.recompute_segments);
    net->add("layer" + std::to_string(i + 1), stage);
  }
  net->add("avgpool", std::make_shared<GlobalAvgPool2d>());
  net->add("flatten", std::make_shared<Flatten>());
  net->add("fc", std::make_shared<Linear>(channels, c.num_classes));
  return net;
}

std::shared_ptr<Module> make_resnet20(const ModelConfig& c) {
  MB_CHECK(c.image_size >= 8, "resnet20: image size ", c.image_size, " too small (needs >= 8)");
  auto net = std::make_shared<Sequential>();
  net->add("conv1", std::make_shared<Conv2d>(c.in_channels, 16, 3, 1, 1, 1, 1, false));
  net->add("bn1", std::make_shared<BatchNorm2d>(16));
  net->add("relu", std::make_shared<ReLU>());
  std::int64_t channels = 16;
  const std::int64_t planes[] = {16, 32, 64};
  for (int i = 0; i < 3; ++i) {
    auto stage = make_stage(channels, planes[i], 3, i == 0 ? 1 : 2, false);
    stage->set_recompute(c.recompute_segments);
    net->add("layer" + std::to_string(i + 1), stage);
  }
  net->add("avgpool", std::make_shared<GlobalAvgPool2d>());
  net->add("flatten", std::make_shared<Flatten>());
  net->add("fc", std::make_shared<Linear>(channels, c.num_classes));
  return net;
}

}  // namespace mb
