// Tensor: storage, views, copies between host and device, printing.
#include "runtime/tensor.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "runtime/allocator_registry.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace mb {
namespace {

// Note: CUDA work on a tensor with no explicit stream goes on its device's compute stream
// (a non-blocking stream), never the legacy default stream, so it is ordered with the
// layers' kernels; the call then waits for that stream.
StreamHandle stream_or_compute(const Device& device, StreamHandle stream) {
  if (stream != nullptr || device.is_cpu()) return stream;
  return Context::get(device).compute_stream();
}

// Copies t.nbytes() from host memory into t, on any device (synchronous).
void copy_host_values(Tensor& t, const void* values) {
  if (t.nbytes() == 0) return;
  const Stream stream = Stream::compute(t.device());
  copy_bytes(t.raw_data(), values, t.nbytes(), stream);
  stream.synchronize();
}

}  // namespace

TensorOptions tensor_options(const Device& device, MemoryTag tag, DType dtype) {
  TensorOptions options;
  options.dtype = dtype;
  options.device = device;
  options.tag = tag;
  options.stream = stream_or_compute(device, nullptr);
  return options;
}

Storage::Storage(std::shared_ptr<Allocator> allocator_in, std::size_t bytes_in, MemoryTag tag_in,
                 StreamHandle stream)
    : allocator(std::move(allocator_in)), data(nullptr), bytes(bytes_in), tag(tag_in) {
  // A zero-element tensor still gets a (minimal) block, so data() is never null.
  data = allocator->allocate(std::max<std::size_t>(bytes, 1), tag, stream);
}

Storage::~Storage() {
  allocator->deallocate(data);
}

Tensor::Tensor(std::shared_ptr<Storage> storage, std::size_t offset_bytes, Shape shape, DType dtype,
               Device device)
    : storage_(std::move(storage)),
      offset_bytes_(offset_bytes),
      shape_(std::move(shape)),
      dtype_(dtype),
      device_(device) {}

Tensor Tensor::empty(const Shape& shape, const TensorOptions& options) {
  std::shared_ptr<Allocator> allocator =
      options.allocator != nullptr ? options.allocator : allocator_for(options.device);
  const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(options.dtype);
  // A CUDA tensor without an explicit stream belongs to the compute stream, where the
  // layers' kernels run: the pool then lends its block to compute-stream requests, and the
  // planner's free bytes are bytes the next micro-batch can use.
  auto storage = std::make_shared<Storage>(std::move(allocator), bytes, options.tag,
                                           stream_or_compute(options.device, options.stream));
  return Tensor(std::move(storage), 0, shape, options.dtype, options.device);
}

Tensor Tensor::zeros(const Shape& shape, const TensorOptions& options) {
  Tensor t = empty(shape, options);
  t.zero(options.stream);
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, const TensorOptions& options) {
  Tensor t = empty(shape, options);
  t.fill(value, options.stream);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape,
                           const TensorOptions& options) {
  MB_CHECK(static_cast<std::int64_t>(values.size()) == shape.numel(),
           "from_vector: ", values.size(), " values do not fill shape ", shape.to_string());
  TensorOptions float_options = options;
  float_options.dtype = DType::Float32;
  Tensor t = empty(shape, float_options);
  copy_host_values(t, values.data());
  return t;
}

Tensor Tensor::from_vector_int(const std::vector<std::int32_t>& values, const Shape& shape,
                               const TensorOptions& options) {
  MB_CHECK(static_cast<std::int64_t>(values.size()) == shape.numel(),
           "from_vector_int: ", values.size(), " values do not fill shape ", shape.to_string());
  TensorOptions int_options = options;
  int_options.dtype = DType::Int32;
  Tensor t = empty(shape, int_options);
  copy_host_values(t, values.data());
  return t;
}

std::size_t Tensor::nbytes() const {
  return static_cast<std::size_t>(numel()) * dtype_size(dtype_);
}

MemoryTag Tensor::tag() const {
  return storage_ ? storage_->tag : MemoryTag::Other;
}

void* Tensor::raw_data() const {
  MB_CHECK(defined(), "data access on an undefined tensor");
  return static_cast<char*>(storage_->data) + offset_bytes_;
}

template <>
float* Tensor::data<float>() const {
  MB_CHECK(dtype_ == DType::Float32, "data<float>() on a ", dtype_name(dtype_), " tensor");
  return static_cast<float*>(raw_data());
}

template <>
std::int32_t* Tensor::data<std::int32_t>() const {
  MB_CHECK(dtype_ == DType::Int32, "data<int32_t>() on a ", dtype_name(dtype_), " tensor");
  return static_cast<std::int32_t*>(raw_data());
}

template <>
std::uint8_t* Tensor::data<std::uint8_t>() const {
  MB_CHECK(dtype_ == DType::UInt8, "data<uint8_t>() on a ", dtype_name(dtype_), " tensor");
  return static_cast<std::uint8_t*>(raw_data());
}

Tensor Tensor::view(const std::vector<std::int64_t>& requested) const {
  MB_CHECK(defined(), "view of an undefined tensor");
  std::vector<std::int64_t> dims = requested;
  auto shape_text = [&] {
    std::string text = "[";
    for (std::size_t i = 0; i < requested.size(); ++i)
      text += (i ? ", " : "") + std::to_string(requested[i]);
    return text + "]";
  };
  int inferred = -1;
  std::int64_t known = 1;
  for (int i = 0; i < static_cast<int>(dims.size()); ++i) {
    if (dims[i] == -1) {
      MB_CHECK(inferred < 0, "view: more than one -1 in ", shape_text());
      inferred = i;
    } else {
      MB_CHECK(dims[i] >= 0, "view: negative dimension in ", shape_text());
      known *= dims[i];
    }
  }
  if (inferred >= 0) {
    MB_CHECK(known > 0 && numel() % known == 0, "view: cannot infer -1 in ", shape_text(), " from ",
             numel(), " elements");
    dims[inferred] = numel() / known;
  }
  Shape resolved(dims);
  MB_CHECK(resolved.numel() == numel(), "view: shape ", resolved.to_string(), " has ",
           resolved.numel(), " elements but tensor ", shape_.to_string(), " has ", numel());
  return Tensor(storage_, offset_bytes_, resolved, dtype_, device_);
}

Tensor Tensor::slice(std::int64_t begin, std::int64_t end) const {
  MB_CHECK(defined() && ndim() >= 1, "slice needs a tensor with at least one axis");
  MB_CHECK(0 <= begin && begin <= end && end <= shape_[0], "slice [", begin, ", ", end,
           ") out of range for first axis of ", shape_.to_string());
  const std::int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  const std::size_t offset =
      offset_bytes_ + static_cast<std::size_t>(begin * row) * dtype_size(dtype_);
  return Tensor(storage_, offset, shape_.with_batch(end - begin), dtype_, device_);
}

Tensor Tensor::to(const Device& device, StreamHandle stream) const {
  MB_CHECK(defined(), "to(): undefined tensor");
  TensorOptions options;
  options.dtype = dtype_;
  options.device = device;
  options.tag = tag();
  options.stream = stream;
  Tensor result = empty(shape_, options);
  result.copy_from(*this, stream);
  return result;
}

Tensor Tensor::clone() const {
  return to(device_);
}

void Tensor::copy_from(const Tensor& source, StreamHandle stream) {
  MB_CHECK(defined() && source.defined(), "copy_from with an undefined tensor");
  MB_CHECK(dtype_ == source.dtype_ && numel() == source.numel(), "copy_from: cannot copy ",
           dtype_name(source.dtype_), " ", source.shape_.to_string(), " into ", dtype_name(dtype_),
           " ", shape_.to_string());
  if (nbytes() == 0) return;
  // A copy involving a GPU runs on that GPU's stream; host to host is a memmove.
  const Device device = device_.is_cuda() ? device_ : source.device_;
  const Stream on(device, stream_or_compute(device, stream));
  copy_bytes(raw_data(), source.raw_data(), nbytes(), on);
  if (stream == nullptr) on.synchronize();
}

void Tensor::fill(float value, StreamHandle stream) {
  MB_CHECK(defined(), "fill on an undefined tensor");
  MB_CHECK(dtype_ == DType::Float32 || dtype_ == DType::Int32,
           "fill supports float32 and int32, not ", dtype_name(dtype_));
  std::uint32_t pattern = 0;
  if (dtype_ == DType::Float32) {
    std::memcpy(&pattern, &value, 4);
  } else {
    std::int32_t as_int = static_cast<std::int32_t>(value);
    std::memcpy(&pattern, &as_int, 4);
  }
  const Stream on(device_, stream_or_compute(device_, stream));
  fill_words(raw_data(), pattern, static_cast<std::size_t>(numel()), on);
  if (stream == nullptr) on.synchronize();
}

void Tensor::zero(StreamHandle stream) {
  MB_CHECK(defined(), "zero on an undefined tensor");
  const std::size_t bytes = static_cast<std::size_t>(numel()) * dtype_size(dtype_);
  if (dtype_size(dtype_) == 4) {
    const Stream on(device_, stream_or_compute(device_, stream));
    fill_words(raw_data(), 0u, bytes / 4, on);
    if (stream == nullptr) on.synchronize();
    return;
  }
  MB_CHECK(device_.is_cpu(), "zero of a ", dtype_name(dtype_), " tensor on ", device_.str(),
           ": only 32-bit types are zeroed on a device");
  if (bytes > 0) std::memset(raw_data(), 0, bytes);
}

std::vector<float> Tensor::to_vector() const {
  MB_CHECK(dtype_ == DType::Float32, "to_vector on a ", dtype_name(dtype_), " tensor");
  Tensor host = device_.is_cpu() ? *this : to(Device::cpu());
  const float* p = host.data<float>();
  return std::vector<float>(p, p + numel());
}

std::vector<std::int32_t> Tensor::to_vector_int() const {
  MB_CHECK(dtype_ == DType::Int32, "to_vector_int on a ", dtype_name(dtype_), " tensor");
  Tensor host = device_.is_cpu() ? *this : to(Device::cpu());
  const std::int32_t* p = host.data<std::int32_t>();
  return std::vector<std::int32_t>(p, p + numel());
}

std::string Tensor::to_string(std::int64_t max_elements) const {
  std::ostringstream out;
  if (!defined()) return "Tensor(undefined)";
  out << "Tensor(" << dtype_name(dtype_) << ", " << shape_.to_string() << ", " << device_.str()
      << ")";
  if (dtype_ != DType::Float32 && dtype_ != DType::Int32) return out.str();
  std::vector<double> values;
  if (dtype_ == DType::Float32) {
    for (float v : to_vector()) values.push_back(v);
  } else {
    for (std::int32_t v : to_vector_int()) values.push_back(v);
  }
  out << "\n";
  const auto strides = shape_.contiguous_strides();
  const std::int64_t shown = std::min<std::int64_t>(numel(), max_elements);
  for (std::int64_t i = 0; i < shown; ++i) {
    for (int axis = 0; axis < ndim(); ++axis)
      if (i % (strides[axis] * shape_[axis]) == 0) out << "[";
    out << values[i];
    int closed = 0;
    for (int axis = ndim() - 1; axis >= 0; --axis) {
      if ((i + 1) % (strides[axis] * shape_[axis]) == 0) {
        out << "]";
        ++closed;
      }
    }
    if (i + 1 < shown) out << (closed > 0 ? ",\n" : ", ");
  }
  if (shown == 0 && ndim() > 0) out << "[]";
  if (ndim() == 0 && numel() == 1 && shown == 0) out << values[0];
  if (shown < numel()) out << ", ... (" << numel() - shown << " more)";
  return out.str();
}

}  // namespace mb
