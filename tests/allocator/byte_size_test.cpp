// parse_byte_size (label allocator): the accepted forms against hand-computed byte counts,
// and the rejected ones.
#include "allocator/byte_size.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/error.h"

namespace mb {
namespace {

TEST(ParseByteSize, AcceptedForms) {
  const std::size_t kib = 1024, mib = kib * 1024, gib = mib * 1024;
  EXPECT_EQ(parse_byte_size("4096"), 4096u);
  EXPECT_EQ(parse_byte_size("0"), 0u);
  EXPECT_EQ(parse_byte_size("17B"), 17u);
  EXPECT_EQ(parse_byte_size("64KiB"), 64 * kib);
  EXPECT_EQ(parse_byte_size("64K"), 64 * kib);
  EXPECT_EQ(parse_byte_size("512MiB"), 512 * mib);
  EXPECT_EQ(parse_byte_size("100M"), 100 * mib);
  EXPECT_EQ(parse_byte_size("6GiB"), 6 * gib);
  EXPECT_EQ(parse_byte_size("1.5G"), 1610612736u);
  EXPECT_EQ(parse_byte_size("0.5KiB"), 512u);
  EXPECT_EQ(parse_byte_size("2 GB"), 2000000000u);
  EXPECT_EQ(parse_byte_size("3kb"), 3000u);
  EXPECT_EQ(parse_byte_size("80 gib"), 80 * gib);
  EXPECT_EQ(parse_byte_size("1TiB"), 1024 * gib);
  EXPECT_EQ(parse_byte_size("1.5MB"), 1500000u);
  EXPECT_EQ(parse_byte_size("  7 MiB  "), 7 * mib);
  EXPECT_EQ(parse_byte_size("1.3K"), 1331u);  // 1331.2 rounded down
  EXPECT_EQ(parse_byte_size("18446744073709551615"), 18446744073709551615ull);
}

TEST(ParseByteSize, RejectsBadStringsNamingThemAndTheForms) {
  for (const char* bad :
       {"", "   ", "abc", "GiB", "-5", "12XB", "1.2.3G", "1e9", "5 G B", "0x10",
        "99999999999999999999", "20000000TiB", "1.5 Gibibytes", "0.5", "1.5", "2.5B"}) {
    SCOPED_TRACE(bad);
    try {
      parse_byte_size(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const InvalidArgument& error) {
      std::string message = error.what();
      EXPECT_NE(message.find(std::string("'") + bad + "'"), std::string::npos) << message;
      EXPECT_NE(message.find("512MiB"), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace mb
