// VGG-11 and VGG-16, with and without BatchNorm, named as torchvision's
// (features.<i>, classifier.<i>).
#include "layers/activation.h"
#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/pooling.h"
#include "models/zoo.h"
#include "runtime/error.h"

namespace mb {

std::shared_ptr<Module> make_vgg(int depth, bool batch_norm, const ModelConfig& c) {
  constexpr int kPool = 0;
  std::vector<int> layout;
  if (depth == 11) {
    layout = {64, kPool, 128, kPool, 256, 256, kPool, 512, 512, kPool, 512, 512, kPool};
  } else if (depth == 16) {
    layout = {64,    64,  kPool, 128, 128,   kPool, 256, 256, 256,
              kPool, 512, 512,   512, kPool, 512,   512, 512, kPool};
  } else {
    MB_THROW(InvalidArgument, "vgg: depth ", depth, " not built. Fix: use 11 or 16");
  }
  MB_CHECK(c.image_size % 32 == 0, "vgg: image size ", c.image_size,
           " must be a multiple of 32 (five 2x2 poolings)");
  auto features = std::make_shared<Sequential>();
  std::int64_t channels = c.in_channels;
  for (int v : layout) {
    if (v == kPool) {
      features->add(std::make_shared<MaxPool2d>(2, 2));
      continue;
    }
    features->add(std::make_shared<Conv2d>(channels, v, 3, 1, 1));
    if (batch_norm) features->add(std::make_shared<BatchNorm2d>(v));
    features->add(std::make_shared<ReLU>());
    channels = v;
  }
  const std::int64_t spatial = c.image_size / 32;
  auto classifier = std::make_shared<Sequential>();
  classifier->add(std::make_shared<Linear>(512 * spatial * spatial, 4096));
  classifier->add(std::make_shared<ReLU>());
  classifier->add(std::make_shared<Dropout>(0.5f, 1));
  classifier->add(std::make_shared<Linear>(4096, 4096));
  classifier->add(std::make_shared<ReLU>());
  classifier->add(std::make_shared<Dropout>(0.5f, 2));
  classifier->add(std::make_shared<Linear>(4096, c.num_classes));
  auto net = std::make_shared<Sequential>();
  net->add("features", features);
  net->add("flatten", std::make_shared<Flatten>());
  net->add("classifier", classifier);
  return net;
}

}  // namespace mb
