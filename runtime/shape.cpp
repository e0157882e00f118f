// Shape arithmetic and printing.
#include "runtime/shape.h"

#include <sstream>

#include "runtime/error.h"

namespace mb {

Shape::Shape(std::initializer_list<std::int64_t> dims) : Shape(std::vector<std::int64_t>(dims)) {}

Shape::Shape(std::vector<std::int64_t> dims) : dims_(std::move(dims)) {
  // Note: checked here once, so numel() and every size derived from it cannot overflow,
  // whether the dimensions come from code, a flag or a file.
  std::int64_t n = 1;
  for (std::int64_t d : dims_) {
    MB_CHECK(d >= 0, "negative dimension in shape ", to_string());
    MB_CHECK(!__builtin_mul_overflow(n, d, &n), "shape ", to_string(),
             " has more than 2^63 elements");
  }
}

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : dims_) n *= d;
  return n;
}

std::int64_t Shape::operator[](int axis) const {
  int resolved = axis < 0 ? axis + ndim() : axis;
  MB_CHECK(resolved >= 0 && resolved < ndim(), "axis ", axis, " out of range for shape ",
           to_string());
  return dims_[resolved];
}

std::int64_t& Shape::at(int axis) {
  int resolved = axis < 0 ? axis + ndim() : axis;
  MB_CHECK(resolved >= 0 && resolved < ndim(), "axis ", axis, " out of range for shape ",
           to_string());
  return dims_[resolved];
}

std::vector<std::int64_t> Shape::contiguous_strides() const {
  std::vector<std::int64_t> strides(dims_.size(), 1);
  for (int i = ndim() - 2; i >= 0; --i) strides[i] = strides[i + 1] * dims_[i + 1];
  return strides;
}

Shape Shape::with_batch(std::int64_t batch) const {
  MB_CHECK(ndim() >= 1, "with_batch on a scalar shape");
  std::vector<std::int64_t> dims = dims_;
  dims[0] = batch;
  return Shape(dims);
}

std::string Shape::to_string() const {
  std::ostringstream out;
  out << "[";
  for (std::size_t i = 0; i < dims_.size(); ++i) out << (i ? ", " : "") << dims_[i];
  out << "]";
  return out.str();
}

}  // namespace mb
