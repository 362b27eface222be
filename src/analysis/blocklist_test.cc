#include "analysis/blocklist.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

namespace tollgate::analysis {
namespace {

using ::testing::HasSubstr;

struct Loaded {
  std::shared_ptr<const Blocklist> list;
  BlocklistLoadReport report;
};

Loaded Load(std::string_view text) {
  Loaded out;
  auto list = Blocklist::Parse(text, "test", "ads.txt", &out.report);
  EXPECT_TRUE(list) << list.error().message;
  if (list) out.list = *list;
  return out;
}

// The entry that matched, or "-" for no match, so expectations read as one string.
std::string MatchOf(const Blocklist& list, std::string_view host) {
  auto m = list.Match(host);
  return m ? std::string(*m) : std::string("-");
}

TEST(Blocklist, PlainDomainPerLine) {
  auto l = Load("ads.example.com\ntracker.example.net\n");
  EXPECT_EQ(l.list->size(), 2u);
  EXPECT_EQ(l.report.entries, 2u);
  EXPECT_EQ(l.list->name(), "test");
  EXPECT_EQ(MatchOf(*l.list, "ads.example.com"), "ads.example.com");
  EXPECT_EQ(MatchOf(*l.list, "tracker.example.net"), "tracker.example.net");
  EXPECT_EQ(MatchOf(*l.list, "example.com"), "-");
  EXPECT_EQ(MatchOf(*l.list, "www.example.com"), "-");
  EXPECT_TRUE(l.report.problems.empty());
}

TEST(Blocklist, HostsFormatWithEveryAddressKind) {
  auto l = Load(
      "0.0.0.0 a.example\n"
      "127.0.0.1 b.example\n"
      ":: c.example\n"
      "::1 d.example\n"
      "192.0.2.1\te.example\n"
      "fe80::1%lo0 f.example\n");
  EXPECT_EQ(l.list->size(), 6u);
  EXPECT_TRUE(l.report.problems.empty()) << l.report.problems[0];
  for (const char* host :
       {"a.example", "b.example", "c.example", "d.example", "e.example", "f.example"}) {
    EXPECT_EQ(MatchOf(*l.list, host), host);
  }
}

TEST(Blocklist, SeveralNamesOnOneHostsLine) {
  auto l = Load("127.0.0.1 x.example  y.example\tz.example\n");
  EXPECT_EQ(l.list->size(), 3u);
  EXPECT_EQ(MatchOf(*l.list, "x.example"), "x.example");
  EXPECT_EQ(MatchOf(*l.list, "y.example"), "y.example");
  EXPECT_EQ(MatchOf(*l.list, "sub.z.example"), "z.example");
}

TEST(Blocklist, MixedFormsCommentsBlankLinesAndWhitespace) {
  auto l = Load(
      "# A list\n"
      "\n"
      "   \t \n"
      "0.0.0.0 hosts.example # the hosts form\n"
      "  plain.example   \n"
      "#0.0.0.0 commented.example\n"
      "0.0.0.0 before.example#no space before the comment\n"
      "   # indented comment\n");
  EXPECT_EQ(l.list->size(), 3u);
  EXPECT_EQ(l.report.invalid, 0u);
  EXPECT_EQ(MatchOf(*l.list, "hosts.example"), "hosts.example");
  EXPECT_EQ(MatchOf(*l.list, "plain.example"), "plain.example");
  EXPECT_EQ(MatchOf(*l.list, "before.example"), "before.example");
  EXPECT_EQ(MatchOf(*l.list, "commented.example"), "-");
  EXPECT_EQ(MatchOf(*l.list, "comment"), "-");
}

TEST(Blocklist, CrlfLineEnds) {
  auto l = Load("a.example\r\n0.0.0.0 b.example\r\n# c\r\n\r\nc.example\r\n");
  EXPECT_EQ(l.list->size(), 3u);
  EXPECT_EQ(l.report.invalid, 0u);
  EXPECT_EQ(MatchOf(*l.list, "a.example"), "a.example");
  EXPECT_EQ(MatchOf(*l.list, "b.example"), "b.example");
  EXPECT_EQ(MatchOf(*l.list, "c.example"), "c.example");
}

TEST(Blocklist, LastLineWithoutNewline) {
  auto l = Load("a.example\nb.example");
  EXPECT_EQ(l.list->size(), 2u);
  EXPECT_EQ(MatchOf(*l.list, "b.example"), "b.example");
}

TEST(Blocklist, StoresNamesLowercaseWithoutTrailingDot) {
  auto l = Load("Ads.EXAMPLE.com\n0.0.0.0 Dotted.Example.\n");
  EXPECT_EQ(MatchOf(*l.list, "ads.example.com"), "ads.example.com");
  EXPECT_EQ(MatchOf(*l.list, "dotted.example"), "dotted.example");
  EXPECT_EQ(MatchOf(*l.list, "x.dotted.example"), "dotted.example");
  // Match takes names as the parsers return them; other spellings are not folded.
  EXPECT_EQ(MatchOf(*l.list, "ADS.EXAMPLE.COM"), "-");
  EXPECT_EQ(MatchOf(*l.list, "dotted.example."), "-");
}

TEST(Blocklist, SubdomainsMatchLookalikesDoNot) {
  auto l = Load("example.com\n");
  EXPECT_EQ(MatchOf(*l.list, "example.com"), "example.com");
  EXPECT_EQ(MatchOf(*l.list, "a.example.com"), "example.com");
  EXPECT_EQ(MatchOf(*l.list, "a.b.c.example.com"), "example.com");
  EXPECT_EQ(MatchOf(*l.list, "badexample.com"), "-");
  EXPECT_EQ(MatchOf(*l.list, "a.badexample.com"), "-");
  EXPECT_EQ(MatchOf(*l.list, "example.com.evil.net"), "-");
  EXPECT_EQ(MatchOf(*l.list, "com"), "-");
  EXPECT_EQ(MatchOf(*l.list, "xample.com"), "-");
  EXPECT_EQ(MatchOf(*l.list, "example.co"), "-");
  // Not valid hosts, but the listed suffix after the empty label still matches.
  EXPECT_EQ(MatchOf(*l.list, ".example.com"), "example.com");
  EXPECT_EQ(MatchOf(*l.list, "a..example.com"), "example.com");
}

TEST(Blocklist, ReportsTheClosestListedParent) {
  auto l = Load("example.com\nads.example.com\n");
  EXPECT_EQ(MatchOf(*l.list, "x.ads.example.com"), "ads.example.com");
  EXPECT_EQ(MatchOf(*l.list, "ads.example.com"), "ads.example.com");
  EXPECT_EQ(MatchOf(*l.list, "www.example.com"), "example.com");
}

TEST(Blocklist, MatchReturnsAViewIntoTheList) {
  auto l = Load("example.com\n");
  std::string host = "www.example.com";
  auto m = l.list->Match(host);
  ASSERT_TRUE(m);
  host.assign(host.size(), 'x');  // the answer must not point into the caller's string
  EXPECT_EQ(*m, "example.com");
}

TEST(Blocklist, SkipsAndCountsJunk) {
  auto l = Load(
      "127.0.0.1 localhost\n"
      "127.0.0.1 localhost.localdomain\n"
      "255.255.255.255 broadcasthost\n"
      "::1 localhost ip6-localhost ip6-loopback\n"
      "fe00::0 ip6-localnet\n"
      "ff02::1 ip6-allnodes\n"
      "0.0.0.0 local\n"
      "0.0.0.0 0.0.0.0\n"
      "0.0.0.0\n"
      "192.0.2.7\n"
      "2001:db8::1\n"
      "LocalHost\n"
      "0.0.0.0 real.example\n");
  EXPECT_EQ(l.list->size(), 1u);
  EXPECT_EQ(l.report.skipped_junk, 14u);
  EXPECT_EQ(l.report.invalid, 0u);
  EXPECT_TRUE(l.report.problems.empty());
  EXPECT_EQ(MatchOf(*l.list, "localhost"), "-");
  EXPECT_EQ(MatchOf(*l.list, "local"), "-");
  EXPECT_EQ(MatchOf(*l.list, "printer.local"), "-");
  EXPECT_EQ(MatchOf(*l.list, "real.example"), "real.example");
}

TEST(Blocklist, CountsDuplicatesInAnySpelling) {
  auto l = Load("a.example\nA.Example.\n0.0.0.0 a.example b.example a.example\nb.example\n");
  EXPECT_EQ(l.list->size(), 2u);
  EXPECT_EQ(l.report.entries, 2u);
  EXPECT_EQ(l.report.duplicates, 4u);
}

TEST(Blocklist, NamesAfterADuplicateStayIntact) {
  // Duplicates are dropped from the arena and the names after them move down; every name must
  // still be found and returned whole.
  std::string text;
  for (int i = 0; i < 60; ++i) {
    text += "n" + std::to_string(i) + ".example\n";
    if (i % 3 == 0) text += "N" + std::to_string(i / 2) + ".Example.\n";  // an earlier name
  }
  auto l = Load(text);
  EXPECT_EQ(l.list->size(), 60u);
  EXPECT_EQ(l.report.duplicates, 20u);
  for (int i = 0; i < 60; ++i) {
    const std::string name = "n" + std::to_string(i) + ".example";
    EXPECT_EQ(MatchOf(*l.list, "a." + name), name);
  }
}

TEST(Blocklist, MostlyCommentsAndJunk) {
  // The table is first sized by the line count and shrunk once the entries are known.
  std::string text;
  for (int i = 0; i < 5000; ++i) text += i % 100 == 0 ? "0.0.0.0 localhost\n" : "# comment\n";
  text += "one.example\ntwo.example\n";
  auto l = Load(text);
  EXPECT_EQ(l.list->size(), 2u);
  EXPECT_EQ(l.report.skipped_junk, 50u);
  EXPECT_EQ(MatchOf(*l.list, "one.example"), "one.example");
  EXPECT_EQ(MatchOf(*l.list, "x.two.example"), "two.example");
  EXPECT_EQ(MatchOf(*l.list, "three.example"), "-");
}

TEST(Blocklist, ReportsInvalidLinesWithLineAndColumn) {
  auto l = Load(
      "good.example\n"                     // 1
      "bad$name.example\n"                 // 2: '$' at col 4
      "0.0.0.0 ok.example a..b.example\n"  // 3: empty label ends at col 22, ok.example kept
      "999.1.1.1 x.example\n"              // 4: bad address at col 1
      "  two names.example\n"              // 5: first token not an address, col 3
      "*.wild.example\n"                   // 6: wildcard at col 1
      "\t0.0.0.0 caf\xc3\xa9.example\n"    // 7: non-ASCII at col 13
      ".lead.example\n"                    // 8: empty label at col 1
      "1.2.3\n"                            // 9: all-digit last label
      "after.example\n");                  // 10
  EXPECT_EQ(l.list->size(), 3u);
  EXPECT_EQ(l.report.invalid, 8u);
  ASSERT_EQ(l.report.problems.size(), 8u);
  EXPECT_EQ(l.report.problems[0],
            "ads.txt:2:4: name \"bad$name.example\" has \"$\", which is not allowed in a domain "
            "name (letters, digits, '-', '_' and '.')");
  EXPECT_EQ(l.report.problems[1], "ads.txt:3:22: name \"a..b.example\" has an empty label");
  EXPECT_THAT(l.report.problems[2], HasSubstr("ads.txt:4:1: \"999.1.1.1\" is not an IP address"));
  EXPECT_THAT(l.report.problems[3], HasSubstr("ads.txt:5:3: \"two\" is not an IP address"));
  EXPECT_THAT(l.report.problems[4],
              HasSubstr("ads.txt:6:1: name \"*.wild.example\" has a wildcard"));
  EXPECT_THAT(l.report.problems[5],
              HasSubstr("ads.txt:7:13: name \"caf\xc3\xa9.example\" is not ASCII"));
  EXPECT_THAT(l.report.problems[6],
              HasSubstr("ads.txt:8:1: name \".lead.example\" has an empty label"));
  EXPECT_THAT(l.report.problems[7], HasSubstr("ads.txt:9:1: \"1.2.3\" is neither an IP address"));
  EXPECT_EQ(MatchOf(*l.list, "good.example"), "good.example");
  EXPECT_EQ(MatchOf(*l.list, "ok.example"), "ok.example");
  EXPECT_EQ(MatchOf(*l.list, "after.example"), "after.example");
  EXPECT_EQ(MatchOf(*l.list, "x.example"), "-");
  EXPECT_EQ(MatchOf(*l.list, "b.example"), "-");
  EXPECT_EQ(MatchOf(*l.list, "wild.example"), "-");
}

TEST(Blocklist, QuotesOnlyTheFirstTenProblemsButCountsAll) {
  std::string text;
  for (int i = 0; i < 25; ++i) text += "bad!" + std::to_string(i) + ".example\n";
  text += "fine.example\n";
  auto l = Load(text);
  EXPECT_EQ(l.report.invalid, 25u);
  ASSERT_EQ(l.report.problems.size(), kBlocklistMaxReportedProblems);
  EXPECT_THAT(l.report.problems.front(), HasSubstr("ads.txt:1:4: "));
  EXPECT_THAT(l.report.problems.back(), HasSubstr("ads.txt:10:4: "));
  EXPECT_EQ(l.list->size(), 1u);
}

TEST(Blocklist, EmptyAndCommentOnlyListsMatchNothing) {
  for (std::string_view text : {std::string_view(""), std::string_view("# nothing\n\n  \r\n")}) {
    auto l = Load(text);
    EXPECT_EQ(l.list->size(), 0u);
    EXPECT_EQ(l.report.invalid, 0u);
    EXPECT_EQ(MatchOf(*l.list, "example.com"), "-");
    EXPECT_EQ(MatchOf(*l.list, ""), "-");
  }
}

std::string Label(size_t len, char c) { return std::string(len, c); }

TEST(Blocklist, LabelOf63IsValidAnd64IsNot) {
  const std::string ok = Label(63, 'a') + ".example";
  const std::string bad = Label(64, 'b') + ".example";
  auto l = Load(ok + "\n0.0.0.0 x.example " + bad + "\n");
  EXPECT_EQ(l.list->size(), 2u);
  EXPECT_EQ(MatchOf(*l.list, ok), ok);
  EXPECT_EQ(MatchOf(*l.list, bad), "-");
  ASSERT_EQ(l.report.problems.size(), 1u);
  EXPECT_THAT(l.report.problems[0], HasSubstr("ads.txt:2:19: name \""));
  EXPECT_THAT(l.report.problems[0], HasSubstr("has a label of 64 bytes; DNS allows at most 63"));
}

// Four labels of 63 and a dots: 4 * 63 + 3 = 255; trimmed to exactly 253 and 254 bytes.
std::string NameOfLength(size_t len) {
  std::string name =
      Label(63, 'a') + "." + Label(63, 'b') + "." + Label(63, 'c') + "." + Label(63, 'd');
  name.resize(len);
  return name;
}

TEST(Blocklist, NameOf253IsValidAnd254IsNot) {
  const std::string ok = NameOfLength(253);
  const std::string bad = NameOfLength(254);
  ASSERT_NE(ok.back(), '.');
  ASSERT_NE(bad.back(), '.');
  auto l = Load(ok + ".\n" + bad + "\n");
  EXPECT_EQ(l.list->size(), 1u);
  EXPECT_EQ(MatchOf(*l.list, ok), ok);
  EXPECT_EQ(MatchOf(*l.list, "x." + ok), ok);  // a host longer than any entry can still match
  ASSERT_EQ(l.report.problems.size(), 1u);
  EXPECT_THAT(l.report.problems[0], HasSubstr("ads.txt:2:1: name \""));
  EXPECT_THAT(l.report.problems[0], HasSubstr("is 254 bytes long; DNS allows at most 253"));
}

TEST(Blocklist, MatchOnEdgeInputs) {
  auto l = Load("example.com\nc\n");
  EXPECT_EQ(MatchOf(*l.list, ""), "-");
  EXPECT_EQ(MatchOf(*l.list, "."), "-");
  EXPECT_EQ(MatchOf(*l.list, ".."), "-");
  EXPECT_EQ(MatchOf(*l.list, "com"), "-");
  EXPECT_EQ(MatchOf(*l.list, "c"), "c");
  EXPECT_EQ(MatchOf(*l.list, "a.b.c"), "c");
  EXPECT_EQ(MatchOf(*l.list, "bc"), "-");
  EXPECT_EQ(MatchOf(*l.list, std::string_view("exa\0mple.com", 12)), "-");
  // Longer than any entry and than any DNS name; only its last labels can match.
  std::string long_host;
  for (int i = 0; i < 200; ++i) long_host += "ab.";
  EXPECT_EQ(MatchOf(*l.list, long_host + "example.com"), "example.com");
  EXPECT_EQ(MatchOf(*l.list, long_host + "example.org"), "-");
  EXPECT_EQ(MatchOf(*l.list, std::string(5000, '.')), "-");
  EXPECT_EQ(MatchOf(*l.list, std::string(5000, '.') + "c"), "c");
}

TEST(Blocklist, ManyEntriesAllFoundAfterTheTableGrows) {
  // More names than lines (the table is first sized by the line count), so it must grow.
  std::string text;
  constexpr int kLines = 3000;
  for (int i = 0; i < kLines; ++i) {
    text += "0.0.0.0 n" + std::to_string(i) + ".example m" + std::to_string(i) + ".example.org\n";
  }
  auto l = Load(text);
  ASSERT_EQ(l.list->size(), 2u * kLines);
  for (int i = 0; i < kLines; ++i) {
    const std::string n = "n" + std::to_string(i) + ".example";
    const std::string m = "m" + std::to_string(i) + ".example.org";
    ASSERT_EQ(MatchOf(*l.list, n), n);
    ASSERT_EQ(MatchOf(*l.list, "www." + m), m);
    ASSERT_EQ(MatchOf(*l.list, "x" + n), "-");
  }
  EXPECT_EQ(MatchOf(*l.list, "example"), "-");
  EXPECT_EQ(MatchOf(*l.list, "example.org"), "-");
}

TEST(Blocklist, ParseRefusesTextOverTheBound) {
  // Address space without memory behind it: the bound must be checked before any byte is read.
  const size_t size = kBlocklistMaxBytes + 1;
  void* region =
      ::mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(region, MAP_FAILED);
  auto list =
      Blocklist::Parse(std::string_view(static_cast<const char*>(region), size), "big", "big.txt");
  ::munmap(region, size);
  ASSERT_FALSE(list);
  EXPECT_EQ(list.error().code, ErrorCode::kTooLarge);
  EXPECT_THAT(list.error().message, HasSubstr("big.txt"));
}

TEST(Blocklist, LoadFileOfAMissingFileNamesThePath) {
  const std::string path = ::testing::TempDir() + "no-such-blocklist.txt";
  auto list = Blocklist::LoadFile(path, "ads");
  ASSERT_FALSE(list);
  EXPECT_EQ(list.error().code, ErrorCode::kNotFound);
  EXPECT_THAT(list.error().message, HasSubstr(path));
}

TEST(Blocklist, LoadFileReadsAndReportsAgainstThePath) {
  const std::string path =
      ::testing::TempDir() + "blocklist_test_" + std::to_string(::getpid()) + ".txt";
  {
    std::ofstream out(path, std::ios::binary);
    out << "0.0.0.0 ads.example\nbad!.example\n";
  }
  BlocklistLoadReport report;
  auto list = Blocklist::LoadFile(path, "ads", &report);
  std::remove(path.c_str());
  ASSERT_TRUE(list) << list.error().message;
  EXPECT_EQ((*list)->name(), "ads");
  EXPECT_EQ(MatchOf(**list, "ads.example"), "ads.example");
  ASSERT_EQ(report.problems.size(), 1u);
  EXPECT_THAT(report.problems[0], HasSubstr(path + ":2:4: "));
}

TEST(Blocklist, LoadFileRefusesADirectory) {
  auto list = Blocklist::LoadFile(::testing::TempDir(), "ads");
  ASSERT_FALSE(list);
  EXPECT_THAT(list.error().message, HasSubstr(::testing::TempDir()));
}

}  // namespace
}  // namespace tollgate::analysis
