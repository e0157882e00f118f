// Fusion of the memory-bound layers after a convolution (BatchNorm, ReLU, the residual add),
// for memory per sample (docs/architecture.md, "Memory").
//
// A chain is modules that feed one another in order, each one's output reaching only the
// next (a Sequential's children, a residual block's main path). In a chain:
//  - BatchNorm2d followed by ReLU or ReLU6 becomes one layer (BatchNorm2d::set_activation;
//    the activation module is absorbed and passes tensors through). It keeps only its
//    input, as a BatchNorm2d alone does; backward recomputes the activation's mask from it.
//  - A module whose input is the output of a RecomputeSource (layers/module.h: a
//    BatchNorm2d, fused or not; a fused residual block, models/blocks.h) recomputes that
//    input in backward instead of keeping it, where it can (Module::recompute_input_from: a
//    Conv2d for its filter gradient; a residual block for its convolutions and its
//    shortcut). Before, the activation's output was kept for backward by the layer that
//    read it; now nothing of it is kept, and only that layer's backward holds it, briefly.
// Exact: the recomputation evaluates the forward's float expression again (bit-identical
// values and masks), so fused and unfused training give the same numbers.
//
// Why recompute instead of inverting (InPlace-ABN, Rota Bulò et al. 2018, keeps only the
// activation's output and inverts it): ReLU is not invertible where it clips, and
// BatchNorm's input gradient needs x̂ at every element, clipped ones included; recomputing
// from the kept input needs no invertible activation and costs one elementwise pass
// (Pleiss et al. 2017 do the same for DenseNet's BN-ReLU).
#pragma once

#include <vector>

namespace mb {

class Module;

// Appends `module`'s chain: a Sequential's children (nested Sequentials flattened), or the
// module itself.
void append_chain(Module& module, std::vector<Module*>& chain);
// Fuses `chain` as described above; modules that are neither a BatchNorm2d, a ReLU or ReLU6,
// a RecomputeSource nor a reader of one are left alone (and break the links around them).
void fuse_chain(const std::vector<Module*>& chain);

}  // namespace mb
