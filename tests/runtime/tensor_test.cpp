// Tensor semantics on the CPU: shapes, views sharing storage, slices, copies, fill, printing.
#include "runtime/tensor.h"

#include <gtest/gtest.h>

#include "runtime/allocator_registry.h"
#include "runtime/error.h"

namespace mb {
namespace {

TEST(Shape, NumelStridesAndPrinting) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.contiguous_strides(), (std::vector<std::int64_t>{12, 4, 1}));
  EXPECT_EQ(s[-1], 4);
  EXPECT_EQ(s.to_string(), "[2, 3, 4]");
  EXPECT_EQ(s.with_batch(7), (Shape{7, 3, 4}));
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_THROW(s[3], InvalidArgument);
  EXPECT_THROW(Shape({2, -1}), InvalidArgument);
  // 2^40 * 2^40 wraps to 0 in int64 arithmetic: the shape must be refused, not be empty.
  EXPECT_THROW(Shape({std::int64_t{1} << 40, std::int64_t{1} << 40}), InvalidArgument);
  EXPECT_EQ((Shape{std::int64_t{1} << 31, std::int64_t{1} << 31}).numel(), std::int64_t{1} << 62);
}

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::Float32), 4u);
  EXPECT_EQ(dtype_size(DType::Float16), 2u);
  EXPECT_EQ(dtype_size(DType::BFloat16), 2u);
  EXPECT_EQ(parse_dtype("bfloat16"), DType::BFloat16);
  EXPECT_THROW(parse_dtype("float64"), InvalidArgument);
}

TEST(Tensor, EmptyHasShapeDtypeDeviceAndBytes) {
  Tensor t = Tensor::empty({2, 3});
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.dtype(), DType::Float32);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_EQ(t.strides(), (std::vector<std::int64_t>{3, 1}));
  EXPECT_FALSE(Tensor().defined());
}

TEST(Tensor, StorageComesFromTheAllocatorWithItsTag) {
  std::shared_ptr<Allocator> allocator = allocator_for(Device::cpu());
  const std::size_t before = allocator->report().tag_bytes(MemoryTag::Activation);
  {
    TensorOptions options;
    options.tag = MemoryTag::Activation;
    Tensor t = Tensor::empty({1000}, options);
    EXPECT_EQ(t.tag(), MemoryTag::Activation);
    EXPECT_GE(allocator->report().tag_bytes(MemoryTag::Activation), before + 4000);
  }
  EXPECT_EQ(allocator->report().tag_bytes(MemoryTag::Activation), before);
}

TEST(Tensor, ViewSharesStorageAndInfersMinusOne) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor v = t.view({3, -1});
  EXPECT_EQ(v.shape(), (Shape{3, 2}));
  v.data<float>()[5] = 60.0f;
  EXPECT_EQ(t.to_vector()[5], 60.0f);
  EXPECT_THROW(t.view({4, 2}), InvalidArgument);
  EXPECT_THROW(t.view({-1, -1}), InvalidArgument);
}

TEST(Tensor, SliceAlongFirstAxisIsAView) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5, 6, 7}, {4, 2});
  Tensor s = t.slice(1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 2}));
  EXPECT_EQ(s.to_vector(), (std::vector<float>{2, 3, 4, 5}));
  s.fill(-1.0f);
  EXPECT_EQ(t.to_vector(), (std::vector<float>{0, 1, -1, -1, -1, -1, 6, 7}));
  EXPECT_THROW(t.slice(3, 5), InvalidArgument);
  EXPECT_EQ(t.slice(2, 2).numel(), 0);
}

TEST(Tensor, CloneCopiesDataCopyFromChecksShapes) {
  Tensor t = Tensor::from_vector({1, 2, 3}, {3});
  Tensor c = t.clone();
  c.data<float>()[0] = 100.0f;
  EXPECT_EQ(t.to_vector()[0], 1.0f);
  Tensor d = Tensor::zeros({3});
  d.copy_from(t);
  EXPECT_EQ(d.to_vector(), t.to_vector());
  Tensor wrong = Tensor::zeros({4});
  EXPECT_THROW(wrong.copy_from(t), InvalidArgument);
}

TEST(Tensor, FillZerosFullAndInt) {
  EXPECT_EQ(Tensor::full({2, 2}, 2.5f).to_vector(), (std::vector<float>(4, 2.5f)));
  EXPECT_EQ(Tensor::zeros({3}).to_vector(), (std::vector<float>(3, 0.0f)));
  TensorOptions int_options;
  int_options.dtype = DType::Int32;
  Tensor labels = Tensor::full({3}, 7.0f, int_options);
  EXPECT_EQ(labels.to_vector_int(), (std::vector<std::int32_t>{7, 7, 7}));
  EXPECT_THROW(labels.data<float>(), InvalidArgument);
}

TEST(Tensor, ToStringIsReadable) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.to_string(), "Tensor(float32, [2, 3], cpu)\n[[1, 2, 3],\n[4, 5, 6]]");
  Tensor big = Tensor::zeros({100});
  EXPECT_NE(big.to_string(4).find("96 more"), std::string::npos);
}

}  // namespace
}  // namespace mb
