// Fusion of the memory-bound layers after a convolution (BatchNorm, ReLU, the residual add),
// for memory per sample (docs/architecture.md, "Memory").
//
// A chain is modules that feed one another in order, each one's output reaching only the
// next (a Sequential's children, a residual block's main path). In a chain:
//  - BatchNorm2d followed by ReLU or ReLU6 becomes one layer (BatchNorm2d::set_activation;
//    the activation module is absorbed and passes tensors through). It keeps only its
//    input, as a BatchNorm2d alone does; backward recomputes the activation's mask from it.
//  - A Conv2d whose input is a BatchNorm2d's output (fused or not) recomputes that input in
//    backward for its filter gradient instead of keeping it
//    (Conv2d::recompute_input_from). Before, the activation's output was kept twice over
//    for backward (by the activation and by the convolution, one buffer); now nothing of it
//    is kept, and only the convolution's backward holds it, briefly.
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
// Fuses `chain` as described above; modules that are not BatchNorm2d, ReLU, ReLU6 or Conv2d
// are left alone (and break the links around them).
void fuse_chain(const std::vector<Module*>& chain);

}  // namespace mb
