// BatchNorm2d over NCHW input, with running statistics aggregated over micro-batches.
//
// Training normalizes each micro-batch with its own mean and biased variance (as every
// gradient-accumulation system does) and adds the micro-batch's per-channel Σx, Σx² (fp64)
// and element count to an accumulator. Running mean/var are NOT updated per forward call:
// end_batch(), called once per full batch by the engine, derives the full-batch mean and
// unbiased variance from the accumulated sums and updates running_mean/running_var once
// with `momentum` (running = (1 - momentum) * running + momentum * batch) and
// num_batches_tracked once, so they equal what full-batch BN (PyTorch's) would record.
// Evaluation normalizes with the running statistics.
//
// Accumulator life cycle: begin_batch() clears it. Each training forward adds to a pending
// part; commit_micro_batch() keeps it, abort_micro_batch() drops it (a micro-batch redone
// after an OutOfMemory must not count twice); end_batch() keeps whatever is still pending,
// updates the running statistics (nothing when no sample was seen) and clears.
//
// The engine always calls these hooks (begin_batch, commit/abort per micro-batch,
// end_batch); a forward alone never changes the running statistics.
// Standalone use (no engine): forward() in training mode, then end_batch() — the
// accumulator starts empty, so begin_batch() is optional the first time. Or call
// set_update_per_forward(true): every training forward then updates the running statistics
// from its own batch immediately, as PyTorch's BatchNorm2d does.
//
// Fusion (docs/architecture.md, "Memory"): set_activation(ReLU or ReLU6) makes the layer
// BatchNorm + activation in one pass; it still keeps only its input, and backward
// recomputes the activation's mask from it. recompute_output() gives the forward's output
// again, bit for bit, until backward runs: a Conv2d reading that output recomputes it
// instead of keeping it (Conv2d::recompute_input_from). forward_residual() is BatchNorm +
// add + activation. Its mask is not a function of the input alone (z + residual), so by
// default it keeps its output too; a residual block that can recompute the residual sets
// set_keep_residual_output(false) and hands the output back before backward
// (recompute_residual_output, provide_residual_output). Backward then also leaves the
// residual's gradient for take_residual_grad().
//
// Note: on CUDA the sums live in device fp64 buffers (per-thread fp64 sums in the
// statistics kernel, folded on the device), and end_batch() updates the running statistics
// there too (batch_norm_update_running) and clears the sums with a memset: a training step
// moves nothing between host and device for BatchNorm (data-parallel runs read the sums for
// their all-reduce). Repeating a forward on the same micro-batch without an abort counts it
// twice.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/batch_norm_activation.h"
#include "layers/module.h"
#include "runtime/allocator.h"
#include "runtime/error.h"

namespace mb {

class BatchNorm2d : public Module, public RecomputeSource {
 public:
  // Parameters "weight" (ones), "bias" (zeros), no weight decay; buffers, in this order,
  // "running_mean" (zeros), "running_var" (ones), "num_batches_tracked" (int32 scalar, 0).
  explicit BatchNorm2d(std::int64_t channels, double eps = 1e-5, double momentum = 0.1);

  Shape output_shape(const Shape& input) const override;
  std::int64_t forward_flops(const Shape& input) const override;
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;

  bool uses_batch_statistics() const override { return true; }

  void begin_batch() override;
  void end_batch() override;
  void commit_micro_batch() override;
  void abort_micro_batch() override;
  // [count, Σx per channel, Σx² per channel]: 1 + 2 * channels values (committed only; a
  // pending micro-batch is committed first).
  void append_batch_statistics(std::vector<double>& out) override;
  void assign_batch_statistics(const std::vector<double>& in, std::size_t& at) override;
  void clear_cache() override;

  void set_update_per_forward(bool enabled) { update_per_forward_ = enabled; }

  // The activation fused after the normalization (None: plain BatchNorm2d).
  void set_activation(BnActivation act) { activation_ = act; }
  BnActivation activation() const { return activation_; }
  // act(bn(input) + residual) with activation(); `residual` has the input's shape.
  // Throws mb::InvalidArgument on a shape, dtype or device mismatch.
  Tensor forward_residual(const Tensor& input, const Tensor& residual, const RunState& state);
  // After a backward that followed forward_residual(): the gradient of the residual (the
  // gradient of z + residual), handed over once.
  Tensor take_residual_grad();
  // Whether forward_residual() keeps its output for backward's mask (default) or the caller
  // provides it again before backward (provide_residual_output).
  void set_keep_residual_output(bool keep) { keep_residual_output_ = keep; }
  // The last training forward_residual()'s output again, from the kept input and the same
  // `residual`, bit for bit; throws mb::InvalidArgument when there is none.
  Tensor recompute_residual_output(const Tensor& residual) const;
  // Before backward after a forward_residual() that did not keep its output: that output.
  void provide_residual_output(const Tensor& output);

  // RecomputeSource: the output of the last training forward (not forward_residual), from
  // the kept input; until backward runs.
  RecomputeSource* recompute_source() override { return this; }
  bool can_recompute(const Tensor& tensor) const override;
  Tensor recompute_output() const override;
  std::size_t recompute_bytes(const Shape& output) const override;

  std::int64_t channels() const { return channels_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }
  // PyTorch's conventions: eps > 0 inside the square root; running = (1 - momentum) *
  // running + momentum * batch statistic, momentum in [0, 1]. Throws mb::InvalidArgument.
  void set_options(double eps, double momentum) {
    MB_CHECK(eps > 0.0, "BatchNorm2d: eps must be positive, got ", eps,
             ". Fix: pass --bn-eps > 0 (PyTorch's default 1e-5)");
    MB_CHECK(momentum >= 0.0 && momentum <= 1.0, "BatchNorm2d: momentum must be in [0, 1], got ",
             momentum, ". Fix: pass --bn-momentum in [0, 1] (PyTorch's default 0.1)");
    eps_ = eps;
    momentum_ = momentum;
  }
  // Elements per channel accumulated since begin_batch() (committed + pending).
  std::int64_t accumulated_count() const { return committed_count_ + pending_count_; }

  Parameter& weight() { return *weight_; }
  Parameter& bias() { return *bias_; }
  Tensor& running_mean() { return *running_mean_; }
  Tensor& running_var() { return *running_var_; }
  Tensor& num_batches_tracked() { return *num_batches_tracked_; }

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;
  void allocate_state() override { ensure_statistics(); }

 private:
  void check_input(const Shape& input) const;
  // The last training forward's output from the kept input and statistics (residual: the
  // same residual, or undefined).
  Tensor apply_again(const Tensor& residual) const;
  // forward_impl and forward_residual (residual undefined: none).
  Tensor run_forward(const Tensor& input, const Tensor& residual, const RunState& state);
  // Allocates the fp64 accumulator on device_ (moving its contents when the module moved).
  void ensure_statistics();
  std::vector<double> read_statistics() const;
  void write_statistics(const std::vector<double>& values);
  void clear_statistics();

  std::int64_t channels_;
  double eps_;
  double momentum_;
  bool update_per_forward_ = false;

  Parameter* weight_;
  Parameter* bias_;
  Tensor* running_mean_;
  Tensor* running_var_;
  Tensor* num_batches_tracked_;

  // [4 * channels] fp64 on statistics_device_: pending Σx, pending Σx², committed Σx,
  // committed Σx².
  DeviceBuffer statistics_;
  Device statistics_device_ = Device::cpu();
  std::int64_t pending_count_ = 0;
  std::int64_t committed_count_ = 0;

  // Forward cache for backward.
  Tensor cached_input_;
  Tensor save_mean_;
  Tensor save_invstd_;
  bool cached_training_ = false;
  BnActivation activation_ = BnActivation::None;
  // forward_residual: the output (for the activation's mask) and, after backward, the
  // residual's gradient.
  bool keep_residual_output_ = true;
  bool residual_forward_ = false;  // the last forward was forward_residual()
  Tensor residual_output_;         // its output, kept or provided, for backward's mask
  Tensor residual_grad_;
  const void* last_output_ = nullptr;  // identifies the last forward's output (not owned)
};

}  // namespace mb
