// Version and build information, as `microbatch --version` prints it.
#pragma once

#include <string>

namespace mb {

const char* version();
// Multi-line: version, build type, CUDA on/off with cuDNN and cuBLAS versions, BLAS, and
// the devices visible now (or why none is).
std::string build_info();

}  // namespace mb
