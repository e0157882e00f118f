// Composite modules with more than one path: residual blocks (ResNet's BasicBlock and
// Bottleneck, MobileNetV2's InvertedResidual). Each routes tensors itself and adds the
// shortcut's gradient to the main path's in backward. Children are registered with
// torchvision's names.
#pragma once

#include <memory>

#include "layers/module.h"

namespace mb {

class Conv2d;
class BatchNorm2d;
class PointwiseActivation;

// conv-bn-relu-conv-bn (+ shortcut) - relu. Bottleneck: 1x1, 3x3 (stride), 1x1 x4.
//
// Fused (fuse_memory_bound_layers), the last BatchNorm, the add and the ReLU are one pass,
// and the block keeps nothing of its output: out = relu(bn_last(x) + shortcut) is computed
// again, bit for bit, from the last BatchNorm's kept input and the shortcut, which is the
// downsample BatchNorm's output (recomputed from its kept input) or the block's input
// (recomputed by the block before, when the chain links them, else kept: the first
// convolution keeps that same tensor anyway). So a block is a RecomputeSource: the next
// block's convolutions and shortcut recompute their input from it, and this block's own
// backward recomputes it for the mask. Within a stage the recomputation recurses through
// the identity blocks to the stage's first (downsampling) block: elementwise passes, up to
// one per block of the stage, for the activations of every other block.
class ResidualBlock : public Module, public RecomputeSource {
 public:
  // bottleneck: false for BasicBlock (expansion 1), true for Bottleneck (expansion 4).
  // projection: force a 1x1 conv + BN shortcut even when shapes agree (never needed by
  // torchvision; the shortcut is projected when stride != 1 or channels change).
  ResidualBlock(std::int64_t in_channels, std::int64_t planes, int stride, bool bottleneck);
  Shape output_shape(const Shape& input) const override;
  std::int64_t forward_flops(const Shape& input) const override;
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;
  // The main path as a chain (layers/fusion.h), the shortcut's own, and the last
  // BatchNorm + add + relu_out as one layer (BatchNorm2d::forward_residual).
  void fuse_memory_bound_layers() override;
  void clear_cache() override;

  // Fused only: the block's output is recomputed, never kept (see above).
  RecomputeSource* recompute_source() override { return fused_residual_ ? this : nullptr; }
  bool can_recompute(const Tensor& tensor) const override;
  Tensor recompute_output() const override;
  std::size_t recompute_bytes(const Shape& output) const override;
  // The first convolution, the downsample convolution and the identity shortcut recompute
  // the block's input from `source`.
  bool recompute_input_from(RecomputeSource* source) override;

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  std::shared_ptr<Sequential> main_;        // conv1, bn1, relu, conv2, bn2[, relu, conv3, bn3]
  std::shared_ptr<Sequential> downsample_;  // null: identity shortcut
  BatchNorm2d& last_batch_norm() const;

  std::shared_ptr<PointwiseActivation> relu_out_;
  bool fused_residual_ = false;

  // Recomputing the output (fused): the source of the input, whether this forward's input
  // came from it, the input as a kept handle otherwise (identity shortcut only), and the
  // output the last training forward returned (identity, not owned).
  RecomputeSource* input_source_ = nullptr;
  bool input_recomputed_ = false;
  Tensor shortcut_input_;
  const void* last_output_ = nullptr;
  Shape last_output_shape_;
};

// MobileNetV2's inverted residual: [1x1 expand-bn-relu6], 3x3 depthwise-bn-relu6,
// 1x1 project-bn, plus the input when stride is 1 and channels agree.
class InvertedResidual : public Module {
 public:
  InvertedResidual(std::int64_t in_channels, std::int64_t out_channels, int stride,
                   int expand_ratio);
  Shape output_shape(const Shape& input) const override;
  std::int64_t forward_flops(const Shape& input) const override;
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override;

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override;
  Tensor backward_impl(const Tensor& grad_output, const BackwardState& state) override;

 private:
  std::shared_ptr<Sequential> conv_;
  bool use_residual_;
};

// Conv2d (no bias) + BatchNorm2d + ReLU6/ReLU, named 0, 1, 2 (torchvision's
// Conv2dNormActivation).
std::shared_ptr<Sequential> conv_bn_act(std::int64_t in_channels, std::int64_t out_channels,
                                        int kernel_size, int stride, int groups, bool relu6);

}  // namespace mb
