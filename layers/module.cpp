// Module bookkeeping and Sequential.
#include "layers/module.h"

#include "layers/fusion.h"
#include "runtime/error.h"

namespace mb {

Tensor Module::forward(const Tensor& input, const RunState& state) {
  MB_CHECK(input.defined(), type_name_, ".forward: undefined input");
  MB_CHECK(input.device() == device_, type_name_, ".forward: input on ", input.device().str(),
           " but module on ", device_.str(), ". Fix: call to_device() or move the input");
  if (state.timer == nullptr) return forward_impl(input, state);
  LayerTimer::Scope timed(*state.timer, type_name_, false, stream());
  return forward_impl(input, state);
}

Tensor Module::backward(const Tensor& grad_output, const BackwardState& state) {
  MB_CHECK(grad_output.defined(), type_name_, ".backward: undefined gradient");
  MB_CHECK(grad_output.device() == device_, type_name_, ".backward: gradient on ",
           grad_output.device().str(), " but module on ", device_.str());
  Tensor grad_input;
  if (state.timer == nullptr) {
    grad_input = backward_impl(grad_output, state);
  } else {
    LayerTimer::Scope timed(*state.timer, type_name_, true, stream());
    grad_input = backward_impl(grad_output, state);
  }
  if (state.observer != nullptr) state.observer->backward_done(*this);
  return grad_input;
}

void Module::begin_batch() {
  for (auto& [name, child] : children_) child->begin_batch();
}

void Module::end_batch() {
  for (auto& [name, child] : children_) child->end_batch();
}

void Module::append_batch_statistics(std::vector<double>& out) {
  for (auto& [name, child] : children_) child->append_batch_statistics(out);
}

void Module::assign_batch_statistics(const std::vector<double>& in, std::size_t& at) {
  for (auto& [name, child] : children_) child->assign_batch_statistics(in, at);
}

void Module::commit_micro_batch() {
  for (auto& [name, child] : children_) child->commit_micro_batch();
}

void Module::abort_micro_batch() {
  for (auto& [name, child] : children_) child->abort_micro_batch();
}

void Module::clear_cache() {
  for (auto& [name, child] : children_) child->clear_cache();
}

void Module::fuse_memory_bound_layers() {
  for (auto& [name, child] : children_) child->fuse_memory_bound_layers();
}

std::vector<std::pair<std::string, Parameter*>> Module::named_parameters() {
  std::vector<std::pair<std::string, Parameter*>> result;
  for (auto& [name, p] : parameters_) result.emplace_back(name, p.get());
  for (auto& [child_name, child] : children_) {
    for (auto& [name, p] : child->named_parameters())
      result.emplace_back(child_name + "." + name, p);
  }
  return result;
}

std::vector<Parameter*> Module::own_parameters() {
  std::vector<Parameter*> result;
  for (auto& [name, p] : parameters_) result.push_back(p.get());
  return result;
}

std::vector<std::pair<std::string, Tensor*>> Module::named_buffers() {
  std::vector<std::pair<std::string, Tensor*>> result;
  for (auto& [name, b] : buffers_) result.emplace_back(name, b.get());
  for (auto& [child_name, child] : children_) {
    for (auto& [name, b] : child->named_buffers()) result.emplace_back(child_name + "." + name, b);
  }
  return result;
}

std::int64_t Module::parameter_count() {
  std::int64_t count = 0;
  for (auto& [name, p] : named_parameters()) count += p->value.numel();
  return count;
}

void Module::to_device(const Device& device) {
  for (auto& [name, p] : parameters_) {
    if (p->value.device() != device) p->value = p->value.to(device);
    if (p->grad.defined() && p->grad.device() != device) p->grad = p->grad.to(device);
  }
  for (auto& [name, b] : buffers_) {
    if (b->device() != device) *b = b->to(device);
  }
  for (auto& [name, child] : children_) child->to_device(device);
  device_ = device;
  allocate_state();
}

Parameter& Module::register_parameter(const std::string& name, Tensor value, bool decay) {
  MB_CHECK(value.tag() == MemoryTag::Param, type_name_, ": parameter '", name,
           "' must be allocated with MemoryTag::Param");
  auto p = std::make_unique<Parameter>();
  p->value = std::move(value);
  p->decay = decay;
  parameters_.emplace_back(name, std::move(p));
  return *parameters_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor value) {
  buffers_.emplace_back(name, std::make_unique<Tensor>(std::move(value)));
  return *buffers_.back().second;
}

Tensor Module::take_cached_input(Tensor& cache, const Tensor& grad_output,
                                 const std::string& who) const {
  if (!cache.defined()) {
    MB_THROW(InvalidArgument, who,
             ": backward() without a cached input. Fix: call forward() first (and not "
             "clear_cache() in between); each forward() allows one backward()");
  }
  Tensor input = cache;
  cache = Tensor();
  const Shape out_shape = output_shape(input.shape());
  if (grad_output.shape() != out_shape) {
    MB_THROW(InvalidArgument, who, ": gradient ", grad_output.shape().to_string(),
             " does not match the output ", out_shape.to_string(), " of input ",
             input.shape().to_string());
  }
  return input;
}

void Module::ensure_grad(Parameter& p) {
  if (p.grad.defined() && p.grad.device() == p.value.device()) return;
  TensorOptions options;
  options.device = p.value.device();
  options.tag = MemoryTag::Grad;
  p.grad = Tensor::zeros(p.value.shape(), options);
}

std::size_t Module::saved_bytes(const Shape& input) const {
  MemoryTrace trace;
  trace_forward(trace, trace.input(input));
  return trace.saved_bytes();
}

std::size_t Module::training_bytes(const Shape& input, bool recompute_segments) const {
  MemoryTrace trace(recompute_segments);
  const MemoryTrace::Id output = trace_forward(trace, trace.input(input));
  return trace.backward_peak_bytes(output);
}

namespace {

// `sample_shape` with a batch dimension of `batch` in front.
Shape batch_of(std::int64_t batch, const Shape& sample_shape) {
  std::vector<std::int64_t> dims{batch};
  dims.insert(dims.end(), sample_shape.dims().begin(), sample_shape.dims().end());
  return Shape(dims);
}

// The model's forward traced for one sample of `sample_shape`.
MemoryTrace trace_one_sample(const Module& model, const Shape& sample_shape) {
  MemoryTrace trace;
  model.trace_forward(trace, trace.input(batch_of(1, sample_shape)));
  return trace;
}

}  // namespace

std::size_t training_bytes_per_sample(const Module& model, const Shape& sample_shape,
                                      bool recompute_segments) {
  const std::size_t at_one = model.training_bytes(batch_of(1, sample_shape), recompute_segments);
  const std::size_t at_two = model.training_bytes(batch_of(2, sample_shape), recompute_segments);
  return (at_two > at_one ? at_two - at_one : 0) +
         static_cast<std::size_t>(sample_shape.numel()) * sizeof(float);
}

RecomputeCost recompute_cost(const Module& model, const Shape& sample_shape) {
  RecomputeCost cost;
  cost.recomputed_flops = trace_one_sample(model, sample_shape).recomputed_flops();
  if (cost.recomputed_flops == 0) return cost;
  cost.forward_flops = model.forward_flops(batch_of(1, sample_shape));
  cost.bytes_per_sample = training_bytes_per_sample(model, sample_shape);
  cost.bytes_per_sample_without = training_bytes_per_sample(model, sample_shape, false);
  return cost;
}

std::int64_t batch_statistics_values_per_sample(const Module& model, const Shape& sample_shape) {
  return trace_one_sample(model, sample_shape).min_statistics_values_per_sample();
}

std::int64_t largest_tensor_values_per_sample(const Module& model, const Shape& sample_shape) {
  return trace_one_sample(model, sample_shape).largest_tensor_values();
}

bool needs_batch_statistics(const Module& module) {
  if (module.uses_batch_statistics()) return true;
  for (const auto& [name, child] : module.children()) {
    if (needs_batch_statistics(*child)) return true;
  }
  return false;
}

Shape Sequential::output_shape(const Shape& input) const {
  Shape shape = input;
  for (const auto& [name, m] : children()) shape = m->output_shape(shape);
  return shape;
}

std::int64_t Sequential::forward_flops(const Shape& input) const {
  std::int64_t flops = 0;
  Shape shape = input;
  for (const auto& [name, m] : children()) {
    flops += m->forward_flops(shape);
    shape = m->output_shape(shape);
  }
  return flops;
}

MemoryTrace::Id Sequential::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  if (recompute_ && trace.recompute_segments()) {
    // Its own trace, replayed when its backward runs; outside, only its input is kept.
    MemoryTrace inner;
    MemoryTrace::Id x = inner.input(trace.shape(input));
    for (const auto& [name, m] : children()) x = m->trace_forward(inner, x);
    return trace.segment(input, inner, x, forward_flops(trace.shape(input)));
  }
  MemoryTrace::Id x = input;
  for (const auto& [name, m] : children()) x = m->trace_forward(trace, x);
  return x;
}

void Sequential::fuse_memory_bound_layers() {
  // Its own children, also when it is a recomputed segment (a chain of its own).
  std::vector<Module*> chain;
  for (const auto& [name, child] : children()) append_chain(*child, chain);
  // Composites fuse inside first: whether one recomputes its output (a fused residual block)
  // decides the links of the chain around it.
  for (Module* module : chain) module->fuse_memory_bound_layers();
  fuse_chain(chain);
}

void Sequential::clear_cache() {
  Module::clear_cache();
  segment_input_ = Tensor();
}

Tensor Sequential::forward_impl(const Tensor& input, const RunState& state) {
  Tensor x = input;
  for (const auto& [name, m] : children()) x = m->forward(x, state);
  if (recompute_ && state.training) {
    Module::clear_cache();
    segment_input_ = input;
    segment_state_ = state;
  }
  return x;
}

Tensor Sequential::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  if (segment_input_.defined()) {
    RunState again = segment_state_;
    again.recompute = true;
    Tensor x = segment_input_;
    segment_input_ = Tensor();
    for (const auto& [name, m] : children()) x = m->forward(x, again);
    MB_CHECK(x.shape() == grad_output.shape(), "Sequential.backward: gradient ",
             grad_output.shape().to_string(), " does not match the recomputed output ",
             x.shape().to_string());
    // The children keep what their backward needs; the output itself is not needed.
  }
  Tensor g = grad_output;
  const auto& modules = children();
  for (int i = static_cast<int>(modules.size()) - 1; i >= 0; --i) {
    BackwardState inner = state;
    if (i > 0) inner.need_input_grad = true;
    g = modules[i].second->backward(g, inner);
  }
  return g;
}

}  // namespace mb
