// 8-bit images to float32 input (kernels/image_input.h) against torchvision's ToTensor +
// Normalize with ImageNet's constants (fixture images_to_tensor_normalize), every value
// 0..255 in every channel: bit for bit. And what the op refuses.
#include "kernels/image_input.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "../fixture.h"
#include "runtime/error.h"

namespace mb {
namespace {

ChannelNormalization imagenet(const testing::Fixture& f) {
  const auto mean = nlohmann::json::parse(f.meta("mean")).get<std::vector<float>>();
  const auto std = nlohmann::json::parse(f.meta("std")).get<std::vector<float>>();
  ChannelNormalization n;
  n.channels = 3;
  for (int c = 0; c < 3; ++c) {
    n.mean[c] = mean[static_cast<std::size_t>(c)];
    n.std[c] = std[static_cast<std::size_t>(c)];
  }
  return n;
}

TEST(ImageInputReference, EqualsToTensorAndNormalizeBitForBit) {
  const testing::Fixture f("images_to_tensor_normalize.safetensors");
  const Tensor& input = f.tensor("input");  // [3, 16, 16], every value 0..255 per channel
  std::vector<std::uint8_t> bytes;
  const std::int32_t* p = input.data<std::int32_t>();
  for (std::int64_t i = 0; i < input.numel(); ++i) bytes.push_back(static_cast<std::uint8_t>(p[i]));
  // Two images (the second the first again) to cover the image stride.
  const std::vector<std::uint8_t> first = bytes;
  bytes.insert(bytes.end(), first.begin(), first.end());
  const std::vector<float> want = f.values("output");
  std::vector<float> out(bytes.size(), -7.0f);
  images_to_float(Stream(), bytes.data(), out.data(), 2, 3, 256, imagenet(f));
  for (std::size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i], want[i % want.size()])
        << "element " << i << " (value " << int(bytes[i]) << ", channel " << (i / 256) % 3 << ")";
  }
}

TEST(ImageInputReference, RefusesMismatchedChannelsAndBadStd) {
  const std::vector<std::uint8_t> bytes(12, 1);
  std::vector<float> out(12);
  ChannelNormalization n;
  n.channels = 3;
  for (int c = 0; c < 3; ++c) n.std[c] = 1.0f;
  EXPECT_THROW(images_to_float(Stream(), bytes.data(), out.data(), 1, 4, 3, n), InvalidArgument);
  n.std[1] = 0.0f;
  EXPECT_THROW(images_to_float(Stream(), bytes.data(), out.data(), 1, 3, 4, n), InvalidArgument);
}

}  // namespace
}  // namespace mb
