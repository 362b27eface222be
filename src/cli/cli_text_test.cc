#include "cli/cli_text.h"

#include <gtest/gtest.h>

namespace tollgate::cli {
namespace {

TEST(TableTest, PadsColumnsToTheWidestCellAndLeavesTheLastUnpadded) {
  Table t({"NAME", "ACTION", "ORIGIN"});
  t.AddRow({"no-telnet", "deny", "/etc/tollgate/rules.d/10-base.toml:3:8"});
  t.AddRow({"a", "allow"});
  EXPECT_EQ(t.Render(),
            "NAME       ACTION  ORIGIN\n"
            "no-telnet  deny    /etc/tollgate/rules.d/10-base.toml:3:8\n"
            "a          allow\n");
}

TEST(TableTest, WithoutRowsIsTheHeader) { EXPECT_EQ(Table({"A", "B"}).Render(), "A  B\n"); }

TEST(TableTest, EscapesControlCharactersAndCountsUtf8AsOneColumn) {
  Table t({"EXE", "X"});
  t.AddRow({"/tmp/\x1b[2Jevil", "1"});
  t.AddRow({"/opt/caf\xc3\xa9", "2"});
  EXPECT_EQ(t.Render(),
            "EXE               X\n"
            "/tmp/\\x1b[2Jevil  1\n"
            "/opt/caf\xc3\xa9         2\n");
}

TEST(PrintableTest, KeepsValidUtf8AndEscapesTheRest) {
  EXPECT_EQ(Printable("ok \xe2\x9c\x93"), "ok \xe2\x9c\x93");
  EXPECT_EQ(Printable("a\nb\tc\x7f"), "a\\x0ab\\x09c\\x7f");
  EXPECT_EQ(Printable("\xff\xc3"), "\\xff\\xc3");           // invalid, truncated
  EXPECT_EQ(Printable("\xc2\x9b"), "\\xc2\\x9b");           // C1 control (CSI) as UTF-8
  EXPECT_EQ(Printable("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");  // overlong
}

TEST(Rfc3339Test, ParsesOffsetsFractionsAndRejectsGarbage) {
  EXPECT_EQ(ParseRfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(ParseRfc3339("2024-05-01T12:00:00Z"), 1714564800);
  EXPECT_EQ(ParseRfc3339("2024-05-01T14:00:00.123456+02:00"), 1714564800);
  EXPECT_EQ(ParseRfc3339("2018-04-07T14:13:27.903996051+02:00"), 1523103207);
  EXPECT_EQ(ParseRfc3339("2024-05-01 12:00:00z"), 1714564800);
  EXPECT_EQ(ParseRfc3339("2024-02-29T00:00:00Z"), 1709164800);
  EXPECT_FALSE(ParseRfc3339("2023-02-29T00:00:00Z"));
  EXPECT_FALSE(ParseRfc3339("2024-05-01T12:00:00"));  // no offset
  EXPECT_FALSE(ParseRfc3339("2024-13-01T12:00:00Z"));
  EXPECT_FALSE(ParseRfc3339("2024-05-01T12:00:00.Z"));
  EXPECT_FALSE(ParseRfc3339("2024-05-01T12:00:00Zjunk"));
  EXPECT_FALSE(ParseRfc3339("10m"));
  EXPECT_EQ(FormatRfc3339Utc(1714564800), "2024-05-01T12:00:00Z");
}

TEST(DurationTest, ParsesUnitsAndCombinations) {
  EXPECT_EQ(ParseDurationSeconds("90s"), 90);
  EXPECT_EQ(ParseDurationSeconds("10m"), 600);
  EXPECT_EQ(ParseDurationSeconds("2h"), 7200);
  EXPECT_EQ(ParseDurationSeconds("1d"), 86400);
  EXPECT_EQ(ParseDurationSeconds("1w"), 604800);
  EXPECT_EQ(ParseDurationSeconds("1h30m"), 5400);
  EXPECT_EQ(ParseDurationSeconds("1h0m0s"), 3600);  // Go's time.Duration.String()
  for (const char* bad : {"", "10", "m", "10x", "-5m", "1.5h", "99999999999999d", "1h 30m"}) {
    EXPECT_FALSE(ParseDurationSeconds(bad)) << bad;
  }
}

TEST(ResolveSinceTest, RelativeCountsBackFromNowAndAbsoluteIsNormalisedToUtc) {
  const int64_t now = 1714564800;  // 2024-05-01T12:00:00Z
  EXPECT_EQ(*ResolveSince("10m", now), "2024-05-01T11:50:00Z");
  EXPECT_EQ(*ResolveSince("1d", now), "2024-04-30T12:00:00Z");
  EXPECT_EQ(*ResolveSince("2024-05-01T14:00:00+02:00", now), "2024-05-01T12:00:00Z");
  auto bad = ResolveSince("yesterday", now);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.error().message.find("10m"), std::string::npos);
}

}  // namespace
}  // namespace tollgate::cli
