// MemoryTrace: recording a forward over shapes and replaying its backward.
#include "layers/memory_trace.h"

#include <algorithm>

#include "runtime/error.h"

namespace mb {
namespace {

std::size_t float_bytes(const Shape& shape) {
  return static_cast<std::size_t>(shape.numel()) * sizeof(float);
}

}  // namespace

MemoryTrace::Id MemoryTrace::new_value(const Shape& shape) {
  largest_values_ = std::max(largest_values_, shape.numel());
  buffers_.push_back(Buffer{float_bytes(shape), false});
  values_.push_back(Value{shape, static_cast<int>(buffers_.size()) - 1});
  return static_cast<Id>(values_.size()) - 1;
}

const MemoryTrace::Value& MemoryTrace::value(Id tensor) const {
  MB_CHECK(tensor >= 0 && tensor < static_cast<Id>(values_.size()), "MemoryTrace: tensor id ",
           tensor, " was not recorded in this trace");
  return values_[static_cast<std::size_t>(tensor)];
}

MemoryTrace::Id MemoryTrace::input(const Shape& shape) {
  const Id tensor = new_value(shape);
  buffers_.back().external = true;
  return tensor;
}

const Shape& MemoryTrace::shape(Id tensor) const {
  return value(tensor).shape;
}

MemoryTrace::Id MemoryTrace::layer(Id input, const Shape& output_shape, Keep keep,
                                   std::size_t own_bytes, std::size_t recompute_bytes) {
  value(input);
  const Id output = new_value(output_shape);
  steps_.push_back(Step{StepKind::Layer, {input}, output, keep, own_bytes, recompute_bytes});
  return output;
}

MemoryTrace::Id MemoryTrace::segment(Id input, const MemoryTrace& inner, Id inner_output,
                                     std::int64_t forward_flops) {
  value(input);
  const Id output = new_value(inner.shape(inner_output));
  Step step{StepKind::Segment, {input}, output, Keep::Input, 0};
  step.segment_peak = inner.backward_peak_bytes(inner_output);
  steps_.push_back(step);
  largest_values_ = std::max(largest_values_, inner.largest_values_);
  if (inner.min_statistics_values_ > 0 &&
      (min_statistics_values_ == 0 || inner.min_statistics_values_ < min_statistics_values_)) {
    min_statistics_values_ = inner.min_statistics_values_;
  }
  recomputed_flops_ += forward_flops + inner.recomputed_flops_;
  return output;
}

MemoryTrace::Id MemoryTrace::view(Id input, const Shape& output_shape) {
  MB_CHECK(output_shape.numel() == value(input).shape.numel(), "MemoryTrace: a view ",
           output_shape.to_string(), " of ", value(input).shape.to_string(),
           " must have as many elements");
  values_.push_back(Value{output_shape, value(input).buffer});
  const Id output = static_cast<Id>(values_.size()) - 1;
  steps_.push_back(Step{StepKind::View, {input}, output, Keep::Nothing, 0});
  return output;
}

MemoryTrace::Id MemoryTrace::add(Id a, Id b) {
  MB_CHECK(value(a).shape == value(b).shape, "MemoryTrace: add of ", value(a).shape.to_string(),
           " and ", value(b).shape.to_string());
  const Id output = new_value(value(a).shape);
  steps_.push_back(Step{StepKind::Add, {a, b}, output, Keep::Nothing, 0});
  return output;
}

MemoryTrace::Id MemoryTrace::concat(Id a, Id b) {
  std::vector<std::int64_t> dims = value(a).shape.dims();
  MB_CHECK(dims.size() >= 2 && value(b).shape.ndim() == static_cast<int>(dims.size()),
           "MemoryTrace: concat of ", value(a).shape.to_string(), " and ",
           value(b).shape.to_string());
  dims[1] += value(b).shape[1];
  const Id output = new_value(Shape(dims));
  steps_.push_back(Step{StepKind::Concat, {a, b}, output, Keep::Nothing, 0});
  return output;
}

int MemoryTrace::kept_buffer(const Step& step) const {
  switch (step.keep) {
    case Keep::Input: return value(step.inputs[0]).buffer;
    case Keep::Output: return value(step.output).buffer;
    case Keep::Nothing: return -1;
  }
  return -1;
}

void MemoryTrace::batch_statistics(Id input) {
  const Shape& shape = value(input).shape;
  MB_CHECK(shape.ndim() >= 2 && shape[0] > 0 && shape[1] > 0,
           "MemoryTrace::batch_statistics: needs an [N, C, ...] input, got ", shape.to_string());
  const std::int64_t per_sample = shape.numel() / (shape[0] * shape[1]);
  if (min_statistics_values_ == 0 || per_sample < min_statistics_values_) {
    min_statistics_values_ = per_sample;
  }
}

std::size_t MemoryTrace::saved_bytes() const {
  std::vector<bool> kept(buffers_.size(), false);
  std::size_t bytes = 0;
  for (const Step& step : steps_) {
    bytes += step.own_bytes;
    const int buffer = kept_buffer(step);
    if (buffer < 0 || kept[static_cast<std::size_t>(buffer)]) continue;
    kept[static_cast<std::size_t>(buffer)] = true;
    bytes += buffers_[static_cast<std::size_t>(buffer)].bytes;
  }
  return bytes;
}

std::size_t MemoryTrace::backward_peak_bytes(Id output) const {
  value(output);
  std::size_t alive = 0;
  // How many steps still hold each kept buffer: it is freed by the last of them to run
  // backward, the earliest in forward order.
  std::vector<int> holders(buffers_.size(), 0);
  for (const Step& step : steps_) {
    alive += step.own_bytes;
    const int buffer = kept_buffer(step);
    if (buffer < 0 || buffers_[static_cast<std::size_t>(buffer)].external) continue;
    if (holders[static_cast<std::size_t>(buffer)]++ == 0)
      alive += buffers_[static_cast<std::size_t>(buffer)].bytes;
  }

  // Gradient buffers, shared by the tensors whose gradient is a view of another's (View)
  // or the same tensor (Add); freed when the last of those tensors lets go of it.
  struct Gradient {
    std::size_t bytes;
    int users;
  };
  std::vector<Gradient> gradients;
  std::vector<int> gradient_of(values_.size(), -1);
  const auto create = [&](Id tensor) {
    const std::size_t bytes = float_bytes(value(tensor).shape);
    gradients.push_back(Gradient{bytes, 1});
    gradient_of[static_cast<std::size_t>(tensor)] = static_cast<int>(gradients.size()) - 1;
    alive += bytes;
  };
  const auto share = [&](Id tensor, int gradient) {
    gradient_of[static_cast<std::size_t>(tensor)] = gradient;
    gradients[static_cast<std::size_t>(gradient)].users += 1;
  };
  const auto release = [&](Id tensor) {
    const int gradient = gradient_of[static_cast<std::size_t>(tensor)];
    if (gradient < 0) return;
    gradient_of[static_cast<std::size_t>(tensor)] = -1;
    Gradient& g = gradients[static_cast<std::size_t>(gradient)];
    if (--g.users == 0) alive -= g.bytes;
  };

  // The loss gradient: the engine holds it until backward returns (one extra user).
  create(output);
  gradients.back().users += 1;
  std::size_t peak = alive;

  for (auto step = steps_.rbegin(); step != steps_.rend(); ++step) {
    peak = std::max(peak, alive + step->recompute_bytes);
    const int output_gradient = gradient_of[static_cast<std::size_t>(step->output)];
    if (step->kind == StepKind::Segment) {
      // Its own peak counts its output's gradient, which is alive here already.
      const std::size_t own_gradient =
          output_gradient >= 0 ? gradients[static_cast<std::size_t>(output_gradient)].bytes : 0;
      peak = std::max(peak, alive - own_gradient + step->segment_peak);
    }
    // A tensor that already has a gradient (it feeds several steps) gets this step's part
    // as a temporary that is added into it.
    std::size_t temporaries = 0;
    for (const Id input : step->inputs) {
      if (buffers_[static_cast<std::size_t>(value(input).buffer)].external) continue;
      const bool has_gradient = gradient_of[static_cast<std::size_t>(input)] >= 0;
      switch (step->kind) {
        case StepKind::Layer:
        case StepKind::Segment:
        case StepKind::Concat:
          if (has_gradient) {
            temporaries += float_bytes(value(input).shape);
          } else {
            create(input);
          }
          break;
        case StepKind::View:
        case StepKind::Add:
          // Added in place when the input already has a gradient.
          if (!has_gradient && output_gradient >= 0) share(input, output_gradient);
          break;
      }
    }
    peak = std::max(peak, alive + temporaries);
    alive -= step->own_bytes;
    const int buffer = kept_buffer(*step);
    if (buffer >= 0 && !buffers_[static_cast<std::size_t>(buffer)].external &&
        --holders[static_cast<std::size_t>(buffer)] == 0) {
      alive -= buffers_[static_cast<std::size_t>(buffer)].bytes;
    }
    release(step->output);
  }
  return peak;
}

}  // namespace mb
