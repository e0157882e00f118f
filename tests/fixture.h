// PyTorch reference fixtures (tests/fixtures/*.safetensors, written by
// tools/reference/make_fixtures.py) and the comparison the reference tests share.
//
// How the tolerances are justified: the generator computes every reference in float64 from
// the exact float32 inputs it stores, and rounds the result to float32. So the difference a
// test sees is our own float32 round-off plus half an ulp of the stored reference. For a
// result built from sums of K products, the classic bound (Higham, "Accuracy and Stability
// of Numerical Algorithms", 2nd ed., eq. 3.5) is
//     |ours - exact| <= gamma_K * (|a| . |b|),   gamma_K = K u / (1 - K u),  u = 2^-24,
// where |a| . |b| is the same operation applied to absolute values. Where the generator
// stores that magnitude as "<key>.abs", expect_within_roundoff() checks this bound per
// element with K = `terms` (+1 for the rounding of the stored reference). Without a
// magnitude it uses max|reference| as the scale, which bounds the error of sums whose terms
// are no larger than the result's largest element.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "data/safetensors.h"
#include "runtime/tensor.h"

namespace mb::testing {

constexpr double kUnitRoundoff = 5.9604644775390625e-8;  // 2^-24, float32

class Fixture {
 public:
  // Loads tests/fixtures/<file>; fails the test (fatally, in the caller) when it is missing.
  explicit Fixture(const std::string& file)
      : path_(std::string(MB_FIXTURES_DIR) + "/" + file), file_(load_safetensors(path_)) {}

  bool has(const std::string& name) const { return file_.tensors.count(name) > 0; }
  const Tensor& tensor(const std::string& name) const {
    auto it = file_.tensors.find(name);
    if (it == file_.tensors.end()) {
      throw std::runtime_error(path_ + " has no tensor '" + name +
                               "'. Fix: rerun tools/reference/make_fixtures.py");
    }
    return it->second;
  }
  std::vector<float> values(const std::string& name) const { return tensor(name).to_vector(); }
  std::string meta(const std::string& key) const {
    auto it = file_.metadata.find(key);
    return it == file_.metadata.end() ? std::string() : it->second;
  }
  double number(const std::string& key) const { return std::stod(meta(key)); }
  const std::string& path() const { return path_; }
  const SafetensorsFile& file() const { return file_; }

 private:
  std::string path_;
  SafetensorsFile file_;
};

// Expects `actual` to equal the reference `key` within the round-off of a K-term sum (see
// the top of this file); `extra` is added to the allowed bound per element (for a test that
// states another source of error, e.g. a float32 division or exp). Reports the worst element
// and the ratio of error to bound.
inline void expect_within_roundoff(const Tensor& actual, const Fixture& fixture,
                                   const std::string& key, double terms, double extra = 0.0) {
  const Tensor& reference = fixture.tensor(key);
  ASSERT_EQ(actual.shape(), reference.shape()) << key << " in " << fixture.path();
  const std::vector<float> ours = actual.to_vector();
  const std::vector<float> ref = reference.to_vector();
  std::vector<float> magnitude;
  if (fixture.has(key + ".abs")) magnitude = fixture.values(key + ".abs");
  double scale = 0.0;
  for (float v : ref) scale = std::max(scale, std::fabs(static_cast<double>(v)));
  const double k = terms + 1.0;
  const double gamma = k * kUnitRoundoff / (1.0 - k * kUnitRoundoff);
  double worst_ratio = 0.0;
  std::size_t worst = 0, failures = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    const double mag = magnitude.empty() ? scale : static_cast<double>(magnitude[i]);
    const double bound = gamma * mag + extra + 1e-30;
    const double err = std::fabs(static_cast<double>(ours[i]) - ref[i]);
    if (!(err <= bound)) ++failures;  // NaN counts as a failure
    const double ratio = std::isnan(err) ? INFINITY : err / bound;
    if (ratio > worst_ratio || i == 0) {
      worst_ratio = ratio;
      worst = i;
    }
  }
  EXPECT_EQ(failures, 0u) << key << " (" << fixture.path() << "): " << failures << " of "
                          << ours.size() << " elements outside the round-off bound; worst at "
                          << worst << ": ours " << ours[worst] << ", reference " << ref[worst]
                          << ", error/bound " << worst_ratio << " (K = " << terms << ")";
}

}  // namespace mb::testing
