// A tensor's extents. Dimensions are int64 and never negative.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace mb {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(std::vector<std::int64_t> dims);

  int ndim() const { return static_cast<int>(dims_.size()); }
  // Product of the dimensions (1 for a scalar shape).
  std::int64_t numel() const;
  // Negative indices count from the back; throws mb::InvalidArgument when out of range.
  std::int64_t operator[](int axis) const;
  std::int64_t& at(int axis);
  const std::vector<std::int64_t>& dims() const { return dims_; }
  // Row-major contiguous strides, in elements.
  std::vector<std::int64_t> contiguous_strides() const;
  // The same shape with the first dimension replaced (for micro-batch slices).
  Shape with_batch(std::int64_t batch) const;

  bool operator==(const Shape& other) const { return dims_ == other.dims_; }
  bool operator!=(const Shape& other) const { return dims_ != other.dims_; }
  std::string to_string() const;  // "[2, 3, 28, 28]"

 private:
  std::vector<std::int64_t> dims_;
};

}  // namespace mb
