// The CPU convolution's fast path: oneDNN (Debian libdnnl-dev, the library PyTorch's CPU
// convolutions use) in its blocked layouts, with the im2col + GEMM path (kernels/cpu/conv.h)
// kept as the reference it is tested against (tests/kernels/conv_onednn_test.cpp).
//
// Tensors stay NCHW / OIHW. The batch is cut into chunks of a few samples (1 to
// kOneDnnChunk, from the geometry alone: what fits in the reference's column matrix),
// computed in parallel, each by single-threaded oneDNN primitives: a chunk is reordered into
// the primitive's layout, computed, and reordered back (adding onto the destination when
// accumulating). So the workspace is per thread and per chunk, about the reference's (it
// does not grow with the batch, and the planner's bytes per sample stay what the layers
// keep), and nothing depends on the thread count: the filter gradient is summed per fixed
// chunk of the reference (kernels/cpu/conv.cpp) into partials added in chunk order.
// Convolutions whose blocked weights would outgrow that workspace (wide, late layers) stay
// on the reference, whose GEMMs are efficient there.
//
// Which path runs: oneDNN when built with it (MB_WITH_ONEDNN) unless the environment says
// MB_CPU_CONV=reference or set_cpu_conv_path() chose the reference; geometries oneDNN
// does not take here fall back to the reference.
#pragma once

#include <cstdint>

#include "kernels/conv.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cpu {

enum class CpuConvPath { Reference, OneDnn };

// The path the CPU convolutions take (OneDnn only when built with it).
CpuConvPath cpu_conv_path();
// Chooses it; OneDnn without oneDNN in the build throws InvalidArgument naming the fix.
void set_cpu_conv_path(CpuConvPath path);
bool onednn_built();

inline constexpr std::int64_t kOneDnnChunk = 8;

// Ops the oneDNN path has run in this process (tests check that it really ran).
std::int64_t onednn_conv_runs();

// Each returns false (having done nothing) when the oneDNN path is off or does not take
// this geometry; the caller then runs the reference.
bool onednn_conv2d_forward(const Stream& stream, const ConvGeometry& geometry, const float* x,
                           const float* w, float* y, GradientMode mode);
bool onednn_conv2d_backward_data(const Stream& stream, const ConvGeometry& geometry, const float* w,
                                 const float* dy, float* dx, GradientMode mode);
// `chunks`: the reference's fixed filter-gradient chunks for this batch and weight.
bool onednn_conv2d_backward_filter(const Stream& stream, const ConvGeometry& geometry,
                                   const float* x, const float* dy, float* dw, GradientMode mode,
                                   std::int64_t chunks);

}  // namespace mb::cpu
