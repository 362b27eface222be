#include "common/error.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace tollgate {
namespace {

Expected<int> Half(int n) {
  if (n % 2 != 0) return Unexpected(ErrorCode::kInvalidArgument, "odd");
  return n / 2;
}

TEST(ExpectedTest, CarriesValueOrError) {
  auto ok = Half(8);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, 4);
  auto bad = Half(3);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.error().message, "odd");
}

TEST(ExpectedTest, StatusDefaultsToOk) {
  Status s;
  EXPECT_TRUE(s);
  Status f = Unexpected(ErrorCode::kTimeout, "late");
  EXPECT_FALSE(f);
  EXPECT_EQ(f.error().code, ErrorCode::kTimeout);
}

TEST(ErrorTest, SystemErrorNamesTheCallAndErrno) {
  Error e = Error::System("open /nope", ENOENT);
  EXPECT_EQ(e.code, ErrorCode::kSystem);
  EXPECT_EQ(e.message, "open /nope: No such file or directory");
}

TEST(CheckDeathTest, BrokenInvariantAborts) {
  EXPECT_DEATH(TG_CHECK(1 + 1 == 3), "check failed: 1 \\+ 1 == 3");
}

}  // namespace
}  // namespace tollgate
