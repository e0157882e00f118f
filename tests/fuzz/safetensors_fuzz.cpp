// libFuzzer target: load_safetensors on one file, then, when it loads, load_into on a small
// fixed target list (strict and not), whose shape and dtype checks must refuse what does not
// fit with mb::InvalidArgument.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mb::fuzz::initialize();
  return 0;
}

namespace {

std::vector<mb::NamedTensor> targets() {
  mb::TensorOptions int_options;
  int_options.dtype = mb::DType::Int32;
  mb::TensorOptions half_options;
  half_options.dtype = mb::DType::Float16;
  return {{"w", mb::Tensor::zeros(mb::Shape{4})},
          {"b", mb::Tensor::zeros(mb::Shape{2}, int_options)},
          {"h", mb::Tensor::zeros(mb::Shape{2, 2}, half_options)},
          {"s", mb::Tensor::zeros(mb::Shape{})}};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = mb::fuzz::scratch_dir() / "input.safetensors";
  mb::fuzz::write_file(path, data, size);
  mb::fuzz::expect_success_or_mb_error([&] {
    const mb::SafetensorsFile file = mb::load_safetensors(path.string());
    if (file.order.size() != file.tensors.size()) __builtin_trap();
    for (const bool strict : {false, true}) {
      mb::fuzz::expect_success_or_mb_error([&] { mb::load_into(file, targets(), strict); });
    }
  });
  return 0;
}
