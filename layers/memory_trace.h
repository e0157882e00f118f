// MemoryTrace: a training forward and backward over shapes only, the planner's analytic
// estimate of a micro-batch's memory (Module::saved_bytes, Module::training_bytes).
//
// Each module's trace_forward() records what its forward() creates and keeps for backward(),
// routing tensor ids exactly as forward_impl() routes tensors. A Tensor is a shared handle,
// so a buffer that several modules keep (a ReLU keeps its output and the Conv2d after it
// keeps that same tensor as its input) is one buffer here too, counted once.
//
// backward_peak_bytes() then replays the recorded steps last first, as backward() visits
// them: a step holds the gradient of its output, allocates the gradient of its input, then
// releases what it kept and the gradient of its output. The largest total on the way is the
// peak. Composite modules therefore record their branches in the reverse of the order in
// which their backward_impl() visits them.
//
// Why the gradients: at backward's worst moment they are a large share of the peak (LeNet-5:
// a third; the start of U-Net's decoder: a tenth), and the sum of what layers keep misses it.
//
// Note: only backward is replayed. At each step backward holds what forward held there
// (everything kept so far) plus gradients of the same sizes as forward's input and output,
// so forward's moments are never higher. A gradient is released when the step that
// produced its tensor has run; a composite that holds one longer (U-Net keeps its skip
// gradients until its backward returns; a caller holds a composite's output gradient
// during the composite's backward) costs more than the replay says, away from the peak in
// the zoo. Workspaces (the CPU convolution's column buffer, cuDNN's) are excluded: they do
// not grow with the batch. All tensors are float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/shape.h"

namespace mb {

// Which of its two boundary tensors a layer keeps for backward: a handle, shared with
// every other module that keeps the same tensor.
enum class Keep { Nothing, Input, Output };

class MemoryTrace {
 public:
  using Id = int;  // a tensor of the traced forward

  // recompute_segments false: recomputed segments trace as their children inline, i.e.
  // what the model would keep without recomputation (the planner's comparison).
  explicit MemoryTrace(bool recompute_segments = true) : recompute_segments_(recompute_segments) {}
  bool recompute_segments() const { return recompute_segments_; }

  // A tensor from outside the traced forward (the traced module's input). It counts in
  // saved_bytes() when kept, never in backward_peak_bytes() (its owner counts it), and it
  // gets no gradient (the network's first layer computes none).
  Id input(const Shape& shape);
  const Shape& shape(Id tensor) const;

  // One layer: `input` -> a new tensor of `output_shape`. The layer keeps `keep` and
  // `own_bytes` of tensors only it holds (MaxPool2d's argmax, BatchNorm2d's mean and
  // invstd) until its backward, which allocates the gradient of its input.
  // recompute_bytes: the most its backward holds while recomputing what it did not keep
  // (its input from a RecomputeSource, or a fused residual block's output), at the start
  // of its backward and released before the input's gradient is allocated.
  Id layer(Id input, const Shape& output_shape, Keep keep, std::size_t own_bytes = 0,
           std::size_t recompute_bytes = 0);
  // A layer whose output shares its input's storage (Flatten): nothing kept, and its
  // backward's gradient is a view of the output's.
  Id view(Id input, const Shape& output_shape);
  // A recomputed segment (Sequential::set_recompute), traced on its own as `inner` from an
  // input() of `input`'s shape to `inner_output`: here `input` -> a new tensor that keeps
  // only its input; its backward first holds inner's backward peak (its output's gradient
  // included) on top of what is alive outside, and runs its forward again (`forward_flops`,
  // counted in recomputed_flops()). Inner's batch statistics and largest tensor count here.
  Id segment(Id input, const MemoryTrace& inner, Id inner_output, std::int64_t forward_flops);
  // The functional ops composite modules call (layers/elementwise.h); both keep nothing.
  // add: a new tensor; backward hands the output's gradient to both inputs (no copy).
  Id add(Id a, Id b);
  // concat_channels: a new tensor; backward splits the gradient into two new tensors.
  Id concat(Id a, Id b);

  // A layer normalizes `input` with statistics over the batch and every spatial position,
  // per channel (BatchNorm2d in training). Records how many values per channel one sample
  // of the traced input contributes there (H x W), for the planner's minimum micro-batch.
  void batch_statistics(Id input);
  // The fewest values per channel and per sample any batch-statistics layer sees (the
  // deepest BatchNorm's H x W); 0 when no layer records batch statistics.
  std::int64_t min_statistics_values_per_sample() const { return min_statistics_values_; }
  // The most elements of any tensor of the trace (views share their input's): per sample
  // when traced at batch 1. cuDNN's tensor descriptors bound it (engine/planner.h).
  std::int64_t largest_tensor_values() const { return largest_values_; }
  // Forward FLOPs that backward runs again (the recomputed segments').
  std::int64_t recomputed_flops() const { return recomputed_flops_; }

  // Bytes kept for backward when forward has ended, each buffer once (inputs included).
  std::size_t saved_bytes() const;
  // The most bytes alive at once during backward, starting from everything kept plus the
  // gradient of `output` (the loss gradient, alive until backward ends). The traced
  // inputs are excluded.
  std::size_t backward_peak_bytes(Id output) const;

 private:
  enum class StepKind { Layer, View, Add, Concat, Segment };
  struct Value {
    Shape shape;
    int buffer;  // views share their input's buffer
  };
  struct Buffer {
    std::size_t bytes;
    bool external;  // from input()
  };
  struct Step {
    StepKind kind;
    std::vector<Id> inputs;
    Id output;
    Keep keep;
    std::size_t own_bytes;
    std::size_t recompute_bytes = 0;
    std::size_t segment_peak = 0;  // Segment: its replayed backward's peak
  };

  Id new_value(const Shape& shape);
  const Value& value(Id tensor) const;
  // The buffer `step` keeps, or -1.
  int kept_buffer(const Step& step) const;

  std::vector<Value> values_;
  std::vector<Buffer> buffers_;
  std::vector<Step> steps_;  // in forward order
  bool recompute_segments_;
  std::int64_t min_statistics_values_ = 0;
  std::int64_t largest_values_ = 0;
  std::int64_t recomputed_flops_ = 0;
};

}  // namespace mb
