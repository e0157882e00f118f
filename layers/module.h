// Module: the building block of every model. Explicit forward and backward, no autograd.
//
// A Module maps one input tensor to one output tensor. forward() caches what backward()
// needs (inside the module, tagged "activation"); backward() consumes that cache, returns
// the input gradient and writes or adds (GradientMode) the parameter gradients. Modules
// with several inputs (residual Add, Concat) are used inside composite modules (ResNet
// blocks, U-Net stages), which route tensors themselves; models are trees of modules with
// torchvision's names ("layer1.0.conv1.weight").
//
// Public forward()/backward() validate and then call forward_impl()/backward_impl().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "layers/layer_timer.h"
#include "layers/memory_trace.h"
#include "runtime/device.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace mb {

// What a forward pass needs to know besides its input.
struct RunState {
  bool training = true;
  // Keys for counter-based dropout: a mask depends on (seed, layer, step, global sample
  // index, element), so any split of the batch gives the same masks.
  std::uint64_t seed = 0;
  std::uint32_t step = 0;
  std::int64_t sample_offset = 0;  // global index of this micro-batch's first sample
  // This forward repeats one whose batch state already counted (segment recomputation,
  // Sequential::set_recompute): layers that gather state across micro-batches (BatchNorm's
  // sums) compute as before but add nothing.
  bool recompute = false;
  // Borrowed: times every module's forward (layers/layer_timer.h); null: not timed.
  LayerTimer* timer = nullptr;
};

class Module;

// A module whose training forward's output can be computed again, bit for bit, from what
// it keeps for its own backward (fusion, layers/fusion.h): a layer reading that output can
// keep nothing and ask for it in its backward (Module::recompute_input_from).
class RecomputeSource {
 public:
  // True when `tensor` is the output of the last training forward and recompute_output()
  // can give it again (until this module's own backward runs).
  virtual bool can_recompute(const Tensor& tensor) const = 0;
  // That output again; throws mb::InvalidArgument when there is none.
  virtual Tensor recompute_output() const = 0;
  // The most bytes recompute_output() holds at once for an output of shape `output`, the
  // output included (MemoryTrace::layer's recompute_bytes for the reader).
  virtual std::size_t recompute_bytes(const Shape& output) const = 0;

 protected:
  ~RecomputeSource() = default;
};

// Told when a module's backward() has returned, so its own parameters' gradients for this
// micro-batch are complete (the data-parallel engine starts all-reducing them then).
class BackwardObserver {
 public:
  virtual ~BackwardObserver() = default;
  virtual void backward_done(Module& module) = 0;
};

struct BackwardState {
  GradientMode mode = GradientMode::Overwrite;
  // False for the first layer of a network: its input gradient is never used.
  bool need_input_grad = true;
  // Borrowed; composites pass it to their children with the rest of the state.
  BackwardObserver* observer = nullptr;
  // Borrowed: times every module's backward (layers/layer_timer.h); null: not timed.
  LayerTimer* timer = nullptr;
};

// How the model zoo initializes a module's own parameters (its children are visited on
// their own). Modules without weights keep None.
enum class WeightInit {
  None,
  Convolution,  // He-uniform weight (bound sqrt(6 / fan_in)), bias bound 1 / sqrt(fan_in)
  Linear,       // PyTorch's default: weight and bias bound 1 / sqrt(fan_in)
};

struct Parameter {
  Tensor value;  // tag param
  Tensor grad;   // tag grad, same shape; created on first backward
  // Weight decay / LARS trust ratio apply (false for biases and BatchNorm affine).
  bool decay = true;
};

class Module {
 public:
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& type_name() const { return type_name_; }

  Tensor forward(const Tensor& input, const RunState& state);
  Tensor backward(const Tensor& grad_output, const BackwardState& state);

  // Shape inference without running: throws mb::InvalidArgument on a bad input shape.
  virtual Shape output_shape(const Shape& input) const = 0;
  // Multiply-adds * 2 for one forward pass at `input` (whole batch). Every layer states it.
  virtual std::int64_t forward_flops(const Shape& input) const = 0;

  // Memory, the planner's analytic estimate (layers/memory_trace.h). Every module states
  // what its training forward creates and keeps for backward by recording it on `trace`
  // and returning its output's id:
  //  - a layer calls trace.layer() once, saying whether it keeps its input, its output or
  //    neither (a handle: shared with every other module keeping that tensor) and the bytes
  //    of tensors only it keeps (argmax, statistics), or trace.view() when its output
  //    shares its input's storage;
  //  - a composite routes ids through its children and trace.add() / trace.concat()
  //    exactly as forward_impl() routes tensors, its branches recorded in the reverse of
  //    the order its backward_impl() visits them.
  // So each buffer is counted once however many modules keep it.
  virtual MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const = 0;
  // Bytes this module keeps between forward and backward for `input` (whole batch), each
  // buffer once, its input included when kept; workspaces excluded.
  std::size_t saved_bytes(const Shape& input) const;
  // The peak of one training forward + backward for `input` (whole batch): what forward
  // keeps plus the gradients alive at backward's worst moment; the input itself (its
  // owner's) and workspaces excluded. recompute_segments false: as if no segment were
  // recomputed (Sequential::set_recompute).
  std::size_t training_bytes(const Shape& input, bool recompute_segments = true) const;

  // True when training this module needs more than one value per channel in a micro-batch
  // (batch statistics: BatchNorm). The planner then never runs a 1-sample micro-batch.
  virtual bool uses_batch_statistics() const { return false; }
  // How the model zoo initializes this module's own parameters.
  virtual WeightInit weight_init() const { return WeightInit::None; }

  // Full-batch hooks: BatchNorm aggregates statistics over micro-batches between them and
  // updates its running statistics once in end_batch().
  virtual void begin_batch();
  virtual void end_batch();
  // Micro-batch hooks: state gathered during a micro-batch (BatchNorm's sums) is kept
  // pending until commit; abort drops it (the engine re-plans after an OutOfMemory and
  // redoes that micro-batch, which must not count twice).
  virtual void commit_micro_batch();
  virtual void abort_micro_batch();
  // Data-parallel: the statistics aggregated since begin_batch() (committed; BatchNorm's
  // element count, Σx and Σx² per channel), appended to `out` as fp64, children in
  // registration order; and the same values read back from `in` at `at` (advanced) after
  // they were summed over the ranks, so end_batch() sees the global batch's statistics.
  virtual void append_batch_statistics(std::vector<double>& out);
  virtual void assign_batch_statistics(const std::vector<double>& in, std::size_t& at);
  // Drops cached activations (after an OutOfMemory mid-step, or after inference).
  virtual void clear_cache();
  // Fuses the memory-bound layers below this module (layers/fusion.h): BatchNorm2d +
  // ReLU/ReLU6 into one layer, and a Conv2d reading a BatchNorm2d's output recomputes it
  // in backward instead of keeping it. Exact: the same numbers, computed twice. Default:
  // each child fuses its own; Sequential fuses its chain; residual blocks fuse BatchNorm +
  // add + ReLU. Call once, before training.
  virtual void fuse_memory_bound_layers();
  // Fusion: this module as the source of a recomputable output (null: it has none).
  virtual RecomputeSource* recompute_source() { return nullptr; }
  // Fusion: `source` produces this module's input; the module recomputes that input from it
  // in backward instead of keeping it, where it can. Returns whether it will. `source` is
  // borrowed: a module of the same model, which outlives the link.
  virtual bool recompute_input_from(RecomputeSource* /*source*/) { return false; }

  // Recursive, in registration order, with dotted names.
  std::vector<std::pair<std::string, Parameter*>> named_parameters();
  // This module's own parameters, its children's excluded.
  std::vector<Parameter*> own_parameters();
  std::vector<std::pair<std::string, Tensor*>> named_buffers();
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }
  std::int64_t parameter_count();
  // Moves parameters and buffers (and children) to `device`, then lets each module allocate
  // the state it keeps across steps there (allocate_state), so that such state is placed
  // before any activation and never splits the arena a micro-batch runs in.
  void to_device(const Device& device);
  Device device() const { return device_; }

 protected:
  virtual Tensor forward_impl(const Tensor& input, const RunState& state) = 0;
  virtual Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) = 0;
  // State a module keeps across steps outside its parameters and buffers (BatchNorm's fp64
  // accumulator), allocated on device_. Called by to_device(); default: none.
  virtual void allocate_state() {}

  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> child) {
    children_.emplace_back(name, child);
    return child;
  }
  Parameter& register_parameter(const std::string& name, Tensor value, bool decay = true);
  Tensor& register_buffer(const std::string& name, Tensor value);
  // For layers that keep their input for backward: hands the cached input over (clearing
  // the cache) after checking that forward() ran and that grad_output has the shape of the
  // output; throws mb::InvalidArgument naming `who` otherwise.
  Tensor take_cached_input(Tensor& cache, const Tensor& grad_output, const std::string& who) const;
  // Gives p.grad storage (zeros) if it has none yet, with p.value's shape and device.
  static void ensure_grad(Parameter& p);
  // Where this module's kernels run: its device's compute stream.
  Stream stream() const { return Stream::compute(device_); }

  Device device_ = Device::cpu();

 private:
  std::string type_name_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::vector<std::pair<std::string, std::unique_ptr<Parameter>>> parameters_;
  std::vector<std::pair<std::string, std::unique_ptr<Tensor>>> buffers_;
};

// The planner's analytic bytes per training sample of `model` for one sample of
// `sample_shape` ([C, H, W]): the growth of training_bytes() from one sample to two (a
// slope, as the probe measures one, so per-batch tensors such as BatchNorm's mean and
// invstd do not count per sample), plus the sample itself, which the engine's input holds
// until backward ends.
std::size_t training_bytes_per_sample(const Module& model, const Shape& sample_shape,
                                      bool recompute_segments = true);

// What recomputing segments (Sequential::set_recompute) costs and buys per sample of
// `sample_shape`, for the planner's log; all zero when no segment is recomputed.
struct RecomputeCost {
  std::int64_t recomputed_flops = 0;         // forward FLOPs that backward runs again
  std::int64_t forward_flops = 0;            // one forward of the whole model
  std::size_t bytes_per_sample = 0;          // training_bytes_per_sample, recomputing
  std::size_t bytes_per_sample_without = 0;  // the same with every segment kept
};
RecomputeCost recompute_cost(const Module& model, const Shape& sample_shape);

// True when `module` or any module below it uses batch statistics.
bool needs_batch_statistics(const Module& module);

// The fewest values per channel one sample gives any batch-statistics layer of `model`
// (H x W at the deepest BatchNorm), from a shape-only trace at `sample_shape` [C, H, W];
// 0 when no layer uses batch statistics.
std::int64_t batch_statistics_values_per_sample(const Module& model, const Shape& sample_shape);
// The most elements one sample puts in any single tensor of the model's forward (the largest
// activation), from a trace at batch 1.
std::int64_t largest_tensor_values_per_sample(const Module& model, const Shape& sample_shape);

// Runs children in order; named "0", "1", ... unless given names.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  template <typename M>
  std::shared_ptr<M> add(std::shared_ptr<M> module) {
    return add(std::to_string(children().size()), std::move(module));
  }
  template <typename M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> module) {
    return register_module(name, std::move(module));
  }
  Shape output_shape(const Shape& input) const override;
  std::int64_t forward_flops(const Shape& input) const override;
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  // Each composite among its children fuses itself, then fuse_chain() runs over the
  // children, nested Sequentials flattened (their input reaches only their first child; a
  // recomputed segment fuses on its own).
  void fuse_memory_bound_layers() override;
  void clear_cache() override;

  // Segment recomputation (activation checkpointing, Chen et al. 2016): a training forward
  // keeps only this Sequential's input (its children's caches are dropped as it returns);
  // backward first runs the forward again (RunState::recompute, so BatchNorm's statistics
  // count once) and then the children's backward. The same numbers, at the cost of one more
  // forward of the segment; the most kept at once is one segment's worth.
  void set_recompute(bool enabled) { recompute_ = enabled; }
  bool recomputes() const { return recompute_; }

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  bool recompute_ = false;
  Tensor segment_input_;  // a recomputed segment's input, until its backward
  RunState segment_state_;
};

}  // namespace mb
