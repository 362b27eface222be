#include "common/rfc3339.h"

#include <gtest/gtest.h>

namespace tollgate {
namespace {

TEST(Rfc3339Test, ParsesOffsetsAndFractionsToMicroseconds) {
  EXPECT_EQ(ParseRfc3339Micros("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(ParseRfc3339Micros("2024-05-01T14:00:00.123456+02:00"), 1714564800123456);
  EXPECT_EQ(ParseRfc3339Micros("2024-05-01T12:00:00.5z"), 1714564800500000);
  EXPECT_EQ(ParseRfc3339Micros("2018-04-07T14:13:27.903996051+02:00"), 1523103207903996);
  EXPECT_EQ(ParseRfc3339Micros("1969-12-31T23:59:59Z"), -1'000'000);
  EXPECT_EQ(ParseRfc3339Micros("2016-12-31T23:59:60Z"), ParseRfc3339Micros("2016-12-31T23:59:59Z"));
}

TEST(Rfc3339Test, RefusesWhatIsNotAStrictTimestamp) {
  for (const char* bad :
       {"2023-02-29T00:00:00Z", "2024-04-31T00:00:00Z", "2024-05-01T12:00:00",
        "2024-05-01T12:00:00.Z", "2024-05-01T12:00:00.1234567890Z", "2024-05-01T24:00:00Z",
        "2024-05-01T12:00:00+2:00", "2024-05-01", "2024-05-01T12:00:00Zjunk", ""}) {
    EXPECT_FALSE(ParseRfc3339Micros(bad)) << bad;
  }
}

TEST(Rfc3339Test, FormatsUtcAndRoundTrips) {
  EXPECT_EQ(FormatRfc3339Micros(1714564800123456), "2024-05-01T12:00:00.123456Z");
  EXPECT_EQ(FormatRfc3339Micros(1714564800123456, false), "2024-05-01T12:00:00Z");
  EXPECT_EQ(FormatRfc3339Micros(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(ParseRfc3339Micros(FormatRfc3339Micros(1523103207903996)), 1523103207903996);
}

}  // namespace
}  // namespace tollgate
