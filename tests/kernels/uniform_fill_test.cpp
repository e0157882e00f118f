// Parameter initialization (kernels/uniform_fill.h) against its definition, element by
// element: (2 * philox_element_uniform(seed, stream_id, 0, 0, i) - 1) * bound, the scalar
// draw of runtime/philox.h. The CPU twin draws four elements per Philox call in parallel blocks;
// a count that is not a multiple of four and spans several blocks checks both cuts.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kernels/uniform_fill.h"
#include "runtime/error.h"
#include "runtime/philox.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace mb {
namespace {

std::vector<float> by_definition(std::int64_t count, float bound, std::uint64_t seed,
                                 std::uint32_t stream_id) {
  std::vector<float> values(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    const float u = philox_element_uniform(seed, stream_id, 0, 0, static_cast<std::uint32_t>(i));
    values[static_cast<std::size_t>(i)] = (2.0f * u - 1.0f) * bound;
  }
  return values;
}

TEST(UniformFill, CpuEqualsTheScalarDefinitionBitForBit) {
  const Stream stream = Stream::compute(Device::cpu());
  for (const std::int64_t count : {std::int64_t{1}, std::int64_t{7}, std::int64_t{3 * 16384 + 7}}) {
    std::vector<float> values(static_cast<std::size_t>(count), -99.0f);
    uniform_fill(stream, values.data(), count, 0.25f, 0x123456789ABCDEFull, 3);
    const std::vector<float> expected = by_definition(count, 0.25f, 0x123456789ABCDEFull, 3);
    for (std::int64_t i = 0; i < count; ++i) {
      ASSERT_EQ(values[static_cast<std::size_t>(i)], expected[static_cast<std::size_t>(i)])
          << "element " << i << " of " << count;
    }
  }
}

TEST(UniformFill, GpuEqualsTheCpuBitForBit) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda(0);
  const std::int64_t count = 5 * 16384 + 3;
  Tensor on_gpu = Tensor::empty(Shape{count}, tensor_options(gpu, MemoryTag::Other));
  uniform_fill(Stream::compute(gpu), on_gpu.data<float>(), count, 0.5f, 42, 9);
  const std::vector<float> expected = by_definition(count, 0.5f, 42, 9);
  EXPECT_EQ(on_gpu.to_vector(), expected);
}

TEST(UniformFill, RejectsBadArguments) {
  const Stream stream = Stream::compute(Device::cpu());
  float value = 0.0f;
  EXPECT_THROW(uniform_fill(stream, &value, -1, 1.0f, 0, 0), InvalidArgument);
  EXPECT_THROW(uniform_fill(stream, nullptr, 4, 1.0f, 0, 0), InvalidArgument);
  EXPECT_NO_THROW(uniform_fill(stream, nullptr, 0, 1.0f, 0, 0));
}

}  // namespace
}  // namespace mb
