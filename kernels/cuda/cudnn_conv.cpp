// cuDNN convolutions with per-shape descriptor and algorithm caches and the cuDNN bias ops, on
// the op's stream. See conv.h and channel_bias.h.
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "kernels/cuda/channel_bias.h"
#include "kernels/cuda/conv.h"
#include "kernels/cuda/library_handles.h"
#include "runtime/allocator.h"
#include "runtime/allocator_registry.h"
#include "runtime/context.h"
#include "runtime/error.h"

namespace mb::cuda {
namespace {

// Owns one cuDNN descriptor: created in the constructor, destroyed (without throwing) in
// the destructor, also when a constructor of the classes below throws after creation.
template <typename Handle, cudnnStatus_t (*Create)(Handle*), cudnnStatus_t (*Destroy)(Handle)>
class DescriptorHandle {
 public:
  DescriptorHandle() { MB_CUDNN_CHECK(Create(&desc_)); }
  ~DescriptorHandle() { Destroy(desc_); }
  DescriptorHandle(const DescriptorHandle&) = delete;
  DescriptorHandle& operator=(const DescriptorHandle&) = delete;
  Handle get() const { return desc_; }

 private:
  Handle desc_ = nullptr;
};

class TensorDescriptor
    : public DescriptorHandle<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor,
                              cudnnDestroyTensorDescriptor> {
 public:
  TensorDescriptor(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
    MB_CUDNN_CHECK(cudnnSetTensor4dDescriptor(get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                              to_int(n, "n"), to_int(c, "c"), to_int(h, "h"),
                                              to_int(w, "w")));
  }
};

class FilterDescriptor
    : public DescriptorHandle<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor,
                              cudnnDestroyFilterDescriptor> {
 public:
  explicit FilterDescriptor(const ConvGeometry& g) {
    MB_CUDNN_CHECK(cudnnSetFilter4dDescriptor(
        get(), CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, to_int(g.out_channels, "out_channels"),
        to_int(g.in_channels / g.groups, "in_channels"), g.kernel_h, g.kernel_w));
  }
};

class ConvolutionDescriptor
    : public DescriptorHandle<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                              cudnnDestroyConvolutionDescriptor> {
 public:
  explicit ConvolutionDescriptor(const ConvGeometry& g) {
    MB_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(get(), g.padding, g.padding, g.stride, g.stride,
                                                   g.dilation, g.dilation, CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
    MB_CUDNN_CHECK(cudnnSetConvolutionGroupCount(get(), g.groups));
  }
  void set_math(cudnnMathType_t math) { MB_CUDNN_CHECK(cudnnSetConvolutionMathType(get(), math)); }
};

// All descriptors of one convolution.
struct ConvDescriptors {
  explicit ConvDescriptors(const ConvGeometry& g)
      : x(g.batch, g.in_channels, g.in_h, g.in_w),
        y(g.batch, g.out_channels, g.out_h(), g.out_w()),
        w(g),
        conv(g) {}
  TensorDescriptor x;
  TensorDescriptor y;
  FilterDescriptor w;
  ConvolutionDescriptor conv;
};

enum class Direction { Forward, BackwardData, BackwardFilter };
const char* direction_name(Direction d) {
  switch (d) {
    case Direction::Forward: return "forward";
    case Direction::BackwardData: return "backward-data";
    case Direction::BackwardFilter: return "backward-filter";
  }
  return "?";
}

// A convolution's geometry on a device (its descriptors), and with the direction and math
// (its algorithm candidates). A layer's key leaves out the batch.
using GeometryKey = std::tuple<int, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                               std::int64_t, int, int, int, int, int, int>;
using AlgorithmKey = std::tuple<int, bool, bool, GeometryKey>;  // direction, tf32, deterministic

GeometryKey geometry_key(const Device& device, const ConvGeometry& g, bool with_batch) {
  return GeometryKey{device.index(), with_batch ? g.batch : 0,
                     g.in_channels,  g.in_h,
                     g.in_w,         g.out_channels,
                     g.kernel_h,     g.kernel_w,
                     g.stride,       g.padding,
                     g.dilation,     g.groups};
}

// The chosen algorithm (as int, for all three directions) and the math type to run it with.
struct AlgorithmChoice {
  int algorithm = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

// One of cuDNN's proposals for a shape: usable (it ran the heuristic successfully, its math is
// allowed, and in deterministic mode cuDNN marks it deterministic), in cuDNN's order.
struct Candidate {
  AlgorithmChoice choice;
  std::size_t workspace = 0;
};

// Note: what is cached per shape is the list of candidates, not one choice: the choice is the
// first candidate whose workspace fits the memory available at the call, so it follows the
// workspace limit (a choice cached when the arena was empty would not fit a full one). The
// descriptors are cached per geometry, so a call creates none.
struct Caches {
  std::mutex mutex;
  std::map<GeometryKey, std::unique_ptr<ConvDescriptors>> descriptors;
  std::map<AlgorithmKey, std::vector<Candidate>> candidates;
  // Deterministic mode: the algorithm each layer and direction runs at every batch size.
  std::map<AlgorithmKey, AlgorithmChoice> pinned;
};

Caches& caches() {
  static Caches* instance = new Caches();  // never destroyed: no cuDNN calls at exit
  return *instance;
}

ConvDescriptors& descriptors_for(const Device& device, const ConvGeometry& g) {
  Caches& c = caches();
  std::lock_guard<std::mutex> lock(c.mutex);
  std::unique_ptr<ConvDescriptors>& slot = c.descriptors[geometry_key(device, g, true)];
  if (slot == nullptr) slot = std::make_unique<ConvDescriptors>(g);
  return *slot;
}

bool uses_tensor_cores(cudnnMathType_t math) {
  return math == CUDNN_TENSOR_OP_MATH || math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

template <typename Perf>
std::vector<Candidate> usable(const Perf* perf, int count, bool tf32, bool deterministic) {
  std::vector<Candidate> out;
  for (int i = 0; i < count; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    if (!cudnn_math_allowed(perf[i].mathType, tf32)) continue;
    if (deterministic && perf[i].determinism != CUDNN_DETERMINISTIC) continue;
    out.push_back(Candidate{
        AlgorithmChoice{static_cast<int>(perf[i].algo), tf32 ? perf[i].mathType : CUDNN_FMA_MATH},
        perf[i].memory});
  }
  return out;
}

std::vector<Candidate> query_candidates(const Stream& stream, Direction direction, bool tf32,
                                        bool deterministic, ConvDescriptors& d) {
  // The descriptor's math type bounds what the heuristic may propose.
  d.conv.set_math(tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH);
  cudnnHandle_t handle = cudnn_handle(stream);
  int returned = 0;
  switch (direction) {
    case Direction::Forward: {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      MB_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
          handle, d.x.get(), d.w.get(), d.conv.get(), d.y.get(), CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
          &returned, perf));
      return usable(perf, returned, tf32, deterministic);
    }
    case Direction::BackwardData: {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      MB_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
          handle, d.w.get(), d.y.get(), d.conv.get(), d.x.get(),
          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf));
      return usable(perf, returned, tf32, deterministic);
    }
    case Direction::BackwardFilter: {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      MB_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
          handle, d.x.get(), d.y.get(), d.conv.get(), d.w.get(),
          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, perf));
      return usable(perf, returned, tf32, deterministic);
    }
  }
  return {};
}

[[noreturn]] void throw_workspace(std::size_t bytes, const ConvGeometry& g, Direction direction,
                                  Allocator& allocator, const char* which) {
  throw OutOfMemory(
      bytes, allocator.report(),
      detail::concat("cuDNN ", direction_name(direction), " workspace for ", g.to_string(), which),
      __FILE__, __LINE__, "Fix: use a smaller micro-batch");
}

// The first (fastest by cuDNN's heuristic) candidate whose workspace fits the memory available
// now; in deterministic mode the layer's pinned algorithm, the first one chosen for it.
AlgorithmChoice choose(const Stream& stream, Direction direction, const ConvGeometry& g,
                       ConvDescriptors& d) {
  const Device device = stream.device();
  const Context& context = Context::get(device);
  const bool tf32 = context.allow_tf32();
  const bool deterministic = context.deterministic();
  const AlgorithmKey shape_key{static_cast<int>(direction), tf32, deterministic,
                               geometry_key(device, g, true)};
  const AlgorithmKey layer_key{static_cast<int>(direction), tf32, deterministic,
                               geometry_key(device, g, false)};
  Caches& c = caches();
  std::vector<Candidate> candidates;
  bool cached = false;
  std::optional<AlgorithmChoice> pinned;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto found = c.candidates.find(shape_key);
    if (found != c.candidates.end()) {
      candidates = found->second;
      cached = true;
    }
    auto pin = c.pinned.find(layer_key);
    if (deterministic && pin != c.pinned.end()) pinned = pin->second;
  }
  if (!cached) {
    candidates = query_candidates(stream, direction, tf32, deterministic, d);
    std::lock_guard<std::mutex> lock(c.mutex);
    c.candidates.emplace(shape_key, candidates);
  }
  std::shared_ptr<Allocator> allocator = allocator_for(device);
  if (candidates.empty()) {
    MB_THROW(CudaError, "cuDNN offers no ", direction_name(direction),
             " convolution algorithm for ", g.to_string(), (tf32 ? "" : " without TF32"),
             (deterministic ? " among its deterministic ones" : ""),
             ". Fix: check the convolution arguments",
             (deterministic ? ", or drop --deterministic" : ""));
  }
  // The largest workspace one allocation can get now: the largest free block, or a new
  // segment under the cap (available() adds the two, which no single block can have).
  const FreeArenaReport report = allocator->report();
  const std::size_t limit = std::max(report.largest_free_block, report.headroom);
  if (pinned) {
    for (const Candidate& candidate : candidates) {
      if (candidate.choice.algorithm != pinned->algorithm) continue;
      if (candidate.workspace > limit) {
        throw_workspace(candidate.workspace, g, direction, *allocator,
                        " (the algorithm deterministic mode keeps for this layer)");
      }
      return candidate.choice;
    }
    // cuDNN does not run the layer's algorithm at this batch size: take another (the results
    // then differ from other sizes' by that algorithm's rounding).
  }
  std::size_t smallest = static_cast<std::size_t>(-1);
  for (const Candidate& candidate : candidates) {
    smallest = std::min(smallest, candidate.workspace);
    if (candidate.workspace <= limit) {
      if (deterministic && !pinned) {
        std::lock_guard<std::mutex> lock(c.mutex);
        c.pinned.emplace(layer_key, candidate.choice);
      }
      return candidate.choice;
    }
  }
  throw_workspace(smallest, g, direction, *allocator, "");
}

void check_geometry(const ConvGeometry& g) {
  MB_CHECK(g.batch > 0 && g.in_channels > 0 && g.out_channels > 0 && g.groups > 0 &&
               g.in_channels % g.groups == 0 && g.out_channels % g.groups == 0 && g.out_h() > 0 &&
               g.out_w() > 0,
           "cuDNN convolution: invalid geometry ", g.to_string());
}

DeviceBuffer workspace(const Stream& stream, std::size_t bytes) {
  if (bytes == 0) return DeviceBuffer();
  return DeviceBuffer(allocator_for(stream.device()), bytes, MemoryTag::Workspace, stream.handle());
}

float beta_for(GradientMode mode) {
  return mode == GradientMode::Accumulate ? 1.0f : 0.0f;
}

}  // namespace

void conv2d_forward(const Stream& stream, const ConvGeometry& g, const float* x, const float* w,
                    float* y, GradientMode mode) {
  check_geometry(g);
  ConvDescriptors& d = descriptors_for(stream.device(), g);
  const AlgorithmChoice choice = choose(stream, Direction::Forward, g, d);
  d.conv.set_math(choice.math);
  const auto algorithm = static_cast<cudnnConvolutionFwdAlgo_t>(choice.algorithm);
  cudnnHandle_t handle = cudnn_handle(stream);
  std::size_t bytes = 0;
  MB_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(handle, d.x.get(), d.w.get(), d.conv.get(),
                                                         d.y.get(), algorithm, &bytes));
  DeviceBuffer space = workspace(stream, bytes);
  const float alpha = 1.0f, beta = beta_for(mode);
  MB_CUDNN_CHECK(cudnnConvolutionForward(handle, &alpha, d.x.get(), x, d.w.get(), w, d.conv.get(),
                                         algorithm, space.get(), bytes, &beta, d.y.get(), y));
}

void conv2d_backward_data(const Stream& stream, const ConvGeometry& g, const float* w,
                          const float* dy, float* dx, GradientMode mode) {
  check_geometry(g);
  ConvDescriptors& d = descriptors_for(stream.device(), g);
  const AlgorithmChoice choice = choose(stream, Direction::BackwardData, g, d);
  d.conv.set_math(choice.math);
  const auto algorithm = static_cast<cudnnConvolutionBwdDataAlgo_t>(choice.algorithm);
  cudnnHandle_t handle = cudnn_handle(stream);
  std::size_t bytes = 0;
  MB_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
      handle, d.w.get(), d.y.get(), d.conv.get(), d.x.get(), algorithm, &bytes));
  DeviceBuffer space = workspace(stream, bytes);
  const float alpha = 1.0f, beta = beta_for(mode);
  MB_CUDNN_CHECK(cudnnConvolutionBackwardData(handle, &alpha, d.w.get(), w, d.y.get(), dy,
                                              d.conv.get(), algorithm, space.get(), bytes, &beta,
                                              d.x.get(), dx));
}

void conv2d_backward_filter(const Stream& stream, const ConvGeometry& g, const float* x,
                            const float* dy, float* dw, GradientMode mode) {
  check_geometry(g);
  ConvDescriptors& d = descriptors_for(stream.device(), g);
  const AlgorithmChoice choice = choose(stream, Direction::BackwardFilter, g, d);
  d.conv.set_math(choice.math);
  const auto algorithm = static_cast<cudnnConvolutionBwdFilterAlgo_t>(choice.algorithm);
  cudnnHandle_t handle = cudnn_handle(stream);
  std::size_t bytes = 0;
  MB_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
      handle, d.x.get(), d.y.get(), d.conv.get(), d.w.get(), algorithm, &bytes));
  DeviceBuffer space = workspace(stream, bytes);
  const float alpha = 1.0f, beta = beta_for(mode);
  MB_CUDNN_CHECK(cudnnConvolutionBackwardFilter(handle, &alpha, d.x.get(), x, d.y.get(), dy,
                                                d.conv.get(), algorithm, space.get(), bytes, &beta,
                                                d.w.get(), dw));
}

void add_channel_bias(const Stream& stream, float* data, const float* bias, std::int64_t batch,
                      std::int64_t channels, std::int64_t spatial) {
  if (batch == 0 || spatial == 0) return;
  TensorDescriptor bias_desc(1, channels, 1, 1);
  TensorDescriptor data_desc(batch, channels, spatial, 1);
  const float alpha = 1.0f, beta = 1.0f;
  MB_CUDNN_CHECK(cudnnAddTensor(cudnn_handle(stream), &alpha, bias_desc.get(), bias, &beta,
                                data_desc.get(), data));
}

void channel_bias_grad(const Stream& stream, const float* grad, std::int64_t batch,
                       std::int64_t channels, std::int64_t spatial, float* bias_grad,
                       GradientMode mode) {
  TensorDescriptor grad_desc(batch, channels, spatial, 1);
  TensorDescriptor bias_desc(1, channels, 1, 1);
  const float alpha = 1.0f, beta = beta_for(mode);
  MB_CUDNN_CHECK(cudnnConvolutionBackwardBias(cudnn_handle(stream), &alpha, grad_desc.get(), grad,
                                              &beta, bias_desc.get(), bias_grad));
}

bool cudnn_math_allowed(int math_type, bool tf32) {
  const auto math = static_cast<cudnnMathType_t>(math_type);
  if (math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;
  return tf32 || !uses_tensor_cores(math);
}

std::size_t conv_algorithm_cache_size() {
  Caches& c = caches();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.candidates.size();
}

}  // namespace mb::cuda
