// Convolution on the CPU: im2col / col2im and one GEMM per sample and group, samples in
// parallel (kernels/cpu/parallel.h: the arithmetic never depends on the thread count).
#include "kernels/cpu/conv.h"

#include <omp.h>

#include <algorithm>

#include "kernels/cpu/conv_onednn.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/im2col.h"
#include "kernels/cpu/parallel.h"
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

// One column matrix [patch, out_area] per thread, from the device's allocator (none for a
// pointwise convolution, whose input already is its column matrix).
class Columns {
 public:
  Columns(const Stream& stream, const Lowering& l) : size_(l.pointwise ? 0 : l.patch * l.out_area) {
    if (size_ == 0) return;
    buffer_ = DeviceBuffer(allocator_for(stream.device()),
                           static_cast<std::size_t>(size_ * omp_get_max_threads()) * sizeof(float),
                           MemoryTag::Workspace);
  }
  // The calling thread's matrix.
  float* mine() const { return static_cast<float*>(buffer_.get()) + size_ * omp_get_thread_num(); }

 private:
  std::int64_t size_;
  DeviceBuffer buffer_;
};

void zero(float* data, std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    std::fill(data + begin, data + end, 0.0f);
  });
}

// Work of one sample in elements touched by its GEMMs, for parallel_for's threshold.
std::int64_t sample_work(const ConvGeometry& g, const Lowering& l) {
  return g.out_channels * l.patch * l.out_area;
}

}  // namespace

// Samples in parallel (each its own im2col and single-threaded GEMMs); a sample's output
// depends on that sample only, so no thread count changes a bit.
void conv2d_forward(const Stream& stream, const ConvGeometry& g, const float* x, const float* w,
                    float* y, GradientMode mode) {
  ensure_threads_configured();
  if (onednn_conv2d_forward(stream, g, x, w, y, mode)) return;
  const Lowering l(g);
  const Columns columns(stream, l);
  parallel_for(g.batch, g.batch * sample_work(g, l), [&](std::int64_t n) {
    float* cols_buffer = columns.mine();
    for (int group = 0; group < g.groups; ++group) {
      const float* x_group = x + (n * g.in_channels + group * l.group_in) * l.in_area;
      const float* cols = x_group;
      if (!l.pointwise) {
        im2col(x_group, l.group_in, g.in_h, g.in_w, l.window, cols_buffer);
        cols = cols_buffer;
      }
      // y_g [group_out, out_area] (+)= W_g [group_out, patch] x cols [patch, out_area]
      gemm(stream, false, false, l.group_out, l.out_area, l.patch,
           w + group * l.group_out * l.patch, l.patch, cols, l.out_area,
           y + (n * g.out_channels + group * l.group_out) * l.out_area, l.out_area, mode);
    }
  });
}

void conv2d_backward_data(const Stream& stream, const ConvGeometry& g, const float* w,
                          const float* dy, float* dx, GradientMode mode) {
  ensure_threads_configured();
  if (onednn_conv2d_backward_data(stream, g, w, dy, dx, mode)) return;
  const Lowering l(g);
  const Columns columns(stream, l);
  // col2im adds onto the image, so overwriting starts from zero.
  if (!l.pointwise && mode == GradientMode::Overwrite)
    zero(dx, g.batch * g.in_channels * l.in_area);
  parallel_for(g.batch, g.batch * sample_work(g, l), [&](std::int64_t n) {
    float* cols_buffer = columns.mine();
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
             l.out_area, cols_buffer, l.out_area, GradientMode::Overwrite);
        col2im(cols_buffer, l.group_in, g.in_h, g.in_w, l.window, dx_group);
      }
    }
  });
}

namespace {

// The filter gradient sums over samples. They are cut into at most kFilterChunks fixed
// ranges (by the batch size and the weight's size only), each summed in sample order into
// its own partial, and the partials are added in chunk order: the same arithmetic for any
// thread count. Partials stay under kFilterPartialBytes; a large weight gets fewer chunks
// and its GEMMs parallelize by blocks instead (kernels/cpu/gemm.cpp).
constexpr std::int64_t kFilterChunks = 8;
constexpr std::int64_t kFilterPartialBytes = std::int64_t{2} << 20;

std::int64_t filter_chunks(std::int64_t batch, std::int64_t weight_elements) {
  const std::int64_t by_memory =
      kFilterPartialBytes / std::max<std::int64_t>(weight_elements * 4, 1);
  return std::max<std::int64_t>(1, std::min({batch, kFilterChunks, by_memory}));
}

}  // namespace

void conv2d_backward_filter(const Stream& stream, const ConvGeometry& g, const float* x,
                            const float* dy, float* dw, GradientMode mode) {
  ensure_threads_configured();
  const Lowering l(g);
  const std::int64_t weight_elements = g.out_channels * l.patch;
  const std::int64_t chunks = filter_chunks(g.batch, weight_elements);
  if (onednn_conv2d_backward_filter(stream, g, x, dy, dw, mode, chunks)) return;
  const Columns columns(stream, l);
  // Chunk 0 sums into dw itself when overwriting, and a single chunk adds straight onto it
  // when accumulating: no partial is needed for one chunk.
  const bool in_place = chunks == 1 && mode == GradientMode::Accumulate;
  const bool direct = mode == GradientMode::Overwrite || in_place;
  const std::int64_t partial_count = direct ? chunks - 1 : chunks;
  DeviceBuffer partial_buffer;
  if (partial_count > 0) {
    partial_buffer =
        DeviceBuffer(allocator_for(stream.device()),
                     static_cast<std::size_t>(partial_count * weight_elements) * sizeof(float),
                     MemoryTag::Workspace);
  }
  auto* partials = static_cast<float*>(partial_buffer.get());
  const auto target = [&](std::int64_t chunk) {
    return direct ? (chunk == 0 ? dw : partials + (chunk - 1) * weight_elements)
                  : partials + chunk * weight_elements;
  };
  const auto chunk_samples = [&](std::int64_t chunk, std::int64_t& first, std::int64_t& last) {
    first = g.batch * chunk / chunks;
    last = g.batch * (chunk + 1) / chunks;
  };
  parallel_for(chunks, g.batch * sample_work(g, l), [&](std::int64_t chunk) {
    float* sum = target(chunk);
    if (!in_place) std::fill(sum, sum + weight_elements, 0.0f);
    float* cols_buffer = columns.mine();
    std::int64_t first = 0, last = 0;
    chunk_samples(chunk, first, last);
    for (std::int64_t n = first; n < last; ++n) {
      for (int group = 0; group < g.groups; ++group) {
        const float* x_group = x + (n * g.in_channels + group * l.group_in) * l.in_area;
        const float* dy_group = dy + (n * g.out_channels + group * l.group_out) * l.out_area;
        const float* cols = x_group;
        if (!l.pointwise) {
          im2col(x_group, l.group_in, g.in_h, g.in_w, l.window, cols_buffer);
          cols = cols_buffer;
        }
        // dW_g [group_out, patch] += dy_g [group_out, out_area] x cols^T [out_area, patch]
        gemm(stream, false, true, l.group_out, l.patch, l.out_area, dy_group, l.out_area, cols,
             l.out_area, sum + group * l.group_out * l.patch, l.patch, GradientMode::Accumulate);
      }
    }
  });
  if (chunks == 1) return;
  // dw (+)= partial sums in chunk order, elementwise.
  parallel_elements(weight_elements, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      float total = direct ? dw[i] : target(0)[i];
      for (std::int64_t chunk = 1; chunk < chunks; ++chunk) total += target(chunk)[i];
      dw[i] = direct ? total : dw[i] + total;
    }
  });
}

}  // namespace mb::cpu
