// The CUDA 8-bit-to-float kernel (kernels/cuda/image_input.cu) against its CPU twin (label
// gpu), bit for bit: planes that are a multiple of 4 (the 32-bit load path) and odd ones
// (the byte path), one and several images, 1 and 3 channels. Skips without a device.
#include <gtest/gtest.h>

#include <random>
#include <tuple>
#include <vector>

#include "kernels/cpu/image_input.h"
#include "kernels/image_input.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace mb {
namespace {

TEST(ImageInputGpu, MatchesTheCpuTwinBitForBit) {
  MB_SKIP_WITHOUT_CUDA();
  std::mt19937 rng(5);
  for (const auto& [images, channels, plane] :
       std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>>{
           {1, 3, 224 * 224}, {5, 3, 7 * 9}, {3, 1, 4}, {2, 3, 33}}) {
    ChannelNormalization n;
    n.channels = static_cast<int>(channels);
    for (int c = 0; c < n.channels; ++c) {
      n.mean[c] = 0.4f + 0.03f * c;
      n.std[c] = 0.22f + 0.004f * c;
    }
    const std::int64_t count = images * channels * plane;
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(count));
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(rng());
    std::vector<float> want(bytes.size());
    cpu::images_to_float(Stream(), bytes.data(), want.data(), images, channels, plane, n);

    TensorOptions options;
    options.device = Device::cuda(0);
    options.dtype = DType::UInt8;
    TensorOptions host_options;
    host_options.dtype = DType::UInt8;
    Tensor host_bytes = Tensor::empty(Shape{count}, host_options);
    std::copy(bytes.begin(), bytes.end(), host_bytes.data<std::uint8_t>());
    Tensor device_bytes = host_bytes.to(Device::cuda(0));
    options.dtype = DType::Float32;
    Tensor out = Tensor::empty(Shape{count}, options);
    const Stream stream = Stream::compute(Device::cuda(0));
    images_to_float(stream, device_bytes.data<std::uint8_t>(), out.data<float>(), images, channels,
                    plane, n);
    stream.synchronize();
    EXPECT_EQ(out.to_vector(), want) << images << " x " << channels << " x " << plane;
  }
}

}  // namespace
}  // namespace mb
