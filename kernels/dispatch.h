// The one place that chooses a backend.
//
// Every op in kernels/ is declared three times with one signature: the public op in
// kernels/<op>.h (what layers and the engine call), its CPU twin in kernels/cpu/<op>.h (the
// reference, used by tests as the truth) and its CUDA twin in kernels/cuda/<op>.h. The
// public op's definition is MB_DISPATCH(stream, op, args...): the CUDA twin when the stream
// is on a CUDA device, the CPU twin otherwise. A build without the CUDA backend compiles no
// CUDA twin; asking it for CUDA work throws the single mb::CudaError of
// throw_cuda_not_built, which names the fix.
#pragma once

#include "runtime/device.h"
#include "runtime/stream.h"

#if MB_WITH_CUDA
#define MB_DISPATCH(stream, op, ...)                            \
  ((stream).is_cuda() ? ::mb::cuda::op((stream), ##__VA_ARGS__) \
                      : ::mb::cpu::op((stream), ##__VA_ARGS__))
#else
#define MB_DISPATCH(stream, op, ...)                                                       \
  ((stream).is_cuda() ? (::mb::throw_cuda_not_built(#op " on " + (stream).device().str()), \
                         ::mb::cpu::op((stream), ##__VA_ARGS__))                           \
                      : ::mb::cpu::op((stream), ##__VA_ARGS__))
#endif
