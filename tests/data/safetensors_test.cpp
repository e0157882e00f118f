// safetensors: round trips of every dtype with metadata, the exact byte layout of a tiny
// file against the format description, the errors for corrupt and truncated files, and
// load_into's checks and messages.
#include "data/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "runtime/error.h"
#include "tests/data/temp_dir.h"

namespace mb {
namespace {

using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

Tensor half_tensor(DType dtype, const std::vector<std::uint16_t>& bits, const Shape& shape) {
  TensorOptions options;
  options.dtype = dtype;
  Tensor t = Tensor::empty(shape, options);
  std::memcpy(t.raw_data(), bits.data(), bits.size() * 2);
  return t;
}

std::vector<std::uint16_t> half_bits(const Tensor& t) {
  std::vector<std::uint16_t> bits(static_cast<std::size_t>(t.numel()));
  std::memcpy(bits.data(), t.raw_data(), bits.size() * 2);
  return bits;
}

std::string io_error_message(const std::string& path) {
  try {
    load_safetensors(path);
  } catch (const IoError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected mb::IoError for " << path;
  return "";
}

TEST(Safetensors, RoundTripKeepsValuesShapesDtypesOrderAndMetadata) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const Tensor weight = Tensor::from_vector({1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f}, Shape{2, 3});
  const Tensor steps = Tensor::from_vector_int({7, -1, 2147483647}, Shape{3});
  const Tensor f16 = half_tensor(DType::Float16, {0x3C00, 0xC000, 0x7BFF, 0x0001}, Shape{2, 2});
  const Tensor bf16 = half_tensor(DType::BFloat16, {0x3F80, 0x4049}, Shape{2});
  const Tensor scalar = Tensor::from_vector({42.0f}, Shape{});
  const Tensor empty = Tensor::empty(Shape{0, 3});
  const std::map<std::string, std::string> metadata = {{"epoch", "3"}, {"model", "resnet18"}};
  save_safetensors(path,
                   {{"z.weight", weight},
                    {"a.steps", steps},
                    {"m.half", f16},
                    {"m.bf16", bf16},
                    {"scalar", scalar},
                    {"empty", empty}},
                   metadata);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  const SafetensorsFile file = load_safetensors(path);
  EXPECT_EQ(file.metadata, metadata);
  EXPECT_EQ(file.order, (std::vector<std::string>{"z.weight", "a.steps", "m.half", "m.bf16",
                                                  "scalar", "empty"}));
  EXPECT_EQ(file.tensors.at("z.weight").shape(), (Shape{2, 3}));
  EXPECT_EQ(file.tensors.at("z.weight").to_vector(), weight.to_vector());
  EXPECT_EQ(file.tensors.at("a.steps").dtype(), DType::Int32);
  EXPECT_EQ(file.tensors.at("a.steps").to_vector_int(), steps.to_vector_int());
  EXPECT_EQ(file.tensors.at("m.half").dtype(), DType::Float16);
  EXPECT_EQ(half_bits(file.tensors.at("m.half")), half_bits(f16));
  EXPECT_EQ(file.tensors.at("m.bf16").dtype(), DType::BFloat16);
  EXPECT_EQ(half_bits(file.tensors.at("m.bf16")), half_bits(bf16));
  EXPECT_EQ(file.tensors.at("scalar").shape(), Shape{});
  EXPECT_EQ(file.tensors.at("scalar").to_vector(), std::vector<float>{42.0f});
  EXPECT_EQ(file.tensors.at("empty").shape(), (Shape{0, 3}));
}

// The format: u64 little-endian header size N, N bytes of JSON (we pad with spaces to a
// multiple of 8), then the data, offsets relative to its start.
TEST(Safetensors, TinyFileHasTheDocumentedByteLayout) {
  TempDir dir;
  const std::string path = dir.file("tiny.safetensors");
  save_safetensors(path,
                   {{"a", Tensor::from_vector({1.0f, -2.0f}, Shape{2})},
                    {"b", Tensor::from_vector_int({258}, Shape{1, 1})}},
                   {{"k", "v"}});
  const std::vector<std::uint8_t> bytes = read_bytes(path);
  std::string json =
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I32","shape":[1,1],"data_offsets":[8,12]}})";
  json.append((8 - json.size() % 8) % 8, ' ');
  ASSERT_EQ(bytes.size(), 8 + json.size() + 12);
  std::uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
  EXPECT_EQ(header_size, json.size());
  EXPECT_EQ(header_size % 8, 0u);
  EXPECT_EQ(std::string(bytes.begin() + 8, bytes.begin() + 8 + json.size()), json);
  const std::vector<std::uint8_t> data(bytes.begin() + 8 + json.size(), bytes.end());
  // 1.0f = 0x3F800000, -2.0f = 0xC0000000, 258 = 0x00000102, all little-endian.
  EXPECT_EQ(data, (std::vector<std::uint8_t>{0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0, 0x02,
                                             0x01, 0x00, 0x00}));
}

// A file written by hand the way the reference implementation writes it (no padding,
// tensors in another order than the header lists them).
TEST(Safetensors, ReadsAHandWrittenFile) {
  TempDir dir;
  const std::string path = dir.file("hand.safetensors");
  const std::string json =
      R"({"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"x":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})";
  std::vector<std::uint8_t> bytes(8, 0);
  bytes[0] = static_cast<std::uint8_t>(json.size());
  bytes.insert(bytes.end(), json.begin(), json.end());
  for (const std::uint8_t b : {0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x40}) bytes.push_back(b);
  write_bytes(path, bytes);
  const SafetensorsFile file = load_safetensors(path);
  EXPECT_EQ(file.order, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(file.tensors.at("x").to_vector_int(), std::vector<std::int32_t>{5});
  EXPECT_EQ(file.tensors.at("y").to_vector(), std::vector<float>{3.0f});
  EXPECT_TRUE(file.metadata.empty());
}

class SafetensorsCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("c.safetensors");
    save_safetensors(path_, {{"w", Tensor::from_vector({1, 2, 3, 4}, Shape{4})}});
    bytes_ = read_bytes(path_);
  }
  // Replaces the header with `json` (keeping the data) and returns the error message.
  std::string with_header(std::string json) {
    write_header(std::move(json));
    return io_error_message(path_);
  }
  void write_header(std::string json) {
    json.append((8 - json.size() % 8) % 8, ' ');
    std::vector<std::uint8_t> bytes(8, 0);
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::uint8_t>(json.size() >> (8 * i));
    bytes.insert(bytes.end(), json.begin(), json.end());
    bytes.insert(bytes.end(), bytes_.end() - 16, bytes_.end());
    write_bytes(path_, bytes);
  }
  TempDir dir_;
  std::string path_;
  std::vector<std::uint8_t> bytes_;
};

TEST_F(SafetensorsCorruption, TruncatedDataNamesTheFileAndTheMissingBytes) {
  write_bytes(path_, std::vector<std::uint8_t>(bytes_.begin(), bytes_.end() - 3));
  const std::string message = io_error_message(path_);
  EXPECT_NE(message.find(path_), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
}

TEST_F(SafetensorsCorruption, ImpossibleHeaderLengthOrTinyFile) {
  std::vector<std::uint8_t> bytes = bytes_;
  bytes[5] = 0x10;
  write_bytes(path_, bytes);
  EXPECT_NE(io_error_message(path_).find("header length"), std::string::npos);
  write_bytes(path_, {1, 2, 3});
  EXPECT_NE(io_error_message(path_).find("8-byte header length"), std::string::npos);
}

TEST_F(SafetensorsCorruption, BadJsonDtypeOffsetsAndGaps) {
  EXPECT_NE(with_header(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})")
                .find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(with_header(R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})")
                .find("dtype \"F64\""),
            std::string::npos);
  EXPECT_NE(with_header(R"({"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})")
                .find("needs 20 bytes"),
            std::string::npos);
  EXPECT_NE(with_header(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[4,16]}})").find("gap"),
            std::string::npos);
  EXPECT_NE(with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})")
                .find("cover 8 data bytes"),
            std::string::npos);
  EXPECT_NE(with_header(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})")
                .find("invalid dimension"),
            std::string::npos);
  EXPECT_NE(with_header(
                R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"__metadata__":{"k":1}})")
                .find("not a string"),
            std::string::npos);
  EXPECT_NE(with_header(R"([1,2])").find("not an object"), std::string::npos);
  // 2^40 x 2^40 elements overflow a 64-bit count to 0: must be refused by the product.
  EXPECT_NE(
      with_header(
          R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}})")
          .find("absurd shape"),
      std::string::npos);
}

// The format forbids a name twice; a JSON parser would keep the last silently.
TEST_F(SafetensorsCorruption, DuplicateNamesAreRefused) {
  const std::string tensors = with_header(
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})");
  EXPECT_NE(tensors.find("names 'w' twice"), std::string::npos) << tensors;
  const std::string metadata = with_header(
      R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"__metadata__":{"step":"1","step":"9"}})");
  EXPECT_NE(metadata.find("names 'step' twice"), std::string::npos) << metadata;
  // The same key in two different objects is no duplicate.
  write_header(
      R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"__metadata__":{"w":"x"}})");
  EXPECT_NO_THROW(load_safetensors(path_));
}

TEST(Safetensors, SaveReplacesAtomicallyAndReportsUnwritablePaths) {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  save_safetensors(path, {{"w", Tensor::from_vector({1}, Shape{1})}});
  save_safetensors(path, {{"w", Tensor::from_vector({2}, Shape{1})}});
  EXPECT_EQ(load_safetensors(path).tensors.at("w").to_vector(), std::vector<float>{2.0f});
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const std::string bad = dir.file("no/such/dir/ckpt.safetensors");
  try {
    save_safetensors(bad, {{"w", Tensor::from_vector({1}, Shape{1})}});
    FAIL() << "expected mb::IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  EXPECT_THROW(save_safetensors(path, {{"w", Tensor::from_vector({1}, Shape{1})},
                                       {"w", Tensor::from_vector({1}, Shape{1})}}),
               InvalidArgument);
  EXPECT_THROW(save_safetensors(path, {{"__metadata__", Tensor::from_vector({1}, Shape{1})}}),
               InvalidArgument);
  EXPECT_EQ(io_error_message(dir.file("missing.safetensors")).find("missing.safetensors") !=
                std::string::npos,
            true);
}

std::string invalid_argument_message(const std::function<void()>& body) {
  try {
    body();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected mb::InvalidArgument";
  return "";
}

TEST(LoadInto, CopiesMatchingTensorsAndNamesTheFirstMismatch) {
  TempDir dir;
  const std::string path = dir.file("resume.safetensors");
  const Tensor conv = Tensor::full(Shape{64, 3, 7, 7}, 0.5f);
  const Tensor bias = Tensor::from_vector({1, 2}, Shape{2});
  save_safetensors(path, {{"layer1.0.conv1.weight", conv}, {"fc.bias", bias}});
  const SafetensorsFile file = load_safetensors(path);

  Tensor model_conv = Tensor::zeros(Shape{64, 3, 7, 7});
  Tensor model_bias = Tensor::zeros(Shape{2});
  load_into(file, {{"layer1.0.conv1.weight", model_conv}, {"fc.bias", model_bias}});
  EXPECT_EQ(model_conv.to_vector(), conv.to_vector());
  EXPECT_EQ(model_bias.to_vector(), bias.to_vector());

  Tensor wrong = Tensor::zeros(Shape{64, 1, 7, 7});
  Tensor untouched = Tensor::zeros(Shape{2});
  EXPECT_NE(invalid_argument_message([&] {
              load_into(file, {{"fc.bias", untouched}, {"layer1.0.conv1.weight", wrong}});
            }).find("layer1.0.conv1.weight: file has [64, 3, 7, 7], model has [64, 1, 7, 7]"),
            std::string::npos);
  EXPECT_EQ(untouched.to_vector(), std::vector<float>(2, 0.0f));  // nothing copied on error

  const std::string missing = invalid_argument_message([&] {
    load_into(
        file,
        {{"layer1.0.conv1.weight", model_conv}, {"fc.bias", model_bias}, {"fc.weight", wrong}});
  });
  EXPECT_NE(missing.find("fc.weight: missing"), std::string::npos) << missing;
  const std::string unexpected = invalid_argument_message([&] {
    load_into(file, {{"fc.bias", model_bias}});
  });
  EXPECT_NE(unexpected.find("layer1.0.conv1.weight: unexpected"), std::string::npos) << unexpected;
  TensorOptions int_options;
  int_options.dtype = DType::Int32;
  Tensor int_bias = Tensor::zeros(Shape{2}, int_options);
  EXPECT_NE(invalid_argument_message([&] {
              load_into(file, {{"fc.bias", int_bias}}, false);
            }).find("fc.bias: file has dtype float32, model has int32"),
            std::string::npos);

  Tensor partial = Tensor::zeros(Shape{2});
  Tensor absent = Tensor::full(Shape{1}, 9.0f);
  load_into(file, {{"fc.bias", partial}, {"not.there", absent}}, /*strict=*/false);
  EXPECT_EQ(partial.to_vector(), bias.to_vector());
  EXPECT_EQ(absent.to_vector(), std::vector<float>{9.0f});
}

}  // namespace
}  // namespace mb
