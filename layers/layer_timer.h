// LayerTimer: where a training step's time goes, by kind of module. For the share of step
// time each kind of layer takes (the memory-bound layers beside the convolutions, before
// and after fusion: bench/train_bench --layer-times), not for the hot path.
//
// Given in RunState / BackwardState (borrowed), every module's forward and backward is
// timed and its *exclusive* time (its own, its children's excluded) added to its type name:
// a leaf's whole time, and a composite's own work (a residual block's add, the recomputation
// of its output). Fused layers count under the layer that runs them ("BatchNorm2d" is
// BatchNorm + ReLU [+ add] when fused; an absorbed ReLU takes no time). Each timing point
// synchronizes the module's stream, so on CUDA the timed run is slower than a plain one.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/stream.h"

namespace mb {

class LayerTimer {
 public:
  struct Entry {
    double forward_seconds = 0.0;
    double backward_seconds = 0.0;
    std::int64_t calls = 0;  // forward calls
  };

  // Exclusive seconds per module type name.
  const std::map<std::string, Entry>& entries() const { return entries_; }
  double total_seconds() const;
  void reset() { entries_.clear(); }

  // Times one module call from construction to destruction (nested scopes: its children).
  class Scope {
   public:
    Scope(LayerTimer& timer, const std::string& type, bool backward, const Stream& stream);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    LayerTimer& timer_;
    Stream stream_;
  };

 private:
  struct Frame {
    const std::string* type;
    bool backward;
    double start;
    double children = 0.0;  // seconds spent in nested scopes
  };
  std::vector<Frame> open_;
  std::map<std::string, Entry> entries_;
};

}  // namespace mb
