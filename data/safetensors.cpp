// safetensors writer and reader over nlohmann::json.
#include "data/safetensors.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "data/atomic_file.h"
#include "runtime/error.h"

namespace mb {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian data; a big-endian host would need byte swaps");

constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr const char* kMetadataKey = "__metadata__";

const char* safetensors_dtype(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "F32";
    case DType::Float16: return "F16";
    case DType::BFloat16: return "BF16";
    case DType::Int32: return "I32";
    case DType::UInt8: return "U8";
  }
  return "?";
}

bool parse_safetensors_dtype(const std::string& name, DType& dtype) {
  if (name == "F32")
    dtype = DType::Float32;
  else if (name == "F16")
    dtype = DType::Float16;
  else if (name == "BF16")
    dtype = DType::BFloat16;
  else if (name == "I32")
    dtype = DType::Int32;
  else if (name == "U8")
    dtype = DType::UInt8;
  else
    return false;
  return true;
}

using FilePtr = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;

std::string errno_text() {
  return std::strerror(errno);
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Header first: names, dtypes, shapes and consecutive offsets.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = meta;
  }
  std::set<std::string> seen;
  std::uint64_t offset = 0;
  for (const NamedTensor& named : tensors) {
    MB_CHECK(!named.name.empty() && named.name != kMetadataKey,
             "save_safetensors: invalid tensor name '", named.name, "'");
    MB_CHECK(seen.insert(named.name).second, "save_safetensors: duplicate tensor name '",
             named.name, "'");
    MB_CHECK(named.tensor.defined(), "save_safetensors: tensor '", named.name, "' is undefined");
    const std::uint64_t bytes = named.tensor.nbytes();
    header[named.name] = {{"dtype", safetensors_dtype(named.tensor.dtype())},
                          {"shape", named.tensor.shape().dims()},
                          {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  // Note: the reference writer pads the header with spaces to a multiple of 8 so the data
  // starts aligned; readers accept either.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  // Note: written through AtomicFile (a unique temporary, fsync, rename, directory fsync),
  // so `path` is either the old file or the complete new one, even under kill -9.
  AtomicFile file(path);
  std::uint8_t length[8];
  const std::uint64_t header_size = header_text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<std::uint8_t>(header_size >> (8 * i));
  file.write(length, 8, "the header length");
  file.write(header_text.data(), header_text.size(), "the header");
  for (const NamedTensor& named : tensors) {
    if (named.tensor.nbytes() == 0) continue;
    const Tensor host =
        named.tensor.device().is_cpu() ? named.tensor : named.tensor.to(Device::cpu());
    file.write(host.raw_data(), host.nbytes(), "tensor '" + named.name + "'");
  }
  file.commit();
}

namespace {

// The header of a safetensors file: its JSON object and where the data starts. `file` is
// left positioned at the data. Throws mb::IoError naming what is wrong.
struct Header {
  nlohmann::json json;
  std::uint64_t file_size = 0;
  std::uint64_t data_begin = 0;
};

Header read_header(const std::string& path, FilePtr& file) {
  std::error_code error;
  const auto file_size = std::filesystem::file_size(path, error);
  if (error) MB_THROW(IoError, "cannot read checkpoint ", path, ": ", error.message());
  if (file_size < 8) {
    MB_THROW(IoError, path, ": not a safetensors file: ", file_size,
             " bytes, fewer than the 8-byte header length");
  }
  file.reset(std::fopen(path.c_str(), "rb"));
  if (!file) MB_THROW(IoError, "cannot open checkpoint ", path, ": ", errno_text());
  std::uint8_t length[8];
  if (std::fread(length, 1, 8, file.get()) != 8)
    MB_THROW(IoError, path, ": read failed at byte offset 0");
  std::uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<std::uint64_t>(length[i]) << (8 * i);
  if (header_size > kMaxHeaderBytes || header_size > file_size - 8) {
    MB_THROW(IoError, path, ": header length ", header_size,
             " at byte offset 0 is impossible: the file holds ", file_size,
             " bytes (corrupt or not a safetensors file)");
  }
  std::string header_text(header_size, '\0');
  if (std::fread(header_text.data(), 1, header_size, file.get()) != header_size) {
    MB_THROW(IoError, path, ": read failed in the header at byte offset 8");
  }
  Header header;
  // The format forbids duplicate keys (a second tensor of the same name would silently win
  // in a JSON object); the parser reports every key, so each object's keys are checked.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  const auto check_keys = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) keys.emplace_back();
    if (event == Event::object_end && !keys.empty()) keys.pop_back();
    if (event == Event::key && !keys.empty() && duplicate.empty() &&
        !keys.back().insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  try {
    header.json = nlohmann::json::parse(header_text, check_keys);
  } catch (const nlohmann::json::exception& e) {
    MB_THROW(IoError, path, ": the header (bytes 8 to ", 8 + header_size,
             ") is not valid JSON: ", e.what());
  }
  if (!duplicate.empty()) {
    MB_THROW(IoError, path, ": the header names '", duplicate,
             "' twice; safetensors forbids duplicate names (corrupt or hand-edited file)");
  }
  if (!header.json.is_object()) MB_THROW(IoError, path, ": the header JSON is not an object");
  header.file_size = file_size;
  header.data_begin = 8 + header_size;
  return header;
}

}  // namespace

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  FilePtr file(nullptr, &std::fclose);
  const Header header = read_header(path, file);
  std::map<std::string, std::string> metadata;
  if (header.json.contains(kMetadataKey) && header.json[kMetadataKey].is_object()) {
    for (const auto& [key, value] : header.json[kMetadataKey].items()) {
      if (value.is_string()) metadata[key] = value.get<std::string>();
    }
  }
  return metadata;
}

SafetensorsFile load_safetensors(const std::string& path) {
  FilePtr file(nullptr, &std::fclose);
  const Header parsed = read_header(path, file);
  const nlohmann::json& header = parsed.json;
  const std::uint64_t file_size = parsed.file_size;
  const std::uint64_t data_begin = parsed.data_begin;
  const std::uint64_t data_size = file_size - data_begin;
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    std::uint64_t begin, end;
  };
  std::vector<Entry> entries;
  SafetensorsFile result;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) MB_THROW(IoError, path, ": __metadata__ is not a JSON object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string())
          MB_THROW(IoError, path, ": __metadata__ value of '", key, "' is not a string");
        result.metadata[key] = text.get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
        !value.contains("data_offsets")) {
      MB_THROW(IoError, where, " needs an object with dtype, shape and data_offsets");
    }
    Entry entry;
    entry.name = name;
    const auto& dtype = value["dtype"];
    if (!dtype.is_string() || !parse_safetensors_dtype(dtype.get<std::string>(), entry.dtype)) {
      MB_THROW(IoError, where, " has dtype ", dtype.dump(), "; supported: F32, I32, F16, BF16");
    }
    const auto& shape = value["shape"];
    if (!shape.is_array()) MB_THROW(IoError, where, " has a shape that is not an array");
    std::vector<std::int64_t> dims;
    std::uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned() || d.get<std::uint64_t>() > (std::uint64_t{1} << 40)) {
        MB_THROW(IoError, where, " has an invalid dimension ", d.dump(), " in shape ",
                 shape.dump());
      }
      dims.push_back(d.get<std::int64_t>());
      // Checked before it can wrap: [2^40, 2^40] must not pass as 0 elements.
      if (__builtin_mul_overflow(numel, d.get<std::uint64_t>(), &numel) ||
          numel > (std::uint64_t{1} << 48)) {
        MB_THROW(IoError, where, " has an absurd shape ", shape.dump(),
                 " (more than 2^48 elements)");
      }
    }
    entry.shape = Shape(dims);
    const auto& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      MB_THROW(IoError, where, " has data_offsets ", offsets.dump(), "; expected [begin, end]");
    }
    entry.begin = offsets[0].get<std::uint64_t>();
    entry.end = offsets[1].get<std::uint64_t>();
    const std::uint64_t expected = numel * dtype_size(entry.dtype);
    if (entry.end < entry.begin || entry.end - entry.begin != expected) {
      MB_THROW(IoError, where, " has data_offsets [", entry.begin, ", ", entry.end, "] but ",
               dtype.get<std::string>(), " ", shape.dump(), " needs ", expected, " bytes");
    }
    if (entry.end > data_size) {
      MB_THROW(IoError, where, ": data ends at file byte offset ", data_begin + entry.end,
               " but the file holds ", file_size, " bytes (truncated)");
    }
    entries.push_back(std::move(entry));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  std::uint64_t covered = 0;
  for (const Entry& entry : entries) {
    if (entry.begin != covered) {
      MB_THROW(IoError, path, ": tensor '", entry.name, "' data starts at offset ", entry.begin,
               " but the previous data ends at ", covered, " (",
               entry.begin < covered ? "overlap" : "gap",
               "); the data must be covered exactly once");
    }
    covered = entry.end;
  }
  if (covered != data_size) {
    MB_THROW(IoError, path, ": the tensors cover ", covered, " data bytes but the file holds ",
             data_size, " after the header");
  }
  for (const Entry& entry : entries) {
    TensorOptions options;
    options.dtype = entry.dtype;
    Tensor tensor = Tensor::empty(entry.shape, options);
    const std::uint64_t bytes = entry.end - entry.begin;
    if (bytes > 0) {
      if (std::fseek(file.get(), static_cast<long>(data_begin + entry.begin), SEEK_SET) != 0 ||
          std::fread(tensor.raw_data(), 1, bytes, file.get()) != bytes) {
        MB_THROW(IoError, path, ": read failed for tensor '", entry.name, "' at byte offset ",
                 data_begin + entry.begin);
      }
    }
    result.tensors.emplace(entry.name, std::move(tensor));
    result.order.push_back(entry.name);
  }
  return result;
}

void load_into(const SafetensorsFile& file, const std::vector<NamedTensor>& targets, bool strict) {
  std::set<std::string> wanted;
  for (const NamedTensor& target : targets) {
    MB_CHECK(target.tensor.defined(), "load_into: target '", target.name, "' is undefined");
    wanted.insert(target.name);
    const auto found = file.tensors.find(target.name);
    if (found == file.tensors.end()) {
      if (!strict) continue;
      MB_THROW(InvalidArgument, target.name, ": missing from the checkpoint (it has ",
               file.tensors.size(), " tensors); is it from a different model?");
    }
    const Tensor& source = found->second;
    if (source.shape() != target.tensor.shape()) {
      MB_THROW(InvalidArgument, target.name, ": file has ", source.shape().to_string(),
               ", model has ", target.tensor.shape().to_string());
    }
    if (source.dtype() != target.tensor.dtype()) {
      MB_THROW(InvalidArgument, target.name, ": file has dtype ", dtype_name(source.dtype()),
               ", model has ", dtype_name(target.tensor.dtype()));
    }
  }
  if (strict) {
    const std::vector<std::string>& names = file.order;
    for (const std::string& name : names) {
      if (wanted.count(name) == 0) {
        MB_THROW(InvalidArgument, name,
                 ": unexpected in the checkpoint (the model has no such tensor); "
                 "pass strict = false to ignore extra tensors");
      }
    }
  }
  for (const NamedTensor& target : targets) {
    const auto found = file.tensors.find(target.name);
    if (found == file.tensors.end()) continue;
    Tensor destination = target.tensor;
    destination.copy_from(found->second);
  }
}

}  // namespace mb
