// The catalog, build_model and parameter initialization.
#include "models/zoo.h"

#include <cmath>

#include "layers/batch_norm2d.h"
#include "layers/init.h"
#include "runtime/error.h"

namespace mb {
namespace {

void configure_batch_norm(Module& module, double eps, double momentum) {
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&module)) bn->set_options(eps, momentum);
  for (const auto& [name, child] : module.children()) configure_batch_norm(*child, eps, momentum);
}

}  // namespace

const std::vector<ModelInfo>& model_catalog() {
  static const std::vector<ModelInfo> catalog = {
      {"lenet5", "LeNet-5 (LeCun et al. 1998), ReLU and max pooling", 1, 28, 10, false},
      {"resnet20", "ResNet-20 for CIFAR (He et al. 2016), projection shortcuts", 3, 32, 10, false},
      {"resnet18", "ResNet-18 (torchvision)", 3, 224, 1000, false},
      {"resnet34", "ResNet-34 (torchvision)", 3, 224, 1000, false},
      {"resnet50", "ResNet-50 v1.5 (torchvision)", 3, 224, 1000, false},
      {"resnet101", "ResNet-101 v1.5 (torchvision)", 3, 224, 1000, false},
      {"resnet152", "ResNet-152 v1.5 (torchvision)", 3, 224, 1000, false},
      {"vgg11", "VGG-11 (torchvision)", 3, 224, 1000, false},
      {"vgg11_bn", "VGG-11 with BatchNorm (torchvision)", 3, 224, 1000, false},
      {"vgg16", "VGG-16 (torchvision)", 3, 224, 1000, false},
      {"vgg16_bn", "VGG-16 with BatchNorm (torchvision)", 3, 224, 1000, false},
      {"mobilenet_v2", "MobileNetV2 (torchvision)", 3, 224, 1000, false},
      {"unet", "U-Net (Ronneberger et al. 2015) with BatchNorm, padded convolutions", 3, 128, 2,
       true},
  };
  return catalog;
}

const ModelInfo& find_model(const std::string& name) {
  std::string known;
  for (const ModelInfo& info : model_catalog()) {
    if (info.name == name) return info;
    known += (known.empty() ? "" : ", ") + info.name;
  }
  MB_THROW(InvalidArgument, "unknown model '", name, "'. Fix: use one of ", known,
           " (see `microbatch models`)");
}

ModelConfig resolve_config(const std::string& name, const ModelConfig& config) {
  const ModelInfo& info = find_model(name);
  ModelConfig resolved = config;
  if (resolved.in_channels == 0) resolved.in_channels = info.in_channels;
  if (resolved.image_size == 0) resolved.image_size = info.image_size;
  if (resolved.num_classes == 0) resolved.num_classes = info.num_classes;
  MB_CHECK(resolved.in_channels > 0 && resolved.image_size > 0 && resolved.num_classes > 0, name,
           ": channels, image size and classes must be positive");
  return resolved;
}

std::shared_ptr<Module> build_model(const std::string& name, const ModelConfig& config) {
  const ModelConfig c = resolve_config(name, config);
  MB_CHECK(!c.recompute_segments || name.rfind("resnet", 0) == 0, "model '", name,
           "' has no residual stages to recompute. Fix: drop --recompute-segments, or use a "
           "ResNet (resnet20, resnet18 ... resnet152)");
  std::shared_ptr<Module> model;
  if (name == "lenet5") model = make_lenet5(c);
  if (name == "resnet20") model = make_resnet20(c);
  if (name == "resnet18") model = make_resnet(18, c);
  if (name == "resnet34") model = make_resnet(34, c);
  if (name == "resnet50") model = make_resnet(50, c);
  if (name == "resnet101") model = make_resnet(101, c);
  if (name == "resnet152") model = make_resnet(152, c);
  if (name == "vgg11") model = make_vgg(11, false, c);
  if (name == "vgg11_bn") model = make_vgg(11, true, c);
  if (name == "vgg16") model = make_vgg(16, false, c);
  if (name == "vgg16_bn") model = make_vgg(16, true, c);
  if (name == "mobilenet_v2") model = make_mobilenet_v2(c);
  if (name == "unet") model = make_unet(c);
  MB_CHECK(model != nullptr, "model '", name, "' is in the catalog but has no builder");
  initialize_parameters(*model, c.seed);
  configure_batch_norm(*model, c.bn_eps, c.bn_momentum);
  if (c.fuse) model->fuse_memory_bound_layers();
  return model;
}

namespace {

void initialize_recursive(Module& module, std::uint64_t seed, std::uint32_t& stream_id) {
  const WeightInit init = module.weight_init();
  if (init != WeightInit::None) {
    auto params = module.named_parameters();
    std::int64_t fan_in = 1;
    for (auto& [name, p] : params) {
      if (name != "weight") continue;
      const Shape& s = p->value.shape();
      // Conv2d [out, in/g, k, k] and Linear [out, in]: fan_in = prod(dims[1:]);
      // ConvTranspose2d [in, out, k, k]: PyTorch also uses dims[1] * k * k.
      fan_in = s.numel() / s[0];
    }
    const double weight_bound = init == WeightInit::Linear
                                    ? 1.0 / std::sqrt(static_cast<double>(fan_in))
                                    : std::sqrt(6.0 / static_cast<double>(fan_in));
    const double bias_bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    for (auto& [name, p] : params) {
      const double bound = name == "weight" ? weight_bound : bias_bound;
      fill_uniform(p->value, static_cast<float>(bound), seed, stream_id++);
    }
    return;
  }
  for (const auto& [name, child] : module.children()) {
    initialize_recursive(*child, seed, stream_id);
  }
}

}  // namespace

void initialize_parameters(Module& model, std::uint64_t seed) {
  std::uint32_t stream_id = 0;  // one Philox stream per parameter, in registration order
  initialize_recursive(model, seed, stream_id);
}

}  // namespace mb
