// The model zoo: builders for reference CNNs with torchvision's parameter names.
//
// Builders take input channels, image size and classes (0: the model's default). Parameter
// counts equal torchvision's for the same configuration (tests/models check them). Where a
// model needs torchvision's AdaptiveAvgPool2d((7, 7)) (VGG) we use the classifier input the
// image size gives instead: identical at 224x224, smaller (and trainable) at 32x32.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers/module.h"

namespace mb {

struct ModelConfig {
  std::int64_t in_channels = 0;  // 0: the model's default
  std::int64_t image_size = 0;
  std::int64_t num_classes = 0;
  std::uint64_t seed = 0;  // parameter initialization
  // Every BatchNorm2d of the model (PyTorch's defaults and conventions).
  double bn_eps = 1e-5;
  double bn_momentum = 0.1;
  // Fuse the memory-bound layers (Module::fuse_memory_bound_layers, layers/fusion.h): the
  // same numbers with less memory per sample. False: the plain layers, for comparison.
  bool fuse = true;
  // Recompute each residual stage in backward instead of keeping its activations
  // (Sequential::set_recompute; ResNets only): less memory per sample for one more forward
  // of the stages. Off by default.
  bool recompute_segments = false;
};

struct ModelInfo {
  std::string name;
  std::string description;
  std::int64_t in_channels;
  std::int64_t image_size;
  std::int64_t num_classes;
  bool segmentation;  // output [N, classes, H, W], labels [N, H, W]
};

const std::vector<ModelInfo>& model_catalog();
// Throws mb::InvalidArgument listing the known names.
const ModelInfo& find_model(const std::string& name);
// Fills in the defaults of `config` from the catalog.
ModelConfig resolve_config(const std::string& name, const ModelConfig& config);
std::shared_ptr<Module> build_model(const std::string& name, const ModelConfig& config = {});

// Initializes every Conv2d, ConvTranspose2d and Linear: He-uniform weights for
// convolutions (bound sqrt(6 / fan_in)), PyTorch's default for Linear (1 / sqrt(fan_in))
// and biases; BatchNorm keeps weight 1, bias 0. Deterministic for a seed.
void initialize_parameters(Module& model, std::uint64_t seed);

// Individual builders (used by build_model).
std::shared_ptr<Module> make_lenet5(const ModelConfig& config);
std::shared_ptr<Module> make_vgg(int depth, bool batch_norm, const ModelConfig& config);
std::shared_ptr<Module> make_resnet(int depth, const ModelConfig& config);
std::shared_ptr<Module> make_resnet20(const ModelConfig& config);
std::shared_ptr<Module> make_mobilenet_v2(const ModelConfig& config);
std::shared_ptr<Module> make_unet(const ModelConfig& config);

}  // namespace mb
