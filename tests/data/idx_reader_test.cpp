// IDX reading and the Fashion-MNIST loader: files written here (gzip and plain, valid,
// truncated, corrupt, mismatched), and the real data set when it is installed.
#include "data/idx_reader.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <array>
#include <filesystem>
#include <fstream>

#include "data/dataset.h"
#include "runtime/error.h"
#include "tests/data/temp_dir.h"

namespace mb {
namespace {

using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

void append_be32(std::vector<std::uint8_t>& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(value >> shift));
}

std::vector<std::uint8_t> idx_images(std::uint32_t n, std::uint32_t h, std::uint32_t w) {
  std::vector<std::uint8_t> out;
  append_be32(out, kIdxImagesMagic);
  append_be32(out, n);
  append_be32(out, h);
  append_be32(out, w);
  for (std::uint32_t i = 0; i < n * h * w; ++i)
    out.push_back(static_cast<std::uint8_t>((i * 37 + 11) % 256));
  return out;
}

std::vector<std::uint8_t> idx_labels(std::uint32_t n) {
  std::vector<std::uint8_t> out;
  append_be32(out, kIdxLabelsMagic);
  append_be32(out, n);
  for (std::uint32_t i = 0; i < n; ++i) out.push_back(static_cast<std::uint8_t>((i * 3) % 10));
  return out;
}

void write_gz(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

// Writes a small Fashion-MNIST-like train split (n images of h x w) into `dir`.
void write_split(const TempDir& dir, bool gz, std::uint32_t n, std::uint32_t labels,
                 std::uint32_t h = 4, std::uint32_t w = 3) {
  const std::string suffix = gz ? ".gz" : "";
  if (gz) {
    write_gz(dir.file("train-images-idx3-ubyte.gz"), idx_images(n, h, w));
    write_gz(dir.file("train-labels-idx1-ubyte.gz"), idx_labels(labels));
  } else {
    write_bytes(dir.file("train-images-idx3-ubyte"), idx_images(n, h, w));
    write_bytes(dir.file("train-labels-idx1-ubyte"), idx_labels(labels));
  }
}

std::string io_error_message(const std::function<void()>& body) {
  try {
    body();
  } catch (const IoError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected mb::IoError";
  return "";
}

class IdxFormat : public ::testing::TestWithParam<bool> {};

TEST_P(IdxFormat, LoadsValuesShapesAndLabels) {
  TempDir dir;
  write_split(dir, GetParam(), 5, 5);
  const Dataset data = load_fashion_mnist(dir.path().string(), true);
  EXPECT_EQ(data.name, "fashion-mnist");
  EXPECT_EQ(data.num_classes, 10);
  EXPECT_EQ(data.images.shape(), (Shape{5, 1, 4, 3}));
  EXPECT_EQ(data.labels.shape(), (Shape{5}));
  EXPECT_EQ(data.sample_shape(), (Shape{1, 4, 3}));
  const std::vector<float> pixels = data.images.to_vector();
  for (std::uint32_t i = 0; i < pixels.size(); ++i) {
    EXPECT_FLOAT_EQ(pixels[i], static_cast<float>((i * 37 + 11) % 256) / 255.0f) << "pixel " << i;
  }
  EXPECT_EQ(data.labels.to_vector_int(), (std::vector<std::int32_t>{0, 3, 6, 9, 2}));

  const Dataset limited = load_fashion_mnist(dir.path().string(), true, 2);
  EXPECT_EQ(limited.images.shape(), (Shape{2, 1, 4, 3}));
  const std::vector<float> prefix(pixels.begin(), pixels.begin() + 24);
  EXPECT_EQ(limited.images.to_vector(), prefix);
  EXPECT_EQ(limited.labels.to_vector_int(), (std::vector<std::int32_t>{0, 3}));
}

INSTANTIATE_TEST_SUITE_P(GzipAndPlain, IdxFormat, ::testing::Values(true, false));

TEST(IdxReader, TruncatedPlainFileNamesOffsetAndExpectation) {
  TempDir dir;
  std::vector<std::uint8_t> bytes = idx_images(5, 4, 3);
  bytes.resize(bytes.size() - 7);
  const std::string path = dir.file("images");
  write_bytes(path, bytes);
  const std::string message = io_error_message([&] { read_idx_file(path, kIdxImagesMagic); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("truncated at byte offset " + std::to_string(bytes.size())),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("expected 60 data bytes"), std::string::npos) << message;
}

TEST(IdxReader, TruncatedHeader) {
  TempDir dir;
  std::vector<std::uint8_t> bytes = idx_images(5, 4, 3);
  bytes.resize(10);
  const std::string path = dir.file("images");
  write_bytes(path, bytes);
  const std::string message = io_error_message([&] { read_idx_file(path, kIdxImagesMagic); });
  EXPECT_NE(message.find("truncated at byte offset 10"), std::string::npos) << message;
}

TEST(IdxReader, TruncatedGzipStreamIsAnError) {
  TempDir dir;
  const std::string path = dir.file("images.gz");
  write_gz(path, idx_images(50, 28, 28));
  std::vector<std::uint8_t> compressed = read_bytes(path);
  compressed.resize(compressed.size() / 2);
  write_bytes(path, compressed);
  const std::string message = io_error_message([&] { read_idx_file(path, kIdxImagesMagic); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("byte offset"), std::string::npos) << message;
}

TEST(IdxReader, CorruptGzipStreamIsAnError) {
  TempDir dir;
  const std::string path = dir.file("images.gz");
  write_gz(path, idx_images(50, 28, 28));
  std::vector<std::uint8_t> compressed = read_bytes(path);
  for (std::size_t i = 20; i < 60; ++i) compressed[i] ^= 0x5A;
  write_bytes(path, compressed);
  EXPECT_THROW(read_idx_file(path, kIdxImagesMagic), IoError);
}

// The number after `key` in `message` (-1 when absent).
long long number_after(const std::string& message, const std::string& key) {
  const std::size_t at = message.find(key);
  if (at == std::string::npos) return -1;
  return std::stoll(message.substr(at + key.size()));
}

// Where a gzip stream breaks, the message says where: the compressed byte zlib reached and
// the decompressed bytes delivered before it, both inside the file (not 0, not past it).
TEST(IdxReader, GzipErrorsNameRealOffsets) {
  TempDir dir;
  const std::string path = dir.file("images.gz");
  const std::vector<std::uint8_t> plain = idx_images(200, 28, 28);
  write_gz(path, plain);
  const std::vector<std::uint8_t> compressed = read_bytes(path);

  std::vector<std::uint8_t> truncated(compressed.begin(),
                                      compressed.begin() + compressed.size() * 3 / 4);
  write_bytes(path, truncated);
  std::string message = io_error_message([&] { read_idx_file(path, kIdxImagesMagic); });
  EXPECT_NE(message.find("truncated gzip stream"), std::string::npos) << message;
  EXPECT_EQ(number_after(message, "compressed byte offset "),
            static_cast<long long>(truncated.size()))
      << message;
  const long long delivered = number_after(message, "(decompressed byte offset ");
  EXPECT_GT(delivered, 0) << message;
  EXPECT_LT(delivered, static_cast<long long>(plain.size())) << message;

  std::vector<std::uint8_t> corrupt = compressed;
  for (std::size_t i = corrupt.size() / 2; i < corrupt.size() / 2 + 64; ++i) corrupt[i] ^= 0xA5;
  write_bytes(path, corrupt);
  message = io_error_message([&] { read_idx_file(path, kIdxImagesMagic); });
  const long long at = number_after(message, "compressed byte offset ");
  EXPECT_GT(at, 0) << message;
  EXPECT_LE(at, static_cast<long long>(corrupt.size())) << message;
}

TEST(IdxReader, ConcatenatedGzipMembersAreOneStreamAndTrailingGarbageIsAnError) {
  TempDir dir;
  const std::vector<std::uint8_t> plain = idx_labels(40);
  const std::string first = dir.file("a.gz"), second = dir.file("b.gz");
  write_gz(first, std::vector<std::uint8_t>(plain.begin(), plain.begin() + 20));
  write_gz(second, std::vector<std::uint8_t>(plain.begin() + 20, plain.end()));
  std::vector<std::uint8_t> joined = read_bytes(first);
  const std::vector<std::uint8_t> tail = read_bytes(second);
  joined.insert(joined.end(), tail.begin(), tail.end());
  const std::string path = dir.file("labels.gz");
  write_bytes(path, joined);
  const IdxArray labels = read_idx_file(path, kIdxLabelsMagic);
  EXPECT_EQ(labels.data, std::vector<std::uint8_t>(plain.begin() + 8, plain.end()));

  joined.insert(joined.end(), {'j', 'u', 'n', 'k'});
  write_bytes(path, joined);
  const std::string message = io_error_message([&] { read_idx_file(path, kIdxLabelsMagic); });
  EXPECT_NE(message.find("4 bytes of trailing garbage"), std::string::npos) << message;
}

// Peak resident memory of this process, in bytes, since the last reset_peak_rss().
std::size_t peak_rss() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}
bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

// A small gzip file whose header promises 600 images of 28 x 28 but which inflates to
// 256 MiB more: the reader stops at a bound after the promised bytes instead of inflating
// it whole into memory (the old reader held all 256 MiB before looking at the header).
TEST(IdxReader, GzipBombCostsWhatItsHeaderPromises) {
  TempDir dir;
  const std::string path = dir.file("images.gz");
  {
    gzFile file = gzopen(path.c_str(), "wb1");
    ASSERT_NE(file, nullptr);
    const std::vector<std::uint8_t> head = idx_images(600, 28, 28);
    ASSERT_EQ(gzwrite(file, head.data(), static_cast<unsigned>(head.size())),
              static_cast<int>(head.size()));
    const std::vector<std::uint8_t> zeros(1 << 20, 0);
    for (int i = 0; i < 256; ++i) {
      ASSERT_EQ(gzwrite(file, zeros.data(), static_cast<unsigned>(zeros.size())),
                static_cast<int>(zeros.size()));
    }
    ASSERT_EQ(gzclose(file), Z_OK);
  }
  ASSERT_LT(std::filesystem::file_size(path), 2u << 20);
  if (!reset_peak_rss()) GTEST_SKIP() << "/proc/self/clear_refs cannot reset the peak RSS";
  const std::size_t before = peak_rss();
  const std::string message = io_error_message([&] { read_idx_file(path, kIdxImagesMagic); });
  const std::size_t growth = peak_rss() - before;
  EXPECT_NE(message.find("at least 67108864 unexpected extra bytes after byte offset 470416"),
            std::string::npos)
      << message;
  EXPECT_LT(growth, 32u << 20) << "peak RSS grew by " << growth << " bytes";
}

// A header may promise far more than the file holds: memory grows with the bytes that
// arrive, not with the promise (here 2^33 bytes promised, 1 KiB present).
TEST(IdxReader, HeaderPromisingMoreThanTheFileHoldsCostsWhatTheFileHolds) {
  TempDir dir;
  std::vector<std::uint8_t> bytes;
  append_be32(bytes, kIdxImagesMagic);
  append_be32(bytes, 1u << 19);
  append_be32(bytes, 1u << 7);
  append_be32(bytes, 1u << 7);
  bytes.resize(bytes.size() + 1024, 7);
  const std::string path = dir.file("images");
  write_bytes(path, bytes);
  if (!reset_peak_rss()) GTEST_SKIP() << "/proc/self/clear_refs cannot reset the peak RSS";
  const std::size_t before = peak_rss();
  const std::string message = io_error_message([&] { read_idx_file(path, kIdxImagesMagic); });
  EXPECT_NE(message.find("truncated at byte offset 1040: expected 8589934592 data bytes"),
            std::string::npos)
      << message;
  EXPECT_LT(peak_rss() - before, 32u << 20);

  // Beyond the plausibility bound (2^34 bytes) the header alone is refused.
  std::vector<std::uint8_t> absurd;
  append_be32(absurd, kIdxImagesMagic);
  append_be32(absurd, 1u << 30);
  append_be32(absurd, 1u << 10);
  append_be32(absurd, 1u << 10);
  write_bytes(path, absurd);
  const std::string refused = io_error_message([&] { read_idx_file(path, kIdxImagesMagic); });
  EXPECT_NE(refused.find("implausible dimension 1024 at byte offset 8"), std::string::npos)
      << refused;
}

TEST(IdxReader, ExtraBytesAreAnError) {
  TempDir dir;
  std::vector<std::uint8_t> bytes = idx_labels(4);
  bytes.push_back(1);
  const std::string path = dir.file("labels");
  write_bytes(path, bytes);
  const std::string message = io_error_message([&] { read_idx_file(path, kIdxLabelsMagic); });
  EXPECT_NE(message.find("extra bytes after byte offset 12"), std::string::npos) << message;
}

TEST(IdxReader, WrongMagicNamesBothValues) {
  TempDir dir;
  const std::string path = dir.file("labels");
  write_bytes(path, idx_labels(4));
  const std::string message = io_error_message([&] { read_idx_file(path, kIdxImagesMagic); });
  EXPECT_NE(message.find("0x00000801"), std::string::npos) << message;
  EXPECT_NE(message.find("expected 0x00000803"), std::string::npos) << message;
  EXPECT_NE(message.find(path), std::string::npos) << message;
}

TEST(FashionMnist, ImageLabelCountMismatchIsAnError) {
  TempDir dir;
  write_split(dir, true, 5, 4);
  const std::string message =
      io_error_message([&] { load_fashion_mnist(dir.path().string(), true); });
  EXPECT_NE(message.find("5 images"), std::string::npos) << message;
  EXPECT_NE(message.find("4 labels"), std::string::npos) << message;
}

TEST(FashionMnist, LabelOutOfRangeIsAnError) {
  TempDir dir;
  write_split(dir, false, 3, 3);
  std::vector<std::uint8_t> labels = idx_labels(3);
  labels[9] = 42;
  write_bytes(dir.file("train-labels-idx1-ubyte"), labels);
  const std::string message =
      io_error_message([&] { load_fashion_mnist(dir.path().string(), true); });
  EXPECT_NE(message.find("label 42 at byte offset 9"), std::string::npos) << message;
}

TEST(FashionMnist, MissingFilesNameThePathPackageAndFlag) {
  TempDir dir;
  const std::string message =
      io_error_message([&] { load_fashion_mnist(dir.path().string(), false); });
  EXPECT_NE(message.find(dir.file("t10k-images-idx3-ubyte.gz")), std::string::npos) << message;
  EXPECT_NE(message.find("apt-get install dataset-fashion-mnist"), std::string::npos) << message;
  EXPECT_NE(message.find("--data-dir"), std::string::npos) << message;
}

TEST(FashionMnist, LoadDatasetDispatchesByName) {
  TempDir dir;
  write_split(dir, true, 5, 5);
  const Dataset data =
      load_dataset("fashion-mnist", dir.path().string(), true, 3, SyntheticOptions{});
  EXPECT_EQ(data.size(), 3);
  EXPECT_THROW(load_dataset("imagenet", dir.path().string(), true, 0, SyntheticOptions{}),
               InvalidArgument);
}

// The published facts: 60,000 training and 10,000 test images of 28 x 28, ten classes of
// 6,000 and 1,000 images each.
TEST(FashionMnist, RealFilesHaveThePublishedShapeAndBalance) {
  if (!std::filesystem::exists(std::string(kDefaultFashionMnistDir) +
                               "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST not installed under " << kDefaultFashionMnistDir;
  }
  for (const bool train : {true, false}) {
    const Dataset data = load_fashion_mnist("", train);
    const std::int64_t n = train ? 60000 : 10000;
    EXPECT_EQ(data.images.shape(), (Shape{n, 1, 28, 28}));
    EXPECT_EQ(data.num_classes, 10);
    std::array<std::int64_t, 10> histogram{};
    for (const std::int32_t label : data.labels.to_vector_int()) {
      ASSERT_GE(label, 0);
      ASSERT_LT(label, 10);
      ++histogram[static_cast<std::size_t>(label)];
    }
    for (const std::int64_t count : histogram) EXPECT_EQ(count, n / 10);
    const float* pixels = data.images.data<float>();
    float low = 1.0f, high = 0.0f;
    for (std::int64_t i = 0; i < data.images.numel(); ++i) {
      low = std::min(low, pixels[i]);
      high = std::max(high, pixels[i]);
    }
    EXPECT_EQ(low, 0.0f);
    EXPECT_EQ(high, 1.0f);
  }
}

}  // namespace
}  // namespace mb
