// Tensor: a typed, shaped view of storage obtained from an Allocator.
//
// Tensors are contiguous (row-major). Copying a Tensor shares its storage, like a handle;
// clone() copies the data. Views (view, slice along the first axis) never copy.
// Data moves between host and device only through explicit calls (to, copy_from): no
// accessor hides a transfer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/shape.h"

namespace mb {

// One allocation, freed when the last tensor viewing it goes away. It shares ownership of
// its allocator, so the allocator outlives every tensor it served.
struct Storage {
  Storage(std::shared_ptr<Allocator> allocator, std::size_t bytes, MemoryTag tag,
          StreamHandle stream);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  std::shared_ptr<Allocator> allocator;
  void* data;
  std::size_t bytes;
  MemoryTag tag;
};

struct TensorOptions {
  DType dtype = DType::Float32;
  Device device = Device::cpu();
  MemoryTag tag = MemoryTag::Other;
  std::shared_ptr<Allocator> allocator;  // null: allocator_for(device)
  StreamHandle stream = nullptr;
};

// Options for a tensor used by work on `device`: with `tag`, and on CUDA ordered on the
// device's compute stream.
TensorOptions tensor_options(const Device& device, MemoryTag tag, DType dtype = DType::Float32);

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  static Tensor empty(const Shape& shape, const TensorOptions& options = {});
  static Tensor zeros(const Shape& shape, const TensorOptions& options = {});
  static Tensor full(const Shape& shape, float value, const TensorOptions& options = {});
  // A float32 tensor holding `values` (copied), placed on options.device.
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape,
                            const TensorOptions& options = {});
  static Tensor from_vector_int(const std::vector<std::int32_t>& values, const Shape& shape,
                                const TensorOptions& options = {});

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  std::int64_t dim(int axis) const { return shape_[axis]; }
  int ndim() const { return shape_.ndim(); }
  std::int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  std::size_t nbytes() const;
  std::vector<std::int64_t> strides() const { return shape_.contiguous_strides(); }
  MemoryTag tag() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  void* raw_data() const;
  // Typed pointer; checks that T matches dtype (float for Float32, int32 for Int32).
  template <typename T>
  T* data() const;

  // Same storage, new shape with the same numel. One axis may be -1 (inferred).
  Tensor view(const std::vector<std::int64_t>& dims) const;
  // Rows [begin, end) along the first axis, sharing storage.
  Tensor slice(std::int64_t begin, std::int64_t end) const;

  // A copy on `device` (a new allocation with this tensor's tag unless given).
  Tensor to(const Device& device, StreamHandle stream = nullptr) const;
  Tensor clone() const;
  // Copies `source` (same dtype and numel, any device) into this tensor. Synchronous when
  // stream is nullptr; on CUDA with a stream, the copy is ordered on that stream.
  void copy_from(const Tensor& source, StreamHandle stream = nullptr);
  // Sets every element (float32 / int32 values).
  void fill(float value, StreamHandle stream = nullptr);
  void zero(StreamHandle stream = nullptr);

  // Host copies of the values, for tests and printing (synchronous).
  std::vector<float> to_vector() const;
  std::vector<std::int32_t> to_vector_int() const;
  // "Tensor(float32, [2, 3], cpu)\n[[1, 2, 3], [4, 5, 6]]", eliding past max_elements.
  std::string to_string(std::int64_t max_elements = 64) const;

 private:
  Tensor(std::shared_ptr<Storage> storage, std::size_t offset_bytes, Shape shape, DType dtype,
         Device device);

  std::shared_ptr<Storage> storage_;
  std::size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::Float32;
  Device device_ = Device::cpu();
};

template <>
float* Tensor::data<float>() const;
template <>
std::int32_t* Tensor::data<std::int32_t>() const;
template <>
std::uint8_t* Tensor::data<std::uint8_t>() const;

}  // namespace mb
