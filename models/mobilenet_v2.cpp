// MobileNetV2 (Sandler et al. 2018) at width 1.0, named as torchvision's
// (features.<i>.conv.<j>, classifier.1).
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/pooling.h"
#include "models/blocks.h"
#include "models/zoo.h"
#include "runtime/error.h"

namespace mb {

std::shared_ptr<Module> make_mobilenet_v2(const ModelConfig& c) {
  MB_CHECK(c.image_size >= 32, "mobilenet_v2: image size ", c.image_size,
           " too small (needs >= 32)");
  struct Setting {
    int expand, channels, repeats, stride;
  };
  const Setting settings[] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                              {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  auto features = std::make_shared<Sequential>();
  features->add(conv_bn_act(c.in_channels, 32, 3, 2, 1, true));
  std::int64_t channels = 32;
  for (const Setting& s : settings) {
    for (int i = 0; i < s.repeats; ++i) {
      features->add(std::make_shared<InvertedResidual>(channels, s.channels, i == 0 ? s.stride : 1,
                                                       s.expand));
      channels = s.channels;
    }
  }
  features->add(conv_bn_act(channels, 1280, 1, 1, 1, true));
  auto classifier = std::make_shared<Sequential>();
  classifier->add(std::make_shared<Dropout>(0.2f, 1));
  classifier->add(std::make_shared<Linear>(1280, c.num_classes));
  auto net = std::make_shared<Sequential>();
  net->add("features", features);
  net->add("avgpool", std::make_shared<GlobalAvgPool2d>());
  net->add("flatten", std::make_shared<Flatten>());
  net->add("classifier", classifier);
  return net;
}

}  // namespace mb
