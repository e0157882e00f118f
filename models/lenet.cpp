// LeNet-5 with ReLU and max pooling, sized for any square input (28x28 by default).
#include "layers/activation.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/pooling.h"
#include "models/zoo.h"
#include "runtime/error.h"

namespace mb {

std::shared_ptr<Module> make_lenet5(const ModelConfig& c) {
  // conv1 keeps the size (padding 2), pool halves, conv2 (5x5) takes 4, pool halves.
  const std::int64_t after = (c.image_size / 2 - 4) / 2;
  MB_CHECK(after >= 1, "lenet5: image size ", c.image_size, " is too small (needs >= 12)");
  auto net = std::make_shared<Sequential>();
  net->add("conv1", std::make_shared<Conv2d>(c.in_channels, 6, 5, 1, 2));
  net->add("relu1", std::make_shared<ReLU>());
  net->add("pool1", std::make_shared<MaxPool2d>(2));
  net->add("conv2", std::make_shared<Conv2d>(6, 16, 5));
  net->add("relu2", std::make_shared<ReLU>());
  net->add("pool2", std::make_shared<MaxPool2d>(2));
  net->add("flatten", std::make_shared<Flatten>());
  net->add("fc1", std::make_shared<Linear>(16 * after * after, 120));
  net->add("relu3", std::make_shared<ReLU>());
  net->add("fc2", std::make_shared<Linear>(120, 84));
  net->add("relu4", std::make_shared<ReLU>());
  net->add("fc3", std::make_shared<Linear>(84, c.num_classes));
  return net;
}

}  // namespace mb
