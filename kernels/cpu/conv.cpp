// Convolution on the CPU: im2col / col2im and one GEMM per sample and group.
#include "kernels/cpu/conv.h"

#include <algorithm>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/im2col.h"
#include "runtime/allocator.h"
#include "runtime/allocator_registry.h"
#include "runtime/error.h"

namespace mb::cpu {
namespace {

// The sizes every direction needs, derived once from the geometry.
struct Lowering {
  explicit Lowering(const ConvGeometry& g)
      : window{g.kernel_h, g.kernel_w, g.stride,   g.stride,
               g.padding,  g.padding,  g.dilation, g.dilation},
        group_in(g.in_channels / g.groups),
        group_out(g.out_channels / g.groups),
        patch(group_in * g.kernel_h * g.kernel_w),
        in_area(g.in_h * g.in_w),
        out_area(g.out_h() * g.out_w()),
        pointwise(g.kernel_h == 1 && g.kernel_w == 1 && g.stride == 1 && g.padding == 0) {
    MB_CHECK(g.batch >= 0 && g.in_channels > 0 && g.out_channels > 0 && g.groups > 0 &&
                 g.in_channels % g.groups == 0 && g.out_channels % g.groups == 0 && g.out_h() > 0 &&
                 g.out_w() > 0,
             "convolution: invalid geometry ", g.to_string());
  }
  ConvWindow window;
  std::int64_t group_in, group_out, patch, in_area, out_area;
  bool pointwise;
};

// The column matrix of one (sample, group): [patch, out_area], from the device's allocator.
DeviceBuffer column_workspace(const Stream& stream, const Lowering& l) {
  if (l.pointwise) return DeviceBuffer();
  return DeviceBuffer(allocator_for(stream.device()),
                      static_cast<std::size_t>(l.patch * l.out_area) * sizeof(float),
                      MemoryTag::Workspace);
}

void zero(float* data, std::int64_t count) {
  std::fill(data, data + count, 0.0f);
}

}  // namespace

void conv2d_forward(const Stream& stream, const ConvGeometry& g, const float* x, const float* w,
                    float* y, GradientMode mode) {
  const Lowering l(g);
  DeviceBuffer workspace = column_workspace(stream, l);
  auto* columns = static_cast<float*>(workspace.get());
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (int group = 0; group < g.groups; ++group) {
      const float* x_group = x + (n * g.in_channels + group * l.group_in) * l.in_area;
      const float* cols = x_group;
      if (!l.pointwise) {
        im2col(x_group, l.group_in, g.in_h, g.in_w, l.window, columns);
        cols = columns;
      }
      // y_g [group_out, out_area] (+)= W_g [group_out, patch] x cols [patch, out_area]
      gemm(stream, false, false, l.group_out, l.out_area, l.patch,
           w + group * l.group_out * l.patch, l.patch, cols, l.out_area,
           y + (n * g.out_channels + group * l.group_out) * l.out_area, l.out_area, mode);
    }
  }
}

void conv2d_backward_data(const Stream& stream, const ConvGeometry& g, const float* w,
                          const float* dy, float* dx, GradientMode mode) {
  const Lowering l(g);
  DeviceBuffer workspace = column_workspace(stream, l);
  auto* columns = static_cast<float*>(workspace.get());
  // col2im adds onto the image, so overwriting starts from zero.
  if (!l.pointwise && mode == GradientMode::Overwrite)
    zero(dx, g.batch * g.in_channels * l.in_area);
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (int group = 0; group < g.groups; ++group) {
      const float* dy_group = dy + (n * g.out_channels + group * l.group_out) * l.out_area;
      const float* w_group = w + group * l.group_out * l.patch;
      float* dx_group = dx + (n * g.in_channels + group * l.group_in) * l.in_area;
      // dcols [patch, out_area] = W_g^T [patch, group_out] x dy_g [group_out, out_area];
      // dx_g (+)= col2im(dcols)
      if (l.pointwise) {
        gemm(stream, true, false, l.patch, l.out_area, l.group_out, w_group, l.patch, dy_group,
             l.out_area, dx_group, l.out_area, mode);
      } else {
        gemm(stream, true, false, l.patch, l.out_area, l.group_out, w_group, l.patch, dy_group,
             l.out_area, columns, l.out_area, GradientMode::Overwrite);
        col2im(columns, l.group_in, g.in_h, g.in_w, l.window, dx_group);
      }
    }
  }
}

void conv2d_backward_filter(const Stream& stream, const ConvGeometry& g, const float* x,
                            const float* dy, float* dw, GradientMode mode) {
  const Lowering l(g);
  DeviceBuffer workspace = column_workspace(stream, l);
  auto* columns = static_cast<float*>(workspace.get());
  // Every (sample, group) adds its share, so overwriting starts from zero.
  if (mode == GradientMode::Overwrite) zero(dw, g.out_channels * l.patch);
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (int group = 0; group < g.groups; ++group) {
      const float* x_group = x + (n * g.in_channels + group * l.group_in) * l.in_area;
      const float* dy_group = dy + (n * g.out_channels + group * l.group_out) * l.out_area;
      const float* cols = x_group;
      if (!l.pointwise) {
        im2col(x_group, l.group_in, g.in_h, g.in_w, l.window, columns);
        cols = columns;
      }
      // dW_g [group_out, patch] += dy_g [group_out, out_area] x cols^T [out_area, patch]
      gemm(stream, false, true, l.group_out, l.patch, l.out_area, dy_group, l.out_area, cols,
           l.out_area, dw + group * l.group_out * l.patch, l.patch, GradientMode::Accumulate);
    }
  }
}

}  // namespace mb::cpu
