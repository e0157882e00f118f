// The micro-batch engine's step: run the planned micro-batches, accumulate exactly, re-plan
// on OutOfMemory, clip, update once.
#include "engine/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

#include "data/loader.h"
#include "engine/evaluate.h"
#include "kernels/accumulate_grads.h"
#include "kernels/multi_tensor.h"
#include "runtime/allocator_registry.h"
#include "runtime/error.h"

namespace mb {
namespace {

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

// The shape of one row of `t` (t without its batch axis).
Shape row_shape(const Tensor& t) {
  return Shape(std::vector<std::int64_t>(t.shape().dims().begin() + 1, t.shape().dims().end()));
}

TrainerOptions resolved(const Module& model, TrainerOptions options) {
  MB_CHECK(options.micro_batch >= 0, "micro-batch must be >= 0 (0: auto), got ",
           options.micro_batch);
  // Until the input's shape is known (configure_planner), at least 2 samples per
  // micro-batch for a model with batch statistics.
  if (needs_batch_statistics(model)) {
    options.planner.min_micro_batch = std::max<std::int64_t>(options.planner.min_micro_batch, 2);
  }
  return options;
}

const Module& checked(const std::shared_ptr<Module>& model) {
  MB_CHECK(model != nullptr, "Trainer needs a model");
  return *model;
}

// Gradient views start at multiples of 64 floats (256 bytes), as separate allocations would.
constexpr std::int64_t kGradientAlignment = 64;

// Offsets of each parameter's gradient in the flat buffer: reverse registration order, the
// order backward roughly finishes them in, so the first buckets are ready first.
std::vector<std::int64_t> flat_offsets(
    const std::vector<std::pair<std::string, Parameter*>>& parameters, std::int64_t& total) {
  std::vector<std::int64_t> offsets(parameters.size());
  total = 0;
  for (std::size_t i = parameters.size(); i-- > 0;) {
    offsets[i] = total;
    const std::int64_t n = parameters[i].second->value.numel();
    total += (n + kGradientAlignment - 1) / kGradientAlignment * kGradientAlignment;
  }
  return offsets;
}

std::uint64_t fnv1a(std::uint64_t hash, const unsigned char* bytes, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    hash ^= bytes[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

// The planner's line on segment recomputation: the forward it repeats, the bytes per sample
// it saves (analytic, both ways) and, for an automatic plan, the micro-batch the same
// available bytes would give without it (the measured bytes per sample scaled by the
// analytic ratio).
std::string describe_recompute(const RecomputeCost& cost, const Plan& plan) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(2);
  const double gflop = 1e-9;
  // Note: a training step is taken as 3 forwards (backward computes the input and the
  // weight gradients, each about one forward's FLOPs, for convolutions and linear layers).
  const double share = static_cast<double>(cost.recomputed_flops) /
                       (3.0 * static_cast<double>(std::max<std::int64_t>(cost.forward_flops, 1)));
  out << "planner: segment recomputation runs " << cost.recomputed_flops * gflop << " of "
      << cost.forward_flops * gflop << " GFLOP of forward per sample again (+" << 100.0 * share
      << "% of a step of 3 forwards) and keeps " << format_bytes(cost.bytes_per_sample)
      << " per sample instead of " << format_bytes(cost.bytes_per_sample_without) << " (analytic)";
  const MemoryProfile& profile = plan.profile;
  const std::size_t overhead = plan.margin_bytes + profile.fixed_bytes;
  if (plan.automatic && cost.bytes_per_sample > 0 && plan.available_bytes > overhead) {
    const double without = static_cast<double>(profile.bytes_per_sample) *
                           static_cast<double>(cost.bytes_per_sample_without) /
                           static_cast<double>(cost.bytes_per_sample);
    const auto fits_without = static_cast<std::int64_t>(
        static_cast<double>(plan.available_bytes - overhead) / std::max(without, 1.0));
    out << " -> micro-batch " << plan.micro_batch << " instead of about "
        << std::min(fits_without, plan.batch_size);
  }
  return out.str();
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

// Note: a micro-batch adds its loss totals into its own sums, cleared when it starts, and
// those into the step's when it has completed: a micro-batch that runs out of memory after its
// loss leaves the step's sums as they were, and nothing is read back until the step ends.
struct Trainer::StepSums {
  CrossEntropySums step;
  CrossEntropySums micro_batch;
  double grad_squares;
};

Trainer::StepSums* Trainer::device_sums() const {
  return static_cast<StepSums*>(step_sums_.raw_data());
}

Trainer::StepSums Trainer::read_step_sums() const {
  StepSums host{};
  copy_bytes(&host, device_sums(), sizeof(StepSums), stream_);
  stream_.synchronize();
  return host;
}

Trainer::Trainer(std::shared_ptr<Module> model, const TrainerOptions& options)
    : model_(std::move(model)),
      options_(resolved(checked(model_), options)),
      allocator_(allocator_for(options_.device)),
      stream_(Stream::compute(options_.device)),
      planner_(allocator_, options_.planner, options_.log),
      feeder_(options_.device) {
  model_->to_device(options_.device);
  parameters_ = model_->named_parameters();
  communicator_ =
      options_.communicator != nullptr ? options_.communicator : single_process_communicator();
  TensorOptions grad_options;
  grad_options.device = options_.device;
  grad_options.tag = MemoryTag::Grad;
  std::int64_t total = 0;
  const std::vector<std::int64_t> offsets = flat_offsets(parameters_, total);
  const bool buffers = options_.accumulation == AccumulationMode::Buffers;
  try {
    flat_grads_ = Tensor::zeros(Shape{std::max<std::int64_t>(total, 1)}, grad_options);
    if (buffers) {
      flat_accumulators_ = Tensor::zeros(Shape{std::max<std::int64_t>(total, 1)}, grad_options);
    }
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
      Parameter* p = parameters_[i].second;
      const std::int64_t n = p->value.numel();
      Tensor view = flat_grads_.slice(offsets[i], offsets[i] + n).view(p->value.shape().dims());
      if (p->grad.defined()) view.copy_from(p->grad);
      p->grad = view;
      if (buffers) {
        accumulators_.push_back(
            flat_accumulators_.slice(offsets[i], offsets[i] + n).view(p->value.shape().dims()));
      }
    }
    optimizer_ = std::make_unique<Optimizer>(parameters_, options_.optimizer);
    step_sums_ = Tensor::zeros(Shape{static_cast<std::int64_t>(sizeof(StepSums))},
                               tensor_options(options_.device, MemoryTag::Other, DType::UInt8));
  } catch (const OutOfMemory& error) {
    throw_fixed_state_out_of_memory(error);
  }
  if (communicator_->distributed()) {
    std::vector<Parameter*> parameters;
    for (auto& [name, p] : parameters_) parameters.push_back(p);
    reducer_ = std::make_unique<GradientReducer>(communicator_, parameters, offsets,
                                                 buffers ? flat_accumulators_ : flat_grads_,
                                                 options_.bucket_bytes, stream_);
    log("data-parallel: rank " + std::to_string(communicator_->rank()) + " of " +
        std::to_string(communicator_->size()) + " (" + communicator_->backend() + "), " +
        std::to_string(reducer_->bucket_count()) + " gradient bucket(s) of up to " +
        format_bytes(options_.bucket_bytes) + ", overlap " +
        (options_.overlap_reduce && !buffers ? "on" : "off"));
  }
}

// Gradients and optimizer state did not fit beside the parameters: no micro-batch size can
// help, so the message gives the bytes the fixed state needs and the fixes that apply.
void Trainer::throw_fixed_state_out_of_memory(const OutOfMemory& error) const {
  std::size_t parameter_bytes = 0;
  for (const auto& [name, p] : parameters_) parameter_bytes += p->value.nbytes();
  const OptimizerOptions& o = options_.optimizer;
  const int state_copies = (o.kind != OptimizerKind::Sgd || o.momentum != 0.0f ? 1 : 0) +
                           (o.kind == OptimizerKind::AdamW ? 1 : 0);
  const int grad_copies = options_.accumulation == AccumulationMode::Buffers ? 2 : 1;
  const std::size_t fixed =
      parameter_bytes * static_cast<std::size_t>(1 + grad_copies + state_copies);
  std::ostringstream context;
  context << "the fixed state alone does not fit under the cap: parameters "
          << format_bytes(parameter_bytes) << " + gradients "
          << format_bytes(parameter_bytes * grad_copies)
          << (grad_copies == 2 ? " (with --accumulation buffers)" : "") << " + optimizer state "
          << format_bytes(parameter_bytes * state_copies) << " = " << format_bytes(fixed)
          << ", before any activation; while allocating it:";
  throw OutOfMemory(error.requested_bytes(), error.report(), context.str(), __FILE__, __LINE__,
                    "Fix: raise --memory-limit above " + format_bytes(fixed) +
                        " plus room for a few samples' activations, or use a smaller model" +
                        (state_copies > 0 ? ", or an optimizer with less state (sgd with "
                                            "--momentum 0 keeps none)"
                                          : std::string()) +
                        (grad_copies == 2 ? ", or --accumulation inplace" : std::string()));
}

Trainer::~Trainer() = default;

void Trainer::log(const std::string& message) const {
  if (options_.log) options_.log(message);
}

std::vector<Tensor> Trainer::gradients() {
  if (options_.accumulation == AccumulationMode::Buffers) return accumulators_;
  std::vector<Tensor> grads;
  for (auto& [name, p] : parameters_) grads.push_back(p->grad);
  return grads;
}

void Trainer::configure_planner(const Shape& sample_shape) {
  const std::int64_t values = batch_statistics_values_per_sample(*model_, sample_shape);
  PlannerOptions options = options_.planner;
  options.min_micro_batch =
      std::max(options.min_micro_batch, min_micro_batch_for_statistics(values));
  if (options.min_micro_batch != planner_.options().min_micro_batch && values > 0) {
    log("planner: the deepest BatchNorm layer sees " + std::to_string(values) +
        " value(s) per channel per sample at input " + sample_shape.to_string() +
        " -> micro-batches of at least " + std::to_string(options.min_micro_batch) + " samples (" +
        std::to_string(kMinValuesPerChannel) + " values per channel)");
  }
  const std::int64_t limit = options_.tensor_element_limit > 0 ? options_.tensor_element_limit
                             : options_.device.is_cuda()       ? kMaxTensorElements
                                                               : 0;
  // Traced only where a limit applies (CUDA, or a test's explicit one).
  const std::int64_t largest =
      limit > 0 ? largest_tensor_values_per_sample(*model_, sample_shape) : 0;
  if (largest > 0) {
    options.max_micro_batch = std::max<std::int64_t>(1, limit / largest);
    if (options.max_micro_batch < options.min_micro_batch) {
      MB_THROW(InvalidArgument, "at input ", sample_shape.to_string(),
               " one sample makes a tensor of ", largest, " elements, so only ",
               options.max_micro_batch, " sample(s) fit under the limit of ", limit,
               " elements per tensor, fewer than the ", options.min_micro_batch,
               " BatchNorm needs. Fix: use a smaller input size or a model without BatchNorm");
    }
    log("planner: the largest tensor holds " + std::to_string(largest) +
        " elements per sample at input " + sample_shape.to_string() + " and a tensor may hold " +
        std::to_string(limit) + " -> micro-batches of at most " +
        std::to_string(options.max_micro_batch) + " samples");
  }
  planner_ = Planner(allocator_, options, options_.log);
}

MemoryProfile Trainer::measure(const Shape& sample_shape, const Shape& label_shape) {
  configure_planner(sample_shape);
  return planner_.probe(
      [&](std::int64_t samples) { return probe_peak(sample_shape, label_shape, samples); },
      training_bytes_per_sample(*model_, sample_shape));
}

const Plan& Trainer::plan(std::int64_t batch_size, const Shape& sample_shape,
                          const Shape& label_shape) {
  configure_planner(sample_shape);
  // A plan check runs what a step of that micro-batch runs: it, a second one where the split
  // has two (it finds the blocks the first left cached, not a fresh arena, and best fit can
  // place them worse: ResNet-20 under 32 MiB ran a check of [31, 16] and then failed a step's
  // second 31), then the smaller sizes the split ends with. The probes (Planner::probe: the
  // minimum and 2 more, where plan checks never go) run alone: a tiny remainder merged into
  // one would make it larger than probed.
  const std::int64_t min_size = planner_.options().min_micro_batch;
  const auto measure = [&](std::int64_t samples) {
    std::vector<std::int64_t> then;
    if (samples > min_size + 2 && samples < batch_size) {
      const std::vector<std::int64_t> tail = split_tail(batch_size, samples, min_size);
      const std::int64_t full =
          split_count(batch_size, samples, min_size) - static_cast<std::int64_t>(tail.size());
      if (full >= 2) then.push_back(samples);
      then.insert(then.end(), tail.begin(), tail.end());
    }
    return probe_peak(sample_shape, label_shape, samples, then);
  };
  plan_ = planner_.plan(batch_size, options_.micro_batch, measure,
                        training_bytes_per_sample(*model_, sample_shape));
  const RecomputeCost cost = recompute_cost(*model_, sample_shape);
  if (cost.recomputed_flops > 0) log(describe_recompute(cost, plan_));
  return plan_;
}

void Trainer::abandon_micro_batch() {
  // The aborted micro-batch's kernels may still be running: let them finish before their
  // tensors go back to the pool, so no block is handed on (to any stream, or released)
  // while a kernel still reads or writes it. Rare path: the wait costs nothing per step.
  stream_.synchronize();
  model_->clear_cache();
  model_->abort_micro_batch();
  feeder_.reset();
}

RunPeak Trainer::probe_peak(const Shape& sample_shape, const Shape& label_shape,
                            std::int64_t samples, const std::vector<std::int64_t>& then) {
  // The inputs live where a step's batch does, outside the arena (host batch buffers); on
  // CUDA the feeder copies them in, as in a step.
  TensorOptions input_options;
  input_options.tag = MemoryTag::Data;
  input_options.allocator = host_batch_allocator();
  input_options.dtype = input_dtype_;
  std::vector<std::int64_t> sizes{samples};
  sizes.insert(sizes.end(), then.begin(), then.end());
  const std::int64_t rows = *std::max_element(sizes.begin(), sizes.end());
  Tensor images = Tensor::zeros(batch_shape(rows, sample_shape), input_options);
  TensorOptions label_options = input_options;
  label_options.dtype = DType::Int32;
  Tensor labels = Tensor::zeros(batch_shape(rows, label_shape), label_options);
  // From an emptied cache, so that no segment an earlier size left behind decides where
  // this size's blocks go (a training step releases cached segments before it runs out of
  // memory too).
  stream_.synchronize();
  allocator_->empty_cache();
  const std::size_t baseline = allocator_->report().allocated;
  allocator_->reset_peak();
  try {
    // A step holds the next micro-batch's input while this one runs (double buffering).
    feeder_.stage(images, 0, sizes[0], 0);
    feeder_.stage(images, 0, sizes.size() > 1 ? sizes[1] : samples, 1);
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      const int index = static_cast<int>(k);
      if (k >= 1 && k + 1 < sizes.size()) feeder_.stage(images, 0, sizes[k + 1], index + 1);
      run_micro_batch(labels, 0, sizes[k], index, samples);
    }
  } catch (...) {
    abandon_micro_batch();
    allocator_->set_micro_batch(-1);
    images = Tensor();
    labels = Tensor();
    stream_.synchronize();
    allocator_->empty_cache();  // what comes next starts from the state this one found
    throw;
  }
  model_->abort_micro_batch();  // a probe must not count in BatchNorm statistics
  stream_.synchronize();
  feeder_.reset();
  allocator_->set_micro_batch(-1);
  images = Tensor();
  labels = Tensor();
  allocator_->empty_cache();
  const auto above = [baseline](std::size_t peak) { return peak > baseline ? peak - baseline : 0; };
  RunPeak peak;
  peak.allocated = above(allocator_->peak_allocated());
  peak.reserved = std::max(peak.allocated, above(allocator_->peak_reserved()));
  return peak;
}

void Trainer::run_micro_batch(const Tensor& labels, std::int64_t offset, std::int64_t count,
                              int index, std::int64_t total_valid, BackwardObserver* observer) {
  allocator_->set_micro_batch(index);
  allocator_->mark("micro-batch " + std::to_string(index) + " start (" + std::to_string(count) +
                   " samples)");
  RunState state;
  state.training = true;
  state.seed = options_.seed;
  state.step = static_cast<std::uint32_t>(steps());
  state.sample_offset = first_sample_ + offset;
  state.timer = options_.layer_timer;
  Tensor logits = model_->forward(
      model_input(feeder_.take(index), options_.input_normalization, stream_), state);

  const bool in_place = options_.accumulation == AccumulationMode::InPlace;
  const GradientMode first_or_later =
      index == 0 ? GradientMode::Overwrite : GradientMode::Accumulate;
  BackwardState backward_state;
  backward_state.need_input_grad = false;
  backward_state.observer = observer;
  backward_state.timer = options_.layer_timer;
  // InPlace: a summed loss (seed 1 per sample), added into the gradient buffers; 1/B is
  // applied in the update. Buffers: this micro-batch's mean, overwriting its gradient.
  LossOptions loss_options = options_.loss;
  if (in_place) loss_options.reduction = Reduction::Sum;
  backward_state.mode = in_place ? first_or_later : GradientMode::Overwrite;
  const Tensor label_slice = labels.slice(offset, offset + count);
  StepSums* sums = device_sums();
  fill_words(&sums->micro_batch, 0, sizeof(CrossEntropySums) / 4, stream_);
  loss_classes_ = logits.dim(1);
  Tensor grad_logits = SoftmaxCrossEntropy(loss_options)
                           .forward_backward_into(logits, label_slice, 1.0f, &sums->micro_batch);
  logits = Tensor();
  model_->backward(grad_logits, backward_state);
  grad_logits = Tensor();
  feeder_.release(index);

  if (!in_place) {
    // acc (+)= factor * grad with the exact factor n_k / B of this micro-batch.
    float factor = 1.0f;
    if (options_.loss.reduction == Reduction::Mean) {
      // The micro-batch's valid labels, counted on the host (the device's count is read once,
      // at the end of the step).
      factor = static_cast<float>(
          static_cast<double>(count_valid(label_slice, options_.loss.ignore_index)) /
          static_cast<double>(std::max<std::int64_t>(total_valid, 1)));
    }
    std::vector<GradSlot> slots;
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
      slots.push_back(GradSlot{parameters_[i].second->grad.data<float>(),
                               accumulators_[i].data<float>(), accumulators_[i].numel()});
    }
    accumulate_grads(stream_, slots.data(), static_cast<int>(slots.size()), factor, first_or_later);
  }
  add_cross_entropy_sums(stream_, &sums->micro_batch, &sums->step);
  model_->commit_micro_batch();
  allocator_->mark("micro-batch " + std::to_string(index) + " end");
}

void Trainer::run_micro_batches(const Tensor& images, const Tensor& labels,
                                std::int64_t total_valid, StepResult& result) {
  const std::int64_t batch = images.dim(0);
  std::vector<std::int64_t> sizes = plan_.split(batch);
  const auto clear_step_sums = [&] {
    fill_words(&device_sums()->step, 0, sizeof(CrossEntropySums) / 4, stream_);
  };
  clear_step_sums();
  std::int64_t offset = 0;
  std::size_t k = 0;
  model_->begin_batch();
  if (reducer_) reducer_->begin_step();
  const bool overlap = reducer_ != nullptr && options_.overlap_reduce &&
                       options_.accumulation == AccumulationMode::InPlace;
  // Staging allocates on a device, so it runs inside the try: an OutOfMemory while staging
  // (also the re-stage after a re-plan) is re-planned like one in the micro-batch itself.
  bool staged = false;
  while (k < sizes.size()) {
    const std::int64_t count = sizes[k];
    const int index = static_cast<int>(k);
    try {
      if (!staged) feeder_.stage(images, offset, count, index);
      staged = true;
      if (k + 1 < sizes.size()) feeder_.stage(images, offset + count, sizes[k + 1], index + 1);
      const bool last = k + 1 == sizes.size();
      if (overlap && last) reducer_->arm();
      run_micro_batch(labels, offset, count, index, total_valid,
                      overlap && last ? reducer_.get() : nullptr);
      result.micro_batches.push_back(count);
      offset += count;
      ++k;
    } catch (const OutOfMemory& error) {
      abandon_micro_batch();
      if (reducer_) reducer_->keep_started();
      plan_ = planner_.after_out_of_memory(plan_, error, count, index);
      ++result.replans;
      if (options_.accumulation == AccumulationMode::InPlace && k > 0) {
        // Earlier micro-batches were added into the gradient buffers and this one may have
        // been partly added: redo the batch from its start (Overwrite on the first).
        log("re-plan: in-place accumulation redoes the batch from its first sample");
        model_->begin_batch();
        sizes = plan_.split(batch);
        result.micro_batches.clear();
        clear_step_sums();
        offset = 0;
        k = 0;
      } else {
        const std::vector<std::int64_t> rest = plan_.split(batch - offset);
        sizes.resize(k);
        sizes.insert(sizes.end(), rest.begin(), rest.end());
      }
      staged = false;
    }
  }
  allocator_->set_micro_batch(-1);
}

StepResult Trainer::step(const Tensor& images, const Tensor& labels, float lr,
                         std::int64_t first_sample) {
  const auto started = std::chrono::steady_clock::now();
  MB_CHECK(images.defined() && labels.defined(), "step: undefined batch");
  MB_CHECK(images.device().is_cpu() && labels.device().is_cpu(),
           "step: the batch must be in host memory (the engine moves micro-batches)");
  MB_CHECK(images.ndim() >= 2 && images.dim(0) == labels.dim(0), "step: ", images.dim(0),
           " images but ", labels.dim(0), " labels");
  MB_CHECK(labels.dtype() == DType::Int32, "step: labels must be int32");
  MB_CHECK(images.dim(0) > 0, "step: an empty batch");
  MB_CHECK(first_sample >= 0, "step: first sample ", first_sample, " is negative");
  MB_CHECK(images.dtype() == DType::Float32 || images.dtype() == DType::UInt8,
           "step: images must be float32 or uint8, got ", dtype_name(images.dtype()));
  if (images.dtype() != input_dtype_) {
    // The probes measured another input; plan again for this one.
    input_dtype_ = images.dtype();
    plan_ = Plan();
  }
  // A batch larger than the one planned for (the first batch was short: an image folder left
  // bad images out of it) may need another split: plan again.
  if (plan_.batch_size != 0 && images.dim(0) > plan_.batch_size) plan_ = Plan();
  if (plan_.batch_size == 0) plan(images.dim(0), row_shape(images), row_shape(labels));

  StepResult result;
  result.local_samples = images.dim(0);
  // The normalization counts the global batch: one all-reduce before the micro-batches.
  std::int64_t counts[2] = {count_valid(labels, options_.loss.ignore_index), images.dim(0)};
  communicator_->all_reduce_sum(counts, 2);
  const std::int64_t total_valid = counts[0];
  result.samples = counts[1];
  first_sample_ = first_sample;
  run_micro_batches(images, labels, total_valid, result);
  CrossEntropyTotals totals;
  if (reducer_) {
    // Gradients in buckets, then one all-reduce of the loss, the correct count and every
    // BatchNorm layer's count, Σx and Σx², so running statistics are the global batch's.
    result.reduce = reducer_->finish();
    totals = cross_entropy_totals(read_step_sums().step, loss_classes_, options_.loss.ignore_index);
    std::vector<double> values{totals.loss_sum, static_cast<double>(totals.correct)};
    model_->append_batch_statistics(values);
    communicator_->all_reduce_sum(values.data(), static_cast<std::int64_t>(values.size()));
    totals.loss_sum = values[0];
    totals.correct = static_cast<std::int64_t>(values[1]);
    std::size_t at = 2;
    model_->assign_batch_statistics(values, at);
  }

  // The optimizer multiplies the gradient by grad_scale: 1/B for InPlace's summed gradient,
  // times the clipping coefficient.
  const std::vector<Tensor> grads = gradients();
  float grad_scale = 1.0f;
  if (options_.accumulation == AccumulationMode::InPlace &&
      options_.loss.reduction == Reduction::Mean) {
    grad_scale =
        static_cast<float>(1.0 / static_cast<double>(std::max<std::int64_t>(total_valid, 1)));
  }
  std::vector<ConstBufferSlot> grad_slots;
  for (const Tensor& g : grads) grad_slots.push_back(ConstBufferSlot{g.data<float>(), g.numel()});
  // The step's one wait for the device: the gradient norm and the loss totals in one read,
  // before the update (clipping needs the norm, and a bad label or a NaN stops the step
  // before it changes the weights or BatchNorm's running statistics).
  sum_of_squares_into(stream_, grad_slots.data(), static_cast<int>(grad_slots.size()),
                      &device_sums()->grad_squares);
  const StepSums sums = read_step_sums();
  if (!reducer_) {
    totals = cross_entropy_totals(sums.step, loss_classes_, options_.loss.ignore_index);
  }
  result.grad_norm = std::sqrt(sums.grad_squares) * grad_scale;
  if (!std::isfinite(result.grad_norm)) {
    MB_THROW(Error, "step ", steps(), ": the gradient norm is ", result.grad_norm,
             " (NaN or Inf in the gradients). Fix: lower --lr, or enable --clip-norm");
  }
  model_->end_batch();
  if (options_.clip_norm > 0.0 && result.grad_norm > options_.clip_norm) {
    grad_scale = static_cast<float>(grad_scale * options_.clip_norm / (result.grad_norm + 1e-6));
  }
  allocator_->mark("optimizer update");
  // Note: no wait for the update. Whatever reads the weights next is ordered after it on the
  // compute stream (the next step's read, Tensor copies, evaluation), so step() returns while
  // the device may still be updating.
  optimizer_->step(grads, lr, grad_scale);

  result.loss = options_.loss.reduction == Reduction::Mean
                    ? totals.loss_sum / static_cast<double>(std::max<std::int64_t>(total_valid, 1))
                    : totals.loss_sum;
  result.correct = totals.correct;
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

std::uint64_t Trainer::state_checksum() {
  std::uint64_t hash = 14695981039346656037ull;
  const auto add = [&](const Tensor& t) {
    const Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
    hash = fnv1a(hash, static_cast<const unsigned char*>(host.raw_data()), host.nbytes());
  };
  for (auto& [name, p] : parameters_) add(p->value);
  for (auto& [name, b] : model_->named_buffers()) add(*b);
  return hash;
}

void Trainer::check_ranks_agree(const std::string& where) {
  if (!communicator_->distributed()) return;
  const std::uint64_t ours = state_checksum();
  std::uint64_t low = ours, high = ours;
  communicator_->all_reduce_min(&low, 1);
  communicator_->all_reduce_max(&high, 1);
  if (low != high) {
    MB_THROW(Error, where, ": the weights differ between ranks (checksums from ", low, " to ", high,
             "; rank ", communicator_->rank(), " has ", ours,
             "). The ranks no longer train one model: a rank ran other code or other data");
  }
}

}  // namespace mb
