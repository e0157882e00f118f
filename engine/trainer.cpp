// The micro-batch engine's step: plan, probe, run micro-batches, accumulate exactly,
// re-plan on OutOfMemory, clip, update once.
#include "engine/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

#include "kernels/cpu/accumulate_grads.h"
#include "kernels/multi_tensor.h"
#include "runtime/allocator_registry.h"
#include "runtime/context.h"
#include "runtime/error.h"

#if MB_WITH_CUDA
#include "kernels/cuda/accumulate_grads.h"
#include "runtime/cuda_check.h"
#include "runtime/cuda_context.h"
#endif

namespace mb {
namespace {

bool contains_batch_norm(const Module& module) {
  if (module.type_name() == "BatchNorm2d") return true;
  for (const auto& [name, child] : module.children()) {
    if (contains_batch_norm(*child)) return true;
  }
  return false;
}

std::int64_t count_valid(const Tensor& labels, int ignore_index) {
  const std::int32_t* data = labels.data<std::int32_t>();
  std::int64_t valid = 0;
  for (std::int64_t i = 0; i < labels.numel(); ++i) valid += data[i] != ignore_index ? 1 : 0;
  return valid;
}

Shape batch_shape(std::int64_t batch, const Shape& sample) {
  std::vector<std::int64_t> dims{batch};
  dims.insert(dims.end(), sample.dims().begin(), sample.dims().end());
  return Shape(dims);
}

}  // namespace

const char* accumulation_name(AccumulationMode mode) {
  return mode == AccumulationMode::InPlace ? "inplace" : "buffers";
}

AccumulationMode parse_accumulation(const std::string& name) {
  if (name == "inplace") return AccumulationMode::InPlace;
  if (name == "buffers") return AccumulationMode::Buffers;
  MB_THROW(InvalidArgument, "unknown accumulation mode '", name,
           "'. Fix: use --accumulation inplace or --accumulation buffers");
}

// Moves micro-batch inputs to the device. On CUDA, micro-batch k+1's copy runs on the copy
// stream while micro-batch k computes (double buffering); on the CPU a slice is a view.
struct Trainer::Feeder {
  explicit Feeder(const Device& d) : device(d) {
#if MB_WITH_CUDA
    if (device.is_cuda()) {
      for (auto& e : copied) MB_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      for (auto& e : consumed) MB_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
#endif
  }
  ~Feeder() {
#if MB_WITH_CUDA
    for (auto& e : copied)
      if (e != nullptr) cudaEventDestroy(e);
    for (auto& e : consumed)
      if (e != nullptr) cudaEventDestroy(e);
#endif
  }

  // Starts moving images[offset, offset + count) for micro-batch `index`.
  void stage(const Tensor& images, std::int64_t offset, std::int64_t count, int index) {
    Tensor slice = images.slice(offset, offset + count);
    const int slot = index & 1;
    if (device.is_cpu()) {
      staged[slot] = slice;
      return;
    }
#if MB_WITH_CUDA
    Context& context = Context::get(device);
    auto copy_stream = static_cast<cudaStream_t>(context.copy_stream());
    TensorOptions options;
    options.device = device;
    options.tag = MemoryTag::Data;
    options.stream = context.compute_stream();
    staged[slot] = Tensor();
    staged[slot] = Tensor::empty(slice.shape(), options);
    // The buffer's previous user (micro-batch index - 2) must be done before overwriting.
    MB_CUDA_CHECK(cudaStreamWaitEvent(copy_stream, consumed[slot], 0));
    staged[slot].copy_from(slice, copy_stream);
    MB_CUDA_CHECK(cudaEventRecord(copied[slot], copy_stream));
#endif
  }

  // The device tensor of micro-batch `index`, ordered after its copy.
  Tensor take(int index) {
    const int slot = index & 1;
#if MB_WITH_CUDA
    if (device.is_cuda()) {
      MB_CUDA_CHECK(cudaStreamWaitEvent(compute_stream(device), copied[slot], 0));
    }
#endif
    return staged[slot];
  }

  // Micro-batch `index` has issued all work reading its input.
  void release(int index) {
    const int slot = index & 1;
#if MB_WITH_CUDA
    if (device.is_cuda()) MB_CUDA_CHECK(cudaEventRecord(consumed[slot], compute_stream(device)));
#endif
    staged[slot] = Tensor();
  }

  void reset() {
    staged[0] = Tensor();
    staged[1] = Tensor();
  }

  Device device;
  Tensor staged[2];
#if MB_WITH_CUDA
  cudaEvent_t copied[2] = {nullptr, nullptr};
  cudaEvent_t consumed[2] = {nullptr, nullptr};
#endif
};

Trainer::Trainer(std::shared_ptr<Module> model, const TrainerOptions& options)
    : model_(std::move(model)), options_(options), criterion_(options.loss) {
  MB_CHECK(model_ != nullptr, "Trainer needs a model");
  MB_CHECK(options_.micro_batch >= 0, "micro-batch must be >= 0 (0: auto), got ",
           options_.micro_batch);
  require_device(options_.device);
  model_->to_device(options_.device);
  parameters_ = model_->named_parameters();
  has_batch_norm_ = contains_batch_norm(*model_);
  options_.planner.refuse_single_sample = options_.planner.refuse_single_sample || has_batch_norm_;
  for (auto& [name, p] : parameters_) {
    TensorOptions grad_options;
    grad_options.device = options_.device;
    grad_options.tag = MemoryTag::Grad;
    if (!p->grad.defined()) p->grad = Tensor::zeros(p->value.shape(), grad_options);
    if (options_.accumulation == AccumulationMode::Buffers) {
      accumulators_.push_back(Tensor::zeros(p->value.shape(), grad_options));
    }
  }
  optimizer_ = std::make_unique<Optimizer>(parameters_, options_.optimizer);
  feeder_ = std::make_unique<Feeder>(options_.device);
}

Trainer::~Trainer() = default;

void Trainer::log(const std::string& message) const {
  if (options_.log) options_.log(message);
}

void Trainer::set_steps(std::int64_t steps) {
  steps_ = steps;
  optimizer_->set_steps(steps);
}

std::vector<Tensor> Trainer::gradients() {
  if (options_.accumulation == AccumulationMode::Buffers) return accumulators_;
  std::vector<Tensor> grads;
  for (auto& [name, p] : parameters_) grads.push_back(p->grad);
  return grads;
}

Trainer::MicroBatchTotals Trainer::run_micro_batch(const Tensor& labels, std::int64_t offset,
                                                   std::int64_t count, int index,
                                                   std::int64_t total_valid) {
  std::shared_ptr<Allocator> allocator = allocator_for(options_.device);
  allocator->set_micro_batch(index);
  allocator->mark("micro-batch " + std::to_string(index) + " start (" + std::to_string(count) +
                  " samples)");
  Tensor input = feeder_->take(index);
  Tensor label_slice = labels.slice(offset, offset + count);

  RunState state;
  state.training = true;
  state.seed = options_.seed;
  state.step = static_cast<std::uint32_t>(steps_);
  state.sample_offset = offset;
  Tensor logits = model_->forward(input, state);

  BackwardState backward_state;
  backward_state.need_input_grad = false;
  LossResult loss;
  const bool in_place = options_.accumulation == AccumulationMode::InPlace;
  if (in_place) {
    // Summed loss (seed 1 per sample), added into the gradient buffers; 1/B comes later.
    LossOptions sum_options = options_.loss;
    sum_options.reduction = Reduction::Sum;
    loss = SoftmaxCrossEntropy(sum_options).forward_backward(logits, label_slice, 1.0f);
    backward_state.mode = index == 0 ? GradientMode::Overwrite : GradientMode::Accumulate;
  } else {
    loss = criterion_.forward_backward(logits, label_slice, 1.0f);
    backward_state.mode = GradientMode::Overwrite;
  }
  logits = Tensor();
  model_->backward(loss.grad_logits, backward_state);
  feeder_->release(index);

  if (!in_place) {
    // acc (+)= factor * grad with the exact factor of this micro-batch.
    float factor = 1.0f;
    if (options_.loss.reduction == Reduction::Mean) {
      factor = static_cast<float>(static_cast<double>(loss.valid_count) /
                                  static_cast<double>(std::max<std::int64_t>(total_valid, 1)));
    }
    std::vector<GradSlot> slots;
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
      slots.push_back(GradSlot{parameters_[i].second->grad.data<float>(),
                               accumulators_[i].data<float>(), accumulators_[i].numel()});
    }
    const GradientMode mode = index == 0 ? GradientMode::Overwrite : GradientMode::Accumulate;
    if (options_.device.is_cpu()) {
      cpu::accumulate_grads(slots.data(), static_cast<int>(slots.size()), factor, mode);
    } else {
#if MB_WITH_CUDA
      cuda::accumulate_grads(slots.data(), static_cast<int>(slots.size()), factor, mode,
                             compute_stream(options_.device));
#endif
    }
  }
  model_->commit_micro_batch();
  allocator->mark("micro-batch " + std::to_string(index) + " end");
  return MicroBatchTotals{loss.loss_sum, loss.correct};
}

std::size_t Trainer::probe_peak(const Shape& sample_shape, const Shape& label_shape,
                                std::int64_t samples) {
  std::shared_ptr<Allocator> allocator = allocator_for(options_.device);
  TensorOptions host_options;
  Tensor images = Tensor::zeros(batch_shape(samples, sample_shape), host_options);
  TensorOptions label_options;
  label_options.dtype = DType::Int32;
  Tensor labels = Tensor::zeros(batch_shape(samples, label_shape), label_options);
  const std::size_t baseline = allocator->report().allocated;
  allocator->reset_peak();
  try {
    feeder_->stage(images, 0, samples, 0);
    run_micro_batch(labels, 0, samples, 0, samples);
  } catch (...) {
    model_->clear_cache();
    model_->abort_micro_batch();
    feeder_->reset();
    allocator->set_micro_batch(-1);
    throw;
  }
  model_->abort_micro_batch();  // a probe must not count in BatchNorm statistics
  if (!options_.device.is_cpu()) Context::get(options_.device).synchronize();
  allocator->set_micro_batch(-1);
  const std::size_t peak = allocator->peak_allocated();
  return peak > baseline ? peak - baseline : 0;
}

MemoryProfile Trainer::measure(const Shape& sample_shape, const Shape& label_shape) {
  const std::int64_t small = has_batch_norm_ ? 2 : 1;
  const std::int64_t large = small + 2;
  MemoryProfile profile;
  profile.probe_small = small;
  profile.probe_large = large;
  profile.analytic_bytes_per_sample =
      model_->saved_bytes(batch_shape(1, sample_shape)) +
      static_cast<std::size_t>(sample_shape.numel()) * sizeof(float);

  allocator_for(options_.device)->mark("probe");
  // The first run also creates lazily allocated state (algorithm choices, workspaces).
  probe_peak(sample_shape, label_shape, small);
  profile.peak_small = probe_peak(sample_shape, label_shape, small);
  try {
    profile.peak_large = probe_peak(sample_shape, label_shape, large);
    profile.bytes_per_sample =
        (profile.peak_large > profile.peak_small)
            ? (profile.peak_large - profile.peak_small) / static_cast<std::size_t>(large - small)
            : profile.peak_small / static_cast<std::size_t>(small);
  } catch (const OutOfMemory&) {
    // Only the small probe fits: attribute all of it to the samples (conservative).
    profile.peak_large = 0;
    profile.bytes_per_sample = profile.peak_small / static_cast<std::size_t>(small);
  }
  profile.bytes_per_sample = std::max<std::size_t>(profile.bytes_per_sample, 1);
  const std::size_t per_sample_part = profile.bytes_per_sample * static_cast<std::size_t>(small);
  profile.fixed_bytes =
      profile.peak_small > per_sample_part ? profile.peak_small - per_sample_part : 0;
  std::ostringstream out;
  out << "probe: peak above baseline " << format_bytes(profile.peak_small) << " at " << small
      << " sample(s), " << format_bytes(profile.peak_large) << " at " << large
      << " -> bytes/sample " << format_bytes(profile.bytes_per_sample) << " (analytic "
      << format_bytes(profile.analytic_bytes_per_sample) << "), fixed "
      << format_bytes(profile.fixed_bytes);
  log(out.str());
  return profile;
}

const Plan& Trainer::plan(std::int64_t batch_size, const Shape& sample_shape,
                          const Shape& label_shape) {
  if (options_.micro_batch > 0) {
    plan_ = plan_fixed(batch_size, options_.micro_batch, options_.planner);
  } else {
    MemoryProfile profile = measure(sample_shape, label_shape);
    const FreeArenaReport report = allocator_for(options_.device)->report();
    plan_ = plan_automatic(batch_size, report, profile, options_.planner);
    verify_plan(sample_shape, label_shape, report);
    plan_.explanation = explain_plan(plan_, report);
    if (plan_.micro_batch > plan_.profile.probe_large) {
      plan_.explanation +=
          "; micro-batch " + std::to_string(plan_.micro_batch) + " verified by a run";
    }
  }
  log(plan_.explanation);
  return plan_;
}

// Note: bytes per sample measured at 1-4 samples miss what only large tensors cost (the
// pool's coarser size classes and segments, workspaces that grow with the batch), so the
// planned size is run once for real. A run that fits refines bytes per sample from its
// peak and re-plans (growing or shrinking); an OutOfMemory shrinks by the share of the
// request that was available. A few rounds at most, each logged.
void Trainer::verify_plan(const Shape& sample_shape, const Shape& label_shape,
                          const FreeArenaReport& report) {
  const std::int64_t min_samples = options_.planner.refuse_single_sample ? 2 : 1;
  std::int64_t verified = 0;                   // largest size that ran
  std::int64_t failed = plan_.batch_size + 1;  // smallest size that did not
  Plan verified_plan;
  for (int round = 0; round < 6 && plan_.micro_batch > plan_.profile.probe_large; ++round) {
    const std::int64_t m = plan_.micro_batch;
    try {
      const std::size_t peak = probe_peak(sample_shape, label_shape, m);
      verified = m;
      verified_plan = plan_;
      MemoryProfile refined = plan_.profile;
      const std::size_t above_small =
          peak > refined.peak_small ? peak - refined.peak_small : refined.bytes_per_sample;
      refined.bytes_per_sample =
          std::max<std::size_t>(1, above_small / static_cast<std::size_t>(m - refined.probe_small));
      Plan refined_plan = plan_automatic(plan_.batch_size, report, refined, options_.planner);
      log("plan check: micro-batch " + std::to_string(m) + " ran, peak " + format_bytes(peak) +
          " -> bytes/sample " + format_bytes(refined.bytes_per_sample) + ", fits " +
          std::to_string(refined_plan.micro_batch));
      std::int64_t next = refined_plan.micro_batch;
      if (next >= failed) next = m + (failed - m) / 2;
      if (next <= m || next < m + m / 20) return;
      plan_ = refined_plan;  // room to grow: verify the larger size next round
      plan_.micro_batch = next;
      plan_.sizes = split_batch(plan_.batch_size, next, options_.planner.refuse_single_sample);
    } catch (const OutOfMemory& error) {
      failed = std::min(failed, m);
      const FreeArenaReport at_failure = error.report();
      const double fit = static_cast<double>(at_failure.available()) /
                         static_cast<double>(at_failure.available() + error.requested_bytes());
      std::int64_t smaller = std::max<std::int64_t>(
          min_samples, static_cast<std::int64_t>(static_cast<double>(m) * std::min(0.9, fit)));
      // A size already ran: bisect between it and the one that failed (an OutOfMemory
      // from fragmentation says little about how much smaller is needed).
      if (verified > 0) smaller = verified + (m - verified) / 2;
      log("plan check: micro-batch " + std::to_string(m) + " ran out of memory (requested " +
          format_bytes(error.requested_bytes()) + ", available " +
          format_bytes(at_failure.available()) + ", largest free block " +
          format_bytes(at_failure.largest_free_block) + ") -> micro-batch " +
          std::to_string(smaller));
      if (smaller >= m) throw;
      plan_.micro_batch = smaller;
      plan_.sizes = split_batch(plan_.batch_size, smaller, options_.planner.refuse_single_sample);
      if (smaller <= verified) {
        plan_ = verified_plan;
        return;
      }
    }
  }
  // Out of rounds: keep the largest size that ran (the probes' own sizes always ran).
  if (verified > 0 && plan_.micro_batch != verified) {
    plan_ = verified_plan;
    log("plan check: keeping micro-batch " + std::to_string(verified) + ", the largest that ran");
  }
}

std::int64_t Trainer::halve_micro_batch(const OutOfMemory& error, std::int64_t failed_size,
                                        int index) {
  const std::int64_t min_samples = has_batch_norm_ ? 2 : 1;
  if (failed_size <= min_samples) {
    throw OutOfMemory(error.requested_bytes(), error.report(),
                      "re-planning cannot go below " + std::to_string(min_samples) +
                          " sample(s) per micro-batch;",
                      __FILE__, __LINE__);
  }
  const std::int64_t smaller = std::max(min_samples, failed_size / 2);
  std::ostringstream out;
  out << "re-plan: OutOfMemory in micro-batch " << index << " of " << failed_size
      << " samples (requested " << format_bytes(error.requested_bytes()) << ", free in arena "
      << format_bytes(error.report().free_in_arena) << ", largest free block "
      << format_bytes(error.report().largest_free_block) << ", headroom "
      << format_bytes(error.report().headroom) << ") -> micro-batch " << smaller;
  log(out.str());
  allocator_for(options_.device)->mark("re-plan");
  return smaller;
}

StepResult Trainer::step(const Tensor& images, const Tensor& labels, float lr) {
  const auto started = std::chrono::steady_clock::now();
  MB_CHECK(images.defined() && labels.defined(), "step: undefined batch");
  MB_CHECK(images.device().is_cpu() && labels.device().is_cpu(),
           "step: the batch must be in host memory (the engine moves micro-batches)");
  MB_CHECK(images.ndim() >= 2 && images.dim(0) == labels.dim(0), "step: ", images.dim(0),
           " images but ", labels.dim(0), " labels");
  MB_CHECK(labels.dtype() == DType::Int32, "step: labels must be int32");
  const std::int64_t batch = images.dim(0);
  if (plan_.batch_size == 0) {
    std::vector<std::int64_t> sample(images.shape().dims().begin() + 1,
                                     images.shape().dims().end());
    std::vector<std::int64_t> label(labels.shape().dims().begin() + 1, labels.shape().dims().end());
    plan(batch, Shape(sample), Shape(label));
  }
  std::vector<std::int64_t> sizes =
      batch == plan_.batch_size
          ? plan_.sizes
          : split_batch(batch, plan_.micro_batch, options_.planner.refuse_single_sample);
  const std::int64_t total_valid = count_valid(labels, options_.loss.ignore_index);
  const bool in_place = options_.accumulation == AccumulationMode::InPlace;
  std::shared_ptr<Allocator> allocator = allocator_for(options_.device);

  StepResult result;
  result.samples = batch;
  model_->begin_batch();
  std::vector<std::int64_t> done;
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  std::int64_t offset = 0;
  std::size_t k = 0;
  if (!sizes.empty()) feeder_->stage(images, 0, sizes[0], 0);
  while (k < sizes.size()) {
    const std::int64_t count = sizes[k];
    const int index = static_cast<int>(k);
    try {
      if (k + 1 < sizes.size()) feeder_->stage(images, offset + count, sizes[k + 1], index + 1);
      MicroBatchTotals totals = run_micro_batch(labels, offset, count, index, total_valid);
      loss_sum += totals.loss_sum;
      correct += totals.correct;
      done.push_back(count);
      offset += count;
      ++k;
    } catch (const OutOfMemory& error) {
      model_->clear_cache();
      model_->abort_micro_batch();
      feeder_->reset();
      const std::int64_t smaller = halve_micro_batch(error, count, index);
      ++result.replans;
      plan_.micro_batch = smaller;
      plan_.sizes = split_batch(plan_.batch_size, smaller, options_.planner.refuse_single_sample);
      if (in_place && k > 0) {
        // Earlier micro-batches were added into the gradient buffers and this one may have
        // been partly added: redo the batch from its start (Overwrite on the first).
        log("re-plan: in-place accumulation redoes the batch from its first sample");
        model_->begin_batch();
        sizes = split_batch(batch, smaller, options_.planner.refuse_single_sample);
        done.clear();
        loss_sum = 0.0;
        correct = 0;
        offset = 0;
        k = 0;
      } else {
        std::vector<std::int64_t> rest =
            split_batch(batch - offset, smaller, options_.planner.refuse_single_sample);
        sizes.resize(k);
        sizes.insert(sizes.end(), rest.begin(), rest.end());
      }
      feeder_->stage(images, offset, sizes[k], static_cast<int>(k));
    }
  }
  allocator->set_micro_batch(-1);
  model_->end_batch();

  // The gradient in the buffers is normalized by grad_scale inside the update.
  const std::vector<Tensor> grads = gradients();
  float grad_scale = 1.0f;
  if (in_place && options_.loss.reduction == Reduction::Mean) {
    grad_scale =
        static_cast<float>(1.0 / static_cast<double>(std::max<std::int64_t>(total_valid, 1)));
  }
  std::vector<ConstBufferSlot> grad_slots;
  for (const Tensor& g : grads) grad_slots.push_back(ConstBufferSlot{g.data<float>(), g.numel()});
  double squares = 0.0;
  if (options_.device.is_cpu()) {
    squares = cpu::sum_of_squares(grad_slots.data(), static_cast<int>(grad_slots.size()));
  } else {
#if MB_WITH_CUDA
    squares = cuda::sum_of_squares(grad_slots.data(), static_cast<int>(grad_slots.size()),
                                   compute_stream(options_.device));
#endif
  }
  result.grad_norm = std::sqrt(squares) * grad_scale;
  if (!std::isfinite(result.grad_norm)) {
    MB_THROW(Error, "step ", steps_, ": the gradient norm is ", result.grad_norm,
             " (NaN or Inf in the gradients). Fix: lower --lr, or enable --clip-norm");
  }
  if (options_.clip_norm > 0.0 && result.grad_norm > options_.clip_norm) {
    grad_scale = static_cast<float>(grad_scale * options_.clip_norm / (result.grad_norm + 1e-6));
  }
  allocator->mark("optimizer update");
  optimizer_->step(grads, lr, grad_scale);
  if (!options_.device.is_cpu()) Context::get(options_.device).synchronize();
  ++steps_;

  result.loss = options_.loss.reduction == Reduction::Mean
                    ? loss_sum / static_cast<double>(std::max<std::int64_t>(total_valid, 1))
                    : loss_sum;
  result.correct = correct;
  result.micro_batches = done;
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

EvalResult Trainer::evaluate(const Tensor& images, const Tensor& labels, std::int64_t chunk) {
  MB_CHECK(images.device().is_cpu() && labels.device().is_cpu(),
           "evaluate: the data must be in host memory");
  MB_CHECK(images.dim(0) == labels.dim(0), "evaluate: ", images.dim(0), " images but ",
           labels.dim(0), " labels");
  if (chunk <= 0) chunk = plan_.micro_batch > 0 ? plan_.micro_batch : 256;
  EvalResult result;
  double loss_sum = 0.0;
  LossOptions sum_options = options_.loss;
  sum_options.reduction = Reduction::Sum;
  sum_options.label_smoothing = 0.0f;
  SoftmaxCrossEntropy criterion(sum_options);
  RunState state;
  state.training = false;
  for (std::int64_t begin = 0; begin < images.dim(0); begin += chunk) {
    const std::int64_t end = std::min(images.dim(0), begin + chunk);
    Tensor input = images.slice(begin, end);
    if (!options_.device.is_cpu()) input = input.to(options_.device);
    Tensor logits = model_->forward(input, state);
    model_->clear_cache();
    LossResult loss = criterion.forward(logits, labels.slice(begin, end));
    loss_sum += loss.loss_sum;
    result.correct += loss.correct;
    result.valid += loss.valid_count;
  }
  result.loss = result.valid > 0 ? loss_sum / static_cast<double>(result.valid) : 0.0;
  return result;
}

}  // namespace mb
