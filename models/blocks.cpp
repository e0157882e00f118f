// Residual blocks: forward with a shortcut, backward summing both paths' gradients.
#include "models/blocks.h"

#include "layers/activation.h"
#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/elementwise.h"
#include "layers/fusion.h"
#include "runtime/error.h"

namespace mb {

std::shared_ptr<Sequential> conv_bn_act(std::int64_t in_channels, std::int64_t out_channels,
                                        int kernel_size, int stride, int groups, bool relu6) {
  auto block = std::make_shared<Sequential>();
  block->add(std::make_shared<Conv2d>(in_channels, out_channels, kernel_size, stride,
                                      (kernel_size - 1) / 2, 1, groups, false));
  block->add(std::make_shared<BatchNorm2d>(out_channels));
  if (relu6) {
    block->add(std::make_shared<ReLU6>());
  } else {
    block->add(std::make_shared<ReLU>());
  }
  return block;
}

ResidualBlock::ResidualBlock(std::int64_t in_channels, std::int64_t planes, int stride,
                             bool bottleneck)
    : Module(bottleneck ? "Bottleneck" : "BasicBlock") {
  const std::int64_t out_channels = bottleneck ? planes * 4 : planes;
  main_ = std::make_shared<Sequential>();
  if (bottleneck) {
    main_->add("conv1", std::make_shared<Conv2d>(in_channels, planes, 1, 1, 0, 1, 1, false));
    main_->add("bn1", std::make_shared<BatchNorm2d>(planes));
    main_->add("relu1", std::make_shared<ReLU>());
    main_->add("conv2", std::make_shared<Conv2d>(planes, planes, 3, stride, 1, 1, 1, false));
    main_->add("bn2", std::make_shared<BatchNorm2d>(planes));
    main_->add("relu2", std::make_shared<ReLU>());
    main_->add("conv3", std::make_shared<Conv2d>(planes, out_channels, 1, 1, 0, 1, 1, false));
    main_->add("bn3", std::make_shared<BatchNorm2d>(out_channels));
  } else {
    main_->add("conv1", std::make_shared<Conv2d>(in_channels, planes, 3, stride, 1, 1, 1, false));
    main_->add("bn1", std::make_shared<BatchNorm2d>(planes));
    main_->add("relu1", std::make_shared<ReLU>());
    main_->add("conv2", std::make_shared<Conv2d>(planes, planes, 3, 1, 1, 1, 1, false));
    main_->add("bn2", std::make_shared<BatchNorm2d>(planes));
  }
  // The main path's children are registered directly under this block, so names read
  // "layer1.0.conv1.weight" as in torchvision.
  for (const auto& [name, child] : main_->children()) register_module(name, child);
  if (stride != 1 || in_channels != out_channels) {
    downsample_ = std::make_shared<Sequential>();
    downsample_->add(
        std::make_shared<Conv2d>(in_channels, out_channels, 1, stride, 0, 1, 1, false));
    downsample_->add(std::make_shared<BatchNorm2d>(out_channels));
    register_module("downsample", downsample_);
  }
  relu_out_ = register_module("relu_out", std::make_shared<ReLU>());
}

Shape ResidualBlock::output_shape(const Shape& input) const {
  return main_->output_shape(input);
}

std::int64_t ResidualBlock::forward_flops(const Shape& input) const {
  const Shape out = output_shape(input);
  return main_->forward_flops(input) + (downsample_ ? downsample_->forward_flops(input) : 0) +
         out.numel() * 2;
}

MemoryTrace::Id ResidualBlock::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  // The shortcut is recorded before the main path: backward_impl() visits the main path
  // first, and the trace is replayed last first.
  const MemoryTrace::Id shortcut = downsample_ ? downsample_->trace_forward(trace, input) : input;
  MemoryTrace::Id main = input;
  for (const auto& [name, child] : main_->children()) main = child->trace_forward(trace, main);
  const MemoryTrace::Id sum = trace.add(main, shortcut);
  // Fused, nothing of the output is kept: backward recomputes it for the mask.
  if (fused_residual_) {
    return trace.layer(sum, trace.shape(sum), Keep::Nothing, 0, recompute_bytes(trace.shape(sum)));
  }
  return relu_out_->trace_forward(trace, sum);
}

void ResidualBlock::fuse_memory_bound_layers() {
  std::vector<Module*> chain;
  for (const auto& [name, child] : main_->children()) append_chain(*child, chain);
  fuse_chain(chain);
  if (downsample_) downsample_->fuse_memory_bound_layers();
  last_batch_norm().set_activation(BnActivation::ReLU);
  last_batch_norm().set_keep_residual_output(false);
  relu_out_->set_absorbed(true);
  fused_residual_ = true;
}

bool ResidualBlock::recompute_input_from(RecomputeSource* source) {
  main_->children().front().second->recompute_input_from(source);
  if (downsample_) downsample_->children().front().second->recompute_input_from(source);
  input_source_ = source;
  return true;
}

void ResidualBlock::clear_cache() {
  Module::clear_cache();
  input_recomputed_ = false;
  shortcut_input_ = Tensor();
  last_output_ = nullptr;
}

bool ResidualBlock::can_recompute(const Tensor& tensor) const {
  return fused_residual_ && last_output_ != nullptr && tensor.defined() &&
         tensor.data<float>() == last_output_ && tensor.shape() == last_output_shape_ &&
         tensor.device() == device_;
}

Tensor ResidualBlock::recompute_output() const {
  MB_CHECK(fused_residual_ && last_output_ != nullptr, type_name(),
           ".recompute_output: no fused training forward to recompute (its backward already "
           "ran, or no forward). Fix: recompute before this block's backward");
  Tensor shortcut;
  if (downsample_) {
    auto* bn = dynamic_cast<BatchNorm2d*>(downsample_->children().back().second.get());
    MB_CHECK(bn != nullptr, type_name(), ": the shortcut must end with a BatchNorm2d");
    shortcut = bn->recompute_output();
  } else {
    shortcut = input_recomputed_ ? input_source_->recompute_output() : shortcut_input_;
  }
  return last_batch_norm().recompute_residual_output(shortcut);
}

std::size_t ResidualBlock::recompute_bytes(const Shape& output) const {
  // The output and, while it is made, the shortcut it adds (unless that is a kept handle).
  const std::size_t bytes = static_cast<std::size_t>(output.numel()) * sizeof(float);
  return downsample_ || input_source_ != nullptr ? 2 * bytes : bytes;
}

BatchNorm2d& ResidualBlock::last_batch_norm() const {
  auto* bn = dynamic_cast<BatchNorm2d*>(main_->children().back().second.get());
  MB_CHECK(bn != nullptr, type_name(), ": the main path must end with a BatchNorm2d");
  return *bn;
}

Tensor ResidualBlock::forward_impl(const Tensor& input, const RunState& state) {
  // main_ is not registered itself (its children are, under this block), so its stages
  // are run one by one rather than through main_->forward.
  if (fused_residual_) {
    const auto& stages = main_->children();
    Tensor main = input;
    for (std::size_t i = 0; i + 1 < stages.size(); ++i)
      main = stages[i].second->forward(main, state);
    Tensor shortcut = downsample_ ? downsample_->forward(input, state) : input;
    Tensor output = last_batch_norm().forward_residual(main, shortcut, state);
    input_recomputed_ = false;
    shortcut_input_ = Tensor();
    last_output_ = nullptr;
    if (state.training) {
      input_recomputed_ = input_source_ != nullptr && input_source_->can_recompute(input);
      if (!downsample_ && !input_recomputed_) shortcut_input_ = input;
      last_output_ = output.data<float>();
      last_output_shape_ = output.shape();
    }
    return output;
  }
  Tensor main = input;
  for (const auto& [name, child] : main_->children()) main = child->forward(main, state);
  Tensor shortcut = downsample_ ? downsample_->forward(input, state) : input;
  Tensor sum = add(main, shortcut);
  main = Tensor();
  shortcut = Tensor();
  return relu_out_->forward(sum, state);
}

Tensor ResidualBlock::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  BackwardState inner = state;
  inner.need_input_grad = true;
  const auto& stages = main_->children();
  Tensor grad_sum;
  Tensor grad_input;
  int last = static_cast<int>(stages.size()) - 1;
  if (fused_residual_) {
    // The fused last BatchNorm: its input's gradient, and the sum's for the shortcut; its
    // mask comes from the output, recomputed.
    last_batch_norm().provide_residual_output(recompute_output());
    grad_input = stages[static_cast<std::size_t>(last)].second->backward(grad_output, inner);
    grad_sum = last_batch_norm().take_residual_grad();
    --last;
  } else {
    grad_sum = relu_out_->backward(grad_output, inner);
    grad_input = grad_sum;
  }
  for (int i = last; i >= 0; --i) {
    grad_input = stages[i].second->backward(grad_input, i > 0 ? inner : state);
  }
  if (downsample_) {
    Tensor grad_shortcut = downsample_->backward(grad_sum, state);
    if (state.need_input_grad) add_into(grad_input, grad_shortcut);
  } else if (state.need_input_grad) {
    add_into(grad_input, grad_sum);
  }
  input_recomputed_ = false;
  shortcut_input_ = Tensor();
  last_output_ = nullptr;
  return state.need_input_grad ? grad_input : Tensor();
}

InvertedResidual::InvertedResidual(std::int64_t in_channels, std::int64_t out_channels, int stride,
                                   int expand_ratio)
    : Module("InvertedResidual"), use_residual_(stride == 1 && in_channels == out_channels) {
  const std::int64_t hidden = in_channels * expand_ratio;
  conv_ = std::make_shared<Sequential>();
  if (expand_ratio != 1) conv_->add(conv_bn_act(in_channels, hidden, 1, 1, 1, true));
  conv_->add(conv_bn_act(hidden, hidden, 3, stride, static_cast<int>(hidden), true));
  conv_->add(std::make_shared<Conv2d>(hidden, out_channels, 1, 1, 0, 1, 1, false));
  conv_->add(std::make_shared<BatchNorm2d>(out_channels));
  register_module("conv", conv_);
}

Shape InvertedResidual::output_shape(const Shape& input) const {
  return conv_->output_shape(input);
}

std::int64_t InvertedResidual::forward_flops(const Shape& input) const {
  return conv_->forward_flops(input) + (use_residual_ ? output_shape(input).numel() : 0);
}

MemoryTrace::Id InvertedResidual::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  const MemoryTrace::Id out = conv_->trace_forward(trace, input);
  return use_residual_ ? trace.add(out, input) : out;
}

Tensor InvertedResidual::forward_impl(const Tensor& input, const RunState& state) {
  Tensor out = conv_->forward(input, state);
  if (!use_residual_) return out;
  return add(out, input);
}

Tensor InvertedResidual::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  Tensor grad_input = conv_->backward(grad_output, state);
  if (use_residual_ && state.need_input_grad) add_into(grad_input, grad_output);
  return grad_input;
}

}  // namespace mb
