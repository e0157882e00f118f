// CIFAR-10 binary reader on batch files written here: values, labels, limit across files,
// the optional cifar-10-batches-bin/ folder, and the errors for bad or missing files.
#include "data/cifar10.h"

#include <gtest/gtest.h>

#include "data/dataset.h"
#include "runtime/error.h"
#include "tests/data/temp_dir.h"

namespace mb {
namespace {

using testing::TempDir;
using testing::write_bytes;

// Record r of file f: label (f + r) % 10, pixel p = (f * 7 + r * 13 + p) % 256.
std::vector<std::uint8_t> batch_file(int file_index, int records) {
  std::vector<std::uint8_t> out;
  for (int r = 0; r < records; ++r) {
    out.push_back(static_cast<std::uint8_t>((file_index + r) % 10));
    for (int p = 0; p < kCifar10ImageBytes; ++p) {
      out.push_back(static_cast<std::uint8_t>((file_index * 7 + r * 13 + p) % 256));
    }
  }
  return out;
}

void write_cifar(const std::filesystem::path& folder, int records_per_file) {
  std::filesystem::create_directories(folder);
  for (int f = 1; f <= 5; ++f) {
    write_bytes((folder / ("data_batch_" + std::to_string(f) + ".bin")).string(),
                batch_file(f, records_per_file));
  }
  write_bytes((folder / "test_batch.bin").string(), batch_file(0, records_per_file));
}

void expect_record(const Dataset& data, std::int64_t index, int file_index, int record) {
  EXPECT_EQ(data.labels.to_vector_int()[static_cast<std::size_t>(index)],
            (file_index + record) % 10);
  const float* pixels = data.images.data<float>() + index * kCifar10ImageBytes;
  for (int p = 0; p < kCifar10ImageBytes; p += 97) {
    ASSERT_FLOAT_EQ(pixels[p],
                    static_cast<float>((file_index * 7 + record * 13 + p) % 256) / 255.0f)
        << "sample " << index << " pixel " << p;
  }
}

TEST(Cifar10, LoadsTrainAndTestSplitsInFileOrder) {
  TempDir dir;
  write_cifar(dir.path(), 3);
  const Dataset train = load_cifar10(dir.path().string(), true);
  EXPECT_EQ(train.name, "cifar10");
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(train.images.shape(), (Shape{15, 3, 32, 32}));
  EXPECT_EQ(train.labels.shape(), (Shape{15}));
  for (int f = 1; f <= 5; ++f) {
    for (int r = 0; r < 3; ++r) expect_record(train, (f - 1) * 3 + r, f, r);
  }
  const Dataset test = load_cifar10(dir.path().string(), false);
  EXPECT_EQ(test.size(), 3);
  for (int r = 0; r < 3; ++r) expect_record(test, r, 0, r);
}

TEST(Cifar10, FindsTheArchiveFolderAndHonoursLimitAcrossFiles) {
  TempDir dir;
  write_cifar(dir.path() / "cifar-10-batches-bin", 3);
  const Dataset data = load_cifar10(dir.path().string(), true, 4);
  EXPECT_EQ(data.size(), 4);
  for (int r = 0; r < 3; ++r) expect_record(data, r, 1, r);
  expect_record(data, 3, 2, 0);
  EXPECT_EQ(load_dataset("cifar10", dir.path().string(), false, 2, SyntheticOptions{}).size(), 2);
}

TEST(Cifar10, PartialRecordNamesItsByteOffset) {
  TempDir dir;
  const std::string path = dir.file("data_batch_1.bin");
  std::vector<std::uint8_t> bytes = batch_file(1, 2);
  bytes.resize(bytes.size() - 100);
  write_bytes(path, bytes);
  try {
    read_cifar10_file(path);
    FAIL() << "expected mb::IoError";
  } catch (const IoError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("truncated record at byte offset 3073"), std::string::npos) << message;
  }
}

TEST(Cifar10, LabelOutOfRangeIsAnError) {
  TempDir dir;
  const std::string path = dir.file("test_batch.bin");
  std::vector<std::uint8_t> bytes = batch_file(0, 3);
  bytes[2 * kCifar10RecordBytes] = 10;
  write_bytes(path, bytes);
  try {
    read_cifar10_file(path);
    FAIL() << "expected mb::IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("label 10 at byte offset 6146"), std::string::npos)
        << e.what();
  }
}

TEST(Cifar10, MissingOrIncompleteDataNamesThePathAndFlag) {
  TempDir dir;
  try {
    load_cifar10(dir.path().string(), true);
    FAIL() << "expected mb::IoError";
  } catch (const IoError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(dir.file("data_batch_1.bin")), std::string::npos) << message;
    EXPECT_NE(message.find("--data-dir"), std::string::npos) << message;
  }
  write_cifar(dir.path(), 1);
  std::filesystem::remove(dir.path() / "data_batch_4.bin");
  try {
    load_cifar10(dir.path().string(), true);
    FAIL() << "expected mb::IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("data_batch_4.bin")), std::string::npos)
        << e.what();
  }
  write_bytes(dir.file("test_batch.bin"), {});
  EXPECT_THROW(load_cifar10(dir.path().string(), false), IoError);
}

}  // namespace
}  // namespace mb
