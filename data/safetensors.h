// Checkpoints in the safetensors format (https://github.com/huggingface/safetensors):
// an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [64, 3, 7, 7], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// (padded with spaces to a multiple of 8), then the raw little-endian tensor bytes, offsets
// relative to the end of the header. PyTorch (safetensors.torch.load_file) reads our files
// and we read theirs for the dtypes we know (F32, I32, F16, BF16).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace mb {

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

// Writes `tensors` (any device; copied to host) and the string `metadata` to `path`,
// atomically (data/atomic_file.h): `path` is never half-written, even under kill -9. Throws
// mb::InvalidArgument for an empty or duplicate name or the reserved name "__metadata__",
// and mb::IoError naming the path when writing fails.
void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;  // CPU tensors
  std::map<std::string, std::string> metadata;
  std::vector<std::string> order;  // tensor names in the order of their data in the file
};

// Reads a whole file. Validates the header JSON, dtype names, shapes, that the offsets lie
// inside the file, sizes equal numel * dtype size, and that the data is covered without gaps
// or overlaps. Throws mb::IoError naming the file and what is wrong.
SafetensorsFile load_safetensors(const std::string& path);

// The metadata only, reading just the header (for checkpoint bookkeeping). Throws
// mb::IoError for a file that is not safetensors.
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);

// Copies tensors from `file` into `targets` (matched by name; same shape and dtype; any
// device). Everything is checked before anything is copied. Throws mb::InvalidArgument
// naming the first mismatch: a target missing from the file, a file tensor no target takes
// (only when `strict`), or a shape or dtype mismatch such as
// "layer1.0.conv1.weight: file has [64, 3, 7, 7], model has [64, 1, 7, 7]".
// When !strict, targets missing from the file are left untouched.
void load_into(const SafetensorsFile& file, const std::vector<NamedTensor>& targets,
               bool strict = true);

}  // namespace mb
