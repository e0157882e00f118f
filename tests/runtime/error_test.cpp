// Errors carry the expression, file and line; OutOfMemory carries the allocator's report.
#include "runtime/error.h"

#include <gtest/gtest.h>

#include <string>

namespace mb {
namespace {

int checked_half(int value) {
  MB_CHECK(value % 2 == 0, "value ", value, " is odd");
  return value / 2;
}

TEST(Error, CheckCarriesExpressionFileLineAndMessage) {
  EXPECT_EQ(checked_half(4), 2);
  try {
    checked_half(3);
    FAIL() << "MB_CHECK did not throw";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("value % 2 == 0"), std::string::npos) << what;
    EXPECT_NE(what.find("value 3 is odd"), std::string::npos) << what;
    EXPECT_NE(what.find("error_test.cpp:"), std::string::npos) << what;
    EXPECT_NE(std::string(e.file()).find("error_test.cpp"), std::string::npos);
    EXPECT_GT(e.line(), 0);
  }
}

TEST(Error, ThrowNamesTypeAndLocation) {
  const int line = __LINE__ + 2;
  try {
    MB_THROW(IoError, "file ", "x.idx", " truncated at offset ", 16);
    FAIL() << "MB_THROW did not throw";
  } catch (const IoError& e) {
    // The message is "<file>:<line>: <parts>", the parts streamed together in order.
    const std::string what = e.what();
    const std::string location = std::string(__FILE__) + ":" + std::to_string(line) + ": ";
    EXPECT_EQ(what, location + "file x.idx truncated at offset 16");
    EXPECT_STREQ(e.file(), __FILE__);
    EXPECT_EQ(e.line(), line);
  } catch (const std::exception& e) {
    FAIL() << "MB_THROW(IoError, ...) threw another type: " << e.what();
  }
}

TEST(Error, OutOfMemoryMessageCarriesTheReport) {
  FreeArenaReport report;
  report.capacity = 1 << 20;
  report.reserved = 1 << 20;
  report.allocated = 900 << 10;
  report.free_in_arena = 124 << 10;
  report.largest_free_block = 62 << 10;
  report.fragmentation = 0.5;
  report.allocated_by_tag[static_cast<int>(MemoryTag::Activation)] = 800 << 10;
  report.allocated_by_tag[static_cast<int>(MemoryTag::Param)] = 100 << 10;
  OutOfMemory oom(200 << 10, report, "pool(host)");
  const std::string what = oom.what();
  EXPECT_NE(what.find("requested 200.00 KiB"), std::string::npos) << what;
  EXPECT_NE(what.find("allocated 900.00 KiB"), std::string::npos) << what;
  EXPECT_NE(what.find("largest free block 62.00 KiB"), std::string::npos) << what;
  EXPECT_NE(what.find("fragmentation 50%"), std::string::npos) << what;
  EXPECT_NE(what.find("activation 800.00 KiB, param 100.00 KiB"), std::string::npos) << what;
  EXPECT_EQ(oom.report().allocated, report.allocated);
  EXPECT_EQ(oom.requested_bytes(), 200u << 10);
}

TEST(Error, FormatBytes) {
  EXPECT_EQ(format_bytes(17), "17 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(std::size_t{6} << 30), "6.00 GiB");
}

}  // namespace
}  // namespace mb
