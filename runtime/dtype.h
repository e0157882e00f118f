// Element types. Training runs in float32; float16 and bfloat16 are named (with their
// sizes) for storage and future mixed precision; int32 holds labels.
#pragma once

#include <cstddef>
#include <string>

namespace mb {

enum class DType { Float32, Float16, BFloat16, Int32, UInt8 };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "float32", ...
// Parses the names dtype_name() returns; throws mb::InvalidArgument otherwise.
DType parse_dtype(const std::string& name);

}  // namespace mb
