// oneDNN convolutions over fixed sample chunks (kernels/cpu/conv_onednn.h).
#include "kernels/cpu/conv_onednn.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/error.h"

#if MB_WITH_ONEDNN
#include <omp.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "runtime/allocator.h"
#include "runtime/allocator_registry.h"
#endif

namespace mb::cpu {
namespace {

CpuConvPath initial_path() {
  const char* env = std::getenv("MB_CPU_CONV");
  if (env != nullptr && std::strcmp(env, "reference") == 0) return CpuConvPath::Reference;
  return onednn_built() ? CpuConvPath::OneDnn : CpuConvPath::Reference;
}

std::atomic<std::int64_t> runs{0};

CpuConvPath& path_setting() {
  static CpuConvPath path = initial_path();
  return path;
}

}  // namespace

bool onednn_built() {
  return MB_WITH_ONEDNN != 0;
}

std::int64_t onednn_conv_runs() {
  return runs.load();
}

CpuConvPath cpu_conv_path() {
  return path_setting();
}

void set_cpu_conv_path(CpuConvPath path) {
  if (path == CpuConvPath::OneDnn && !onednn_built()) {
    MB_THROW(InvalidArgument,
             "the oneDNN convolution path is not in this build. Fix: install libdnnl-dev and "
             "rebuild (cmake finds it), or use the reference path");
  }
  path_setting() = path;
}

#if !MB_WITH_ONEDNN

bool onednn_conv2d_forward(const Stream&, const ConvGeometry&, const float*, const float*, float*,
                           GradientMode) {
  return false;
}
bool onednn_conv2d_backward_data(const Stream&, const ConvGeometry&, const float*, const float*,
                                 float*, GradientMode) {
  return false;
}
bool onednn_conv2d_backward_filter(const Stream&, const ConvGeometry&, const float*, const float*,
                                   float*, GradientMode, std::int64_t) {
  return false;
}

#else

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine instance(dnnl::engine::kind::cpu, 0);
  return instance;
}

enum class Op { Forward, BackwardData, BackwardFilter };

// The primitives of one direction for one geometry at `samples` per chunk, single-threaded
// (each chunk runs on one of our threads), with the reorders between our NCHW / OIHW
// tensors and the layouts the primitive chose.
struct Plan {
  memory::desc src_plain, weights_plain, dst_plain;  // NCHW x, (G)OIHW w, NCHW y
  memory::desc src, weights, dst;                    // the primitive's
  dnnl::primitive conv;
  std::size_t scratch_bytes = 0;
  // Into the primitive's layout: x (forward and filter), w (forward and data), dy (data and
  // filter). Out of it: y or dx (overwrite, accumulate), dw (overwrite, accumulate).
  dnnl::reorder src_in, weights_in, dst_in, src_out, src_out_add, weights_out, weights_out_add,
      dst_out, dst_out_add;
};

memory::dims dims_of(std::initializer_list<std::int64_t> values) {
  return memory::dims(values.begin(), values.end());
}

// Runs `make` with OpenMP (and so oneDNN) seeing one thread: a primitive created so plans
// its work for one thread, whatever the process's thread count, and runs alone on the
// thread that executes it.
template <typename Make>
auto single_threaded(Make&& make) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  try {
    auto result = make();
    omp_set_num_threads(threads);
    return result;
  } catch (...) {
    omp_set_num_threads(threads);
    throw;
  }
}

dnnl::reorder make_reorder(const memory::desc& from, const memory::desc& to, bool add) {
  dnnl::primitive_attr attr;
  if (add) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::reorder(dnnl::reorder::primitive_desc(engine(), from, engine(), to, attr));
}

std::shared_ptr<Plan> make_plan(Op op, const ConvGeometry& g, std::int64_t samples) {
  auto plan = std::make_shared<Plan>();
  const memory::dims src_dims = dims_of({samples, g.in_channels, g.in_h, g.in_w});
  const memory::dims dst_dims = dims_of({samples, g.out_channels, g.out_h(), g.out_w()});
  const bool grouped = g.groups > 1;
  const memory::dims weight_dims =
      grouped ? dims_of({g.groups, g.out_channels / g.groups, g.in_channels / g.groups, g.kernel_h,
                         g.kernel_w})
              : dims_of({g.out_channels, g.in_channels, g.kernel_h, g.kernel_w});
  plan->src_plain = memory::desc(src_dims, Dt::f32, Tag::nchw);
  plan->dst_plain = memory::desc(dst_dims, Dt::f32, Tag::nchw);
  plan->weights_plain = memory::desc(weight_dims, Dt::f32, grouped ? Tag::goihw : Tag::oihw);
  const memory::desc src_any(src_dims, Dt::f32, Tag::any);
  const memory::desc dst_any(dst_dims, Dt::f32, Tag::any);
  const memory::desc weights_any(weight_dims, Dt::f32, Tag::any);
  const memory::dims strides = dims_of({g.stride, g.stride});
  const memory::dims dilates = dims_of({g.dilation - 1, g.dilation - 1});
  const memory::dims padding = dims_of({g.padding, g.padding});
  // Right padding as oneDNN counts it: what the output size leaves over on the far side.
  const std::int64_t pad_r_h =
      (g.out_h() - 1) * g.stride + (g.kernel_h - 1) * g.dilation + 1 - g.in_h - g.padding;
  const std::int64_t pad_r_w =
      (g.out_w() - 1) * g.stride + (g.kernel_w - 1) * g.dilation + 1 - g.in_w - g.padding;
  const memory::dims padding_r = dims_of({pad_r_h, pad_r_w});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  single_threaded([&] {
    using Fwd = dnnl::convolution_forward;
    const Fwd::primitive_desc forward(
        Fwd::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src_any,
                  weights_any, dst_any, strides, dilates, padding, padding_r),
        attr, engine());
    if (op == Op::Forward) {
      plan->src = forward.src_desc();
      plan->weights = forward.weights_desc();
      plan->dst = forward.dst_desc();
      plan->conv = Fwd(forward);
      plan->scratch_bytes = forward.scratchpad_desc().get_size();
    } else if (op == Op::BackwardData) {
      using Bwd = dnnl::convolution_backward_data;
      const Bwd::primitive_desc data(
          Bwd::desc(dnnl::algorithm::convolution_direct, src_any, weights_any, dst_any, strides,
                    dilates, padding, padding_r),
          attr, engine(), forward);
      plan->src = data.diff_src_desc();
      plan->weights = data.weights_desc();
      plan->dst = data.diff_dst_desc();
      plan->conv = Bwd(data);
      plan->scratch_bytes = data.scratchpad_desc().get_size();
    } else {
      using Bwd = dnnl::convolution_backward_weights;
      const Bwd::primitive_desc filter(
          Bwd::desc(dnnl::algorithm::convolution_direct, src_any, weights_any, dst_any, strides,
                    dilates, padding, padding_r),
          attr, engine(), forward);
      plan->src = filter.src_desc();
      plan->weights = filter.diff_weights_desc();
      plan->dst = filter.diff_dst_desc();
      plan->conv = Bwd(filter);
      plan->scratch_bytes = filter.scratchpad_desc().get_size();
    }
    plan->src_in = make_reorder(plan->src_plain, plan->src, false);
    plan->weights_in = make_reorder(plan->weights_plain, plan->weights, false);
    plan->dst_in = make_reorder(plan->dst_plain, plan->dst, false);
    plan->src_out = make_reorder(plan->src, plan->src_plain, false);
    plan->src_out_add = make_reorder(plan->src, plan->src_plain, true);
    plan->weights_out = make_reorder(plan->weights, plan->weights_plain, false);
    plan->weights_out_add = make_reorder(plan->weights, plan->weights_plain, true);
    plan->dst_out = make_reorder(plan->dst, plan->dst_plain, false);
    plan->dst_out_add = make_reorder(plan->dst, plan->dst_plain, true);
    return 0;
  });
  return plan;
}

// Plans by direction, geometry and chunk size, made once.
std::shared_ptr<Plan> plan_for(Op op, const ConvGeometry& g, std::int64_t samples) {
  using Key = std::tuple<int, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                         int, int, int, int, int, int>;
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<Plan> > plans;
  const Key key{static_cast<int>(op), samples,    g.in_channels, g.in_h,   g.in_w,
                g.out_channels,       g.kernel_h, g.kernel_w,    g.stride, g.padding,
                g.dilation,           g.groups};
  std::lock_guard<std::mutex> lock(mutex);
  auto found = plans.find(key);
  if (found != plans.end()) return found->second;
  std::shared_ptr<Plan> plan = make_plan(op, g, samples);
  plans.emplace(key, plan);
  return plan;
}

std::int64_t padded_channels(std::int64_t channels) {
  return (channels + 15) / 16 * 16;
}

// Bytes one sample takes in the blocked layouts (channels padded to 16), input and output.
std::int64_t blocked_sample_bytes(const ConvGeometry& g) {
  return 4 * (padded_channels(g.in_channels) * g.in_h * g.in_w +
              padded_channels(g.out_channels) * g.out_h() * g.out_w());
}

// Samples per chunk, from the geometry alone: as many (up to kOneDnnChunk) as fit in what
// the reference's column matrix takes per thread (at least 64 KiB), so the workspace stays
// the size the reference's was, small beside a micro-batch's activations.
std::int64_t workspace_budget(const ConvGeometry& g) {
  const std::int64_t columns =
      4 * (g.in_channels / g.groups) * g.kernel_h * g.kernel_w * g.out_h() * g.out_w();
  return std::max<std::int64_t>(columns, std::int64_t{64} << 10);
}

std::int64_t chunk_samples(const ConvGeometry& g) {
  return std::clamp<std::int64_t>(
      workspace_budget(g) / std::max<std::int64_t>(blocked_sample_bytes(g), 1), 1, kOneDnnChunk);
}

// Whether the oneDNN path takes this geometry: valid, with the weights' blocked copy and one
// sample's blocked operands each no larger than the reference's column matrix. Otherwise
// oneDNN's workspace would outgrow the reference's: a 3x3 convolution of 512 channels on
// 7 x 7 would copy 9 MB of weights for each call, and a strided 1x1 (which needs almost no
// columns) would take its operands' whole blocked copy. The reference's GEMMs are efficient
// on those and copy little; a larger fixed workspace would also move the step's peak.
bool takes(const ConvGeometry& g) {
  if (cpu_conv_path() != CpuConvPath::OneDnn || g.batch <= 0 || g.groups < 1 ||
      g.in_channels % g.groups != 0 || g.out_channels % g.groups != 0 || g.out_h() <= 0 ||
      g.out_w() <= 0 || g.stride < 1 || g.dilation < 1 || g.padding < 0) {
    return false;
  }
  const std::int64_t weight_bytes = 4 * padded_channels(g.out_channels) *
                                    padded_channels(g.in_channels / g.groups) * g.kernel_h *
                                    g.kernel_w;
  const std::int64_t budget = workspace_budget(g);
  return weight_bytes <= budget && blocked_sample_bytes(g) <= budget;
}

// Workspace from the CPU's allocator (tagged Workspace, so the arena counts it).
class Scratch {
 public:
  explicit Scratch(std::size_t bytes)
      : buffer_(bytes == 0
                    ? DeviceBuffer()
                    : DeviceBuffer(allocator_for(Device::cpu()), bytes, MemoryTag::Workspace)) {}
  char* get() const { return static_cast<char*>(buffer_.get()); }

 private:
  DeviceBuffer buffer_;
};

std::size_t rounded(std::size_t bytes) {
  return (bytes + 63) / 64 * 64;
}

// Runs `plan`'s primitive on `args`, with its scratchpad at `scratch` when it needs one.
void run(const Plan& plan, dnnl::stream& s, std::unordered_map<int, memory> args, char* scratch) {
  if (plan.scratch_bytes > 0) {
    const memory::desc desc({static_cast<memory::dim>(plan.scratch_bytes)}, Dt::u8, Tag::x);
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(desc, engine(), scratch));
  }
  plan.conv.execute(s, args);
}

// A tensor of our layout at `data` (const when oneDNN only reads it).
memory wrap(const memory::desc& desc, const float* data) {
  return memory(desc, engine(), const_cast<float*>(data));
}

// The primitive's layout of a tensor: `plain` itself when the layouts agree, else a copy
// reordered into `blocked`.
memory into_primitive(dnnl::stream& s, const dnnl::reorder& reorder, const memory::desc& desc,
                      const memory::desc& plain_desc, const float* plain, char* blocked) {
  if (desc == plain_desc) return wrap(plain_desc, plain);
  memory source = wrap(plain_desc, plain);
  memory target(desc, engine(), blocked);
  reorder.execute(s, source, target);
  return target;
}

// Per thread: room for a chunk's three operands in the primitive's layouts and scratchpad.
struct Room {
  std::size_t src = 0, weights = 0, dst = 0, scratch = 0;
  std::size_t total() const { return src + weights + dst + scratch; }
};

Room room_of(const Plan& plan) {
  Room room;
  room.src = rounded(plan.src.get_size());
  room.weights = rounded(plan.weights.get_size());
  room.dst = rounded(plan.dst.get_size());
  room.scratch = rounded(plan.scratch_bytes);
  return room;
}

// The chunks of a batch: [0, samples) in pieces of chunk_samples(g); their plans (full and
// last).
struct Chunking {
  Chunking(Op op, const ConvGeometry& g, std::int64_t samples)
      : size(chunk_samples(g)),
        count((samples + size - 1) / size),
        full(plan_for(op, g, std::min(samples, size))),
        last(samples % size == 0 || samples < size ? full : plan_for(op, g, samples % size)) {}
  const Plan& plan(std::int64_t chunk) const { return chunk + 1 == count ? *last : *full; }
  std::int64_t size;
  std::int64_t count;
  std::shared_ptr<Plan> full, last;
};

// The room a chunk of `size` samples takes: what a thread is given whatever the batch, so the
// workspace does not grow with it (a peak measured at two batch sizes sees the same).
Room full_chunk_room(Op op, const ConvGeometry& g) {
  return room_of(*plan_for(op, g, chunk_samples(g)));
}

// A thread's room for forward or backward-data: no weights (reordered once, shared), and no
// buffer for a tensor the primitive reads or writes in our layout (the result needs one when
// it is added onto the destination).
Room chunk_room(const ConvGeometry& g, const Chunking& chunking, Op op, GradientMode mode) {
  Room room;
  const bool add = mode == GradientMode::Accumulate;
  const std::shared_ptr<Plan> sized = plan_for(op, g, chunk_samples(g));
  for (const Plan* plan : {sized.get(), chunking.full.get(), chunking.last.get()}) {
    const Room need = room_of(*plan);
    if (plan->src != plan->src_plain || (op == Op::BackwardData && add)) {
      room.src = std::max(room.src, need.src);
    }
    if (plan->dst != plan->dst_plain || (op == Op::Forward && add)) {
      room.dst = std::max(room.dst, need.dst);
    }
    room.scratch = std::max(room.scratch, need.scratch);
  }
  return room;
}

// The weights in each chunk plan's layout (the two plans may choose different ones).
class Weights {
 public:
  Weights(const Chunking& chunking, const float* w) {
    dnnl::stream s(engine());
    const Plan& full = *chunking.full;
    const Plan& last = *chunking.last;
    full_buffer_ =
        Scratch(full.weights == full.weights_plain ? 0 : rounded(full.weights.get_size()));
    full_ =
        into_primitive(s, full.weights_in, full.weights, full.weights_plain, w, full_buffer_.get());
    last_ = full_;
    if (&full != &last && last.weights != full.weights) {
      last_buffer_ =
          Scratch(last.weights == last.weights_plain ? 0 : rounded(last.weights.get_size()));
      last_ = into_primitive(s, last.weights_in, last.weights, last.weights_plain, w,
                             last_buffer_.get());
    }
    s.wait();
  }
  const memory& of(const Chunking& chunking, std::int64_t chunk) const {
    return chunk + 1 == chunking.count ? last_ : full_;
  }

 private:
  Scratch full_buffer_{0}, last_buffer_{0};
  memory full_, last_;
};

// Forward (x -> y) and backward-data (dy -> dx): the same chunked run with the sides
// swapped. A chunk's src-side buffer is at the start of its thread's room, its dst-side one
// after it.
bool chunked(Op op, const ConvGeometry& g, const float* w, const float* in, float* out,
             GradientMode mode) {
  if (!takes(g)) return false;
  const bool forward = op == Op::Forward;
  const Chunking chunking(op, g, g.batch);
  const Weights weights(chunking, w);
  const Room room = chunk_room(g, chunking, op, mode);
  const Scratch per_thread(room.total() * static_cast<std::size_t>(omp_get_max_threads()));
  const std::int64_t x_sample = g.in_channels * g.in_h * g.in_w;
  const std::int64_t y_sample = g.out_channels * g.out_h() * g.out_w();
  const std::int64_t in_sample = forward ? x_sample : y_sample;
  const std::int64_t out_sample = forward ? y_sample : x_sample;
  parallel_for(chunking.count, g.batch * (x_sample + y_sample) * 8, [&](std::int64_t c) {
    const Plan& plan = chunking.plan(c);
    char* mine = per_thread.get() + room.total() * static_cast<std::size_t>(omp_get_thread_num());
    char* src_side = mine;
    char* dst_side = mine + room.src + room.weights;
    dnnl::stream s(engine());
    const std::int64_t begin = c * chunking.size;
    const memory input = forward ? into_primitive(s, plan.src_in, plan.src, plan.src_plain,
                                                  in + begin * in_sample, src_side)
                                 : into_primitive(s, plan.dst_in, plan.dst, plan.dst_plain,
                                                  in + begin * in_sample, dst_side);
    const memory::desc& out_desc = forward ? plan.dst : plan.src;
    const memory::desc& out_plain = forward ? plan.dst_plain : plan.src_plain;
    float* out_chunk = out + begin * out_sample;
    const bool direct = out_desc == out_plain && mode == GradientMode::Overwrite;
    memory output = direct ? wrap(out_plain, out_chunk)
                           : memory(out_desc, engine(), forward ? dst_side : src_side);
    run(plan, s,
        {{forward ? DNNL_ARG_SRC : DNNL_ARG_DIFF_DST, input},
         {DNNL_ARG_WEIGHTS, weights.of(chunking, c)},
         {forward ? DNNL_ARG_DST : DNNL_ARG_DIFF_SRC, output}},
        mine + room.src + room.weights + room.dst);
    if (!direct) {
      memory plain = wrap(out_plain, out_chunk);
      const bool add = mode == GradientMode::Accumulate;
      const dnnl::reorder& back = forward ? (add ? plan.dst_out_add : plan.dst_out)
                                          : (add ? plan.src_out_add : plan.src_out);
      back.execute(s, output, plain);
    }
    s.wait();
  });
  ++runs;
  return true;
}

}  // namespace

bool onednn_conv2d_forward(const Stream&, const ConvGeometry& g, const float* x, const float* w,
                           float* y, GradientMode mode) {
  return chunked(Op::Forward, g, w, x, y, mode);
}

bool onednn_conv2d_backward_data(const Stream&, const ConvGeometry& g, const float* w,
                                 const float* dy, float* dx, GradientMode mode) {
  return chunked(Op::BackwardData, g, w, dy, dx, mode);
}

bool onednn_conv2d_backward_filter(const Stream&, const ConvGeometry& g, const float* x,
                                   const float* dy, float* dw, GradientMode mode,
                                   std::int64_t chunks) {
  // One chunk would leave every other thread idle: the reference parallelizes its GEMMs.
  if (!takes(g) || chunks < 2) return false;
  // The reference's chunks (kernels/cpu/conv.cpp): [batch c / chunks, batch (c+1) / chunks),
  // each cut into pieces of at most chunk_samples(g) samples.
  const std::int64_t longest = (g.batch + chunks - 1) / chunks;
  const std::int64_t piece = std::min(longest, chunk_samples(g));
  const std::shared_ptr<Plan> piece_plan = plan_for(Op::BackwardFilter, g, piece);
  const Room room = full_chunk_room(Op::BackwardFilter, g);
  const std::int64_t weight_elements =
      g.out_channels * (g.in_channels / g.groups) * g.kernel_h * g.kernel_w;
  // Partial c: the filter gradient of chunk c's samples, summed over its pieces in order.
  const Scratch partials(static_cast<std::size_t>(chunks * weight_elements) * sizeof(float));
  float* partial = reinterpret_cast<float*>(partials.get());
  const Scratch per_thread(room.total() * static_cast<std::size_t>(omp_get_max_threads()));
  const std::int64_t x_sample = g.in_channels * g.in_h * g.in_w;
  const std::int64_t y_sample = g.out_channels * g.out_h() * g.out_w();
  parallel_for(chunks, g.batch * (x_sample + y_sample) * 8, [&](std::int64_t c) {
    char* mine = per_thread.get() + room.total() * static_cast<std::size_t>(omp_get_thread_num());
    dnnl::stream s(engine());
    const std::int64_t chunk_begin = g.batch * c / chunks;
    const std::int64_t chunk_end = g.batch * (c + 1) / chunks;
    float* out = partial + c * weight_elements;
    for (std::int64_t begin = chunk_begin; begin < chunk_end; begin += piece) {
      const std::int64_t samples = std::min(piece, chunk_end - begin);
      const Plan& plan = samples == piece ? *piece_plan : *plan_for(Op::BackwardFilter, g, samples);
      const Room need = room_of(plan);
      Scratch extra(need.total() > room.total() ? need.total() : 0);
      char* at = extra.get() != nullptr ? extra.get() : mine;
      const Room& layout = extra.get() != nullptr ? need : room;
      const memory src =
          into_primitive(s, plan.src_in, plan.src, plan.src_plain, x + begin * x_sample, at);
      const memory diff_dst =
          into_primitive(s, plan.dst_in, plan.dst, plan.dst_plain, dy + begin * y_sample,
                         at + layout.src + layout.weights);
      const bool first = begin == chunk_begin;
      const bool direct = plan.weights == plan.weights_plain && first;
      memory diff_weights =
          direct ? wrap(plan.weights_plain, out) : memory(plan.weights, engine(), at + layout.src);
      run(plan, s,
          {{DNNL_ARG_SRC, src},
           {DNNL_ARG_DIFF_DST, diff_dst},
           {DNNL_ARG_DIFF_WEIGHTS, diff_weights}},
          at + layout.src + layout.weights + layout.dst);
      if (!direct) {
        memory plain = wrap(plan.weights_plain, out);
        (first ? plan.weights_out : plan.weights_out_add).execute(s, diff_weights, plain);
      }
      s.wait();
    }
  });
  // dw (+)= partial 0 + partial 1 + ..., in chunk order for every element.
  parallel_elements(weight_elements, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      float sum = mode == GradientMode::Accumulate ? dw[i] : 0.0f;
      for (std::int64_t c = 0; c < chunks; ++c) sum += partial[c * weight_elements + i];
      dw[i] = sum;
    }
  });
  ++runs;
  return true;
}

#endif  // MB_WITH_ONEDNN

}  // namespace mb::cpu
