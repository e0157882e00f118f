// U-Net (Ronneberger et al. 2015) with padded 3x3 convolutions and BatchNorm, transposed
// convolutions for upsampling and channel concatenation of the skip connections.
// Output: per-pixel logits [N, classes, H, W]; H and W must be multiples of 16.
#include "layers/activation.h"
#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/conv_transpose2d.h"
#include "layers/elementwise.h"
#include "layers/pooling.h"
#include "models/zoo.h"
#include "runtime/error.h"

namespace mb {
namespace {

// (conv3x3 - BN - ReLU) x 2, named double_conv.0 .. double_conv.5.
std::shared_ptr<Sequential> double_conv(std::int64_t in_channels, std::int64_t out_channels) {
  auto inner = std::make_shared<Sequential>();
  inner->add(std::make_shared<Conv2d>(in_channels, out_channels, 3, 1, 1, 1, 1, false));
  inner->add(std::make_shared<BatchNorm2d>(out_channels));
  inner->add(std::make_shared<ReLU>());
  inner->add(std::make_shared<Conv2d>(out_channels, out_channels, 3, 1, 1, 1, 1, false));
  inner->add(std::make_shared<BatchNorm2d>(out_channels));
  inner->add(std::make_shared<ReLU>());
  auto block = std::make_shared<Sequential>();
  block->add("double_conv", inner);
  return block;
}

// Upsampling stage: up (ConvTranspose2d 2x2, stride 2, halving channels), then
// concat(skip, up) and a double conv. Two inputs, so it is driven by UNet directly.
class UpStage : public Module {
 public:
  UpStage(std::int64_t in_channels, std::int64_t out_channels)
      : Module("UpStage"), skip_channels_(in_channels / 2) {
    up_ = register_module("up",
                          std::make_shared<ConvTranspose2d>(in_channels, in_channels / 2, 2, 2));
    conv_ = register_module("conv", double_conv(in_channels, out_channels));
  }
  Tensor forward2(const Tensor& x, const Tensor& skip, const RunState& state) {
    Tensor upsampled = up_->forward(x, state);
    return conv_->forward(concat_channels(skip, upsampled), state);
  }
  // Returns (gradient for x, gradient for skip).
  std::pair<Tensor, Tensor> backward2(const Tensor& grad, const BackwardState& state) {
    Tensor grad_concat = conv_->backward(grad, state);
    auto [grad_skip, grad_up] = split_channels(grad_concat, skip_channels_);
    return {up_->backward(grad_up, state), grad_skip};
  }
  Shape output_shape(const Shape& input) const override {
    return conv_->output_shape(concat_shape(input));
  }
  std::int64_t forward_flops(const Shape& input) const override {
    return up_->forward_flops(input) + conv_->forward_flops(concat_shape(input));
  }
  MemoryTrace::Id trace_forward2(MemoryTrace& trace, MemoryTrace::Id x,
                                 MemoryTrace::Id skip) const {
    const MemoryTrace::Id upsampled = up_->trace_forward(trace, x);
    return conv_->trace_forward(trace, trace.concat(skip, upsampled));
  }
  // Alone (as in output_shape()), the skip is taken to come from outside, in the shape the
  // concat needs.
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override {
    const Shape up = up_->output_shape(trace.shape(input));
    return trace_forward2(trace, input, trace.input(Shape{up[0], skip_channels_, up[2], up[3]}));
  }

 protected:
  Tensor forward_impl(const Tensor&, const RunState&) override {
    MB_THROW(InvalidArgument, "UpStage takes two inputs: use forward2(x, skip)");
  }
  Tensor backward_impl(const Tensor&, const BackwardState&) override {
    MB_THROW(InvalidArgument, "UpStage returns two gradients: use backward2");
  }

 private:
  Shape concat_shape(const Shape& input) const {
    const Shape up = up_->output_shape(input);
    return Shape{up[0], up[1] + skip_channels_, up[2], up[3]};
  }
  std::int64_t skip_channels_;
  std::shared_ptr<ConvTranspose2d> up_;
  std::shared_ptr<Sequential> conv_;
};

class UNet : public Module {
 public:
  UNet(std::int64_t in_channels, std::int64_t classes) : Module("UNet") {
    const std::int64_t widths[] = {64, 128, 256, 512, 1024};
    inc_ = register_module("inc", double_conv(in_channels, widths[0]));
    for (int i = 0; i < 4; ++i) {
      auto down = std::make_shared<Sequential>();
      down->add("pool", std::make_shared<MaxPool2d>(2));
      down->add("conv", double_conv(widths[i], widths[i + 1]));
      downs_.push_back(register_module("down" + std::to_string(i + 1), down));
    }
    for (int i = 0; i < 4; ++i) {
      ups_.push_back(register_module("up" + std::to_string(i + 1),
                                     std::make_shared<UpStage>(widths[4 - i], widths[3 - i])));
    }
    outc_ = register_module("outc", std::make_shared<Conv2d>(widths[0], classes, 1));
  }

  Shape output_shape(const Shape& input) const override {
    MB_CHECK(input.ndim() == 4 && input[2] % 16 == 0 && input[3] % 16 == 0, "UNet: input ",
             input.to_string(), " must be [N, C, H, W] with H, W multiples of 16");
    return outc_->output_shape(Shape{input[0], 64, input[2], input[3]});
  }
  std::int64_t forward_flops(const Shape& input) const override {
    std::int64_t flops = inc_->forward_flops(input);
    std::vector<Shape> shapes{inc_->output_shape(input)};
    for (const auto& down : downs_) {
      flops += down->forward_flops(shapes.back());
      shapes.push_back(down->output_shape(shapes.back()));
    }
    Shape x = shapes.back();
    for (const auto& up : ups_) {
      flops += up->forward_flops(x);
      x = up->output_shape(x);
    }
    return flops + outc_->forward_flops(x);
  }
  // Routes ids as forward_impl() routes tensors; backward_impl() visits the stages in the
  // reverse order, as the trace is replayed.
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override {
    output_shape(trace.shape(input));
    std::vector<MemoryTrace::Id> skips{inc_->trace_forward(trace, input)};
    for (const auto& down : downs_) skips.push_back(down->trace_forward(trace, skips.back()));
    MemoryTrace::Id x = skips.back();
    skips.pop_back();
    for (const auto& up : ups_) {
      x = up->trace_forward2(trace, x, skips.back());
      skips.pop_back();
    }
    return outc_->trace_forward(trace, x);
  }

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override {
    output_shape(input.shape());
    std::vector<Tensor> skips{inc_->forward(input, state)};
    for (const auto& down : downs_) skips.push_back(down->forward(skips.back(), state));
    Tensor x = skips.back();
    skips.pop_back();
    for (const auto& up : ups_) {
      x = up->forward2(x, skips.back(), state);
      skips.pop_back();
    }
    return outc_->forward(x, state);
  }
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override {
    BackwardState inner = state;
    inner.need_input_grad = true;
    Tensor grad = outc_->backward(grad_output, inner);
    // ups_[3] consumed skip 0 (inc's output), ups_[0] skip 3; backward runs them last first.
    Tensor grad_skips[4];
    for (int i = 3; i >= 0; --i) {
      auto [grad_x, grad_skip] = ups_[i]->backward2(grad, inner);
      grad = grad_x;
      grad_skips[3 - i] = grad_skip;
    }
    // grad is now the gradient of down4's output; downs_[i] produced skip i + 1.
    for (int i = 3; i >= 0; --i) {
      grad = downs_[i]->backward(grad, inner);
      add_into(grad, grad_skips[i]);
    }
    return inc_->backward(grad, state);
  }

 private:
  std::shared_ptr<Sequential> inc_;
  std::vector<std::shared_ptr<Sequential>> downs_;
  std::vector<std::shared_ptr<UpStage>> ups_;
  std::shared_ptr<Conv2d> outc_;
};

}  // namespace

std::shared_ptr<Module> make_unet(const ModelConfig& c) {
  MB_CHECK(c.image_size % 16 == 0, "unet: image size ", c.image_size,
           " must be a multiple of 16 (four 2x2 poolings)");
  return std::make_shared<UNet>(c.in_channels, c.num_classes);
}

}  // namespace mb
