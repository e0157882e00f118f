// Data meets the device: loader batches (pinned host buffers) copied to the GPU and back,
// and safetensors saving from and loading into CUDA tensors.
#include <gtest/gtest.h>

#include "data/loader.h"
#include "data/safetensors.h"
#include "tests/data/temp_dir.h"
#include "tests/test_util.h"

namespace mb {
namespace {

TEST(DataGpu, LoaderBatchesCopyToTheDeviceUnchanged) {
  MB_SKIP_WITHOUT_CUDA();
  SyntheticOptions s;
  s.samples = 40;
  const Dataset data = make_synthetic(s);
  LoaderOptions o;
  o.batch_size = 16;
  o.augment.crop_padding = 4;
  o.augment.flip = true;
  BatchLoader loader(data, o);
  loader.start_epoch(0);
  Batch batch;
  int batches = 0;
  while (loader.next(batch)) {
    ++batches;
    const Tensor images = batch.images.to(Device::cuda());
    const Tensor labels = batch.labels.to(Device::cuda());
    EXPECT_EQ(images.to_vector(), batch.images.to_vector());
    EXPECT_EQ(labels.to_vector_int(), batch.labels.to_vector_int());
  }
  EXPECT_EQ(batches, 3);
}

TEST(DataGpu, SafetensorsFromAndIntoCudaTensors) {
  MB_SKIP_WITHOUT_CUDA();
  testing::TempDir dir;
  const std::string path = dir.file("gpu.safetensors");
  const Tensor weight = Tensor::from_vector({1, 2, 3, 4, 5, 6}, Shape{2, 3}).to(Device::cuda());
  save_safetensors(path, {{"w", weight}}, {{"device", "cuda"}});
  const SafetensorsFile file = load_safetensors(path);
  EXPECT_EQ(file.tensors.at("w").to_vector(), weight.to_vector());
  TensorOptions options;
  options.device = Device::cuda();
  Tensor target = Tensor::zeros(Shape{2, 3}, options);
  load_into(file, {{"w", target}});
  EXPECT_EQ(target.to_vector(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
}

}  // namespace
}  // namespace mb
