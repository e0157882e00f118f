// DType sizes and names.
#include "runtime/dtype.h"

#include "runtime/error.h"

namespace mb {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::Float32: return 4;
    case DType::Float16: return 2;
    case DType::BFloat16: return 2;
    case DType::Int32: return 4;
    case DType::UInt8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Int32: return "int32";
    case DType::UInt8: return "uint8";
  }
  return "unknown";
}

DType parse_dtype(const std::string& name) {
  for (DType dtype :
       {DType::Float32, DType::Float16, DType::BFloat16, DType::Int32, DType::UInt8}) {
    if (name == dtype_name(dtype)) return dtype;
  }
  MB_THROW(InvalidArgument, "unknown dtype '", name,
           "'. Fix: use one of float32, float16, bfloat16, int32, uint8");
}

}  // namespace mb
