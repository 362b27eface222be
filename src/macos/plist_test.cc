#include "macos/plist.h"

#include <gtest/gtest.h>

#include <string>

namespace tollgate::macos {
namespace {

Plist Sample() {
  Plist p = Plist::Dict();
  p.Set("name", Plist::Str("com.example.tollgate"));
  p.Set("sandbox", Plist::Bool(true));
  p.Set("groups", Plist::StringArray({"ABCDE12345.com.example", "group.x"}));
  p.Set("expires", Plist::DateUnix(2000000000));
  Plist inner = Plist::Dict();
  inner.Set("key", Plist::Str("value"));
  p.Set("inner", std::move(inner));
  return p;
}

void ExpectSample(const Plist& p) {
  EXPECT_EQ(p["name"].String(), "com.example.tollgate");
  EXPECT_EQ(p["sandbox"].Bool(), true);
  EXPECT_EQ(p["groups"].Strings(), (std::vector<std::string>{"ABCDE12345.com.example", "group.x"}));
  EXPECT_EQ(p["expires"].DateUnix(), 2000000000);
  EXPECT_EQ(p["inner"]["key"].String(), "value");
}

TEST(Plist, XmlRoundTrip) {
  std::string xml = Sample().ToXml();
  ASSERT_NE(xml.find("<key>sandbox</key>"), std::string::npos);
  auto parsed = ParsePlist(xml, "sample.plist");
  ASSERT_TRUE(parsed) << parsed.error().message;
  ExpectSample(*parsed);
}

TEST(Plist, BinaryRoundTrip) {
  std::vector<uint8_t> bin = Sample().ToBinary();
  ASSERT_GE(bin.size(), 8u);
  EXPECT_EQ(std::string(bin.begin(), bin.begin() + 6), "bplist");
  auto parsed = ParsePlist(bin, "sample.plist");
  ASSERT_TRUE(parsed) << parsed.error().message;
  ExpectSample(*parsed);
}

TEST(Plist, LookupsOnWrongTypesAreEmpty) {
  Plist p = Sample();
  EXPECT_FALSE(p["name"].Bool());
  EXPECT_FALSE(p["sandbox"].String());
  EXPECT_TRUE(p["missing"]["deeper"]["still"].IsNull());
  EXPECT_TRUE(p["name"]["key"].IsNull());
  EXPECT_EQ(p["name"].Strings(), std::vector<std::string>{"com.example.tollgate"});
  EXPECT_TRUE(p["sandbox"].Strings().empty());
  EXPECT_TRUE(p["groups"].At(5).IsNull());
  EXPECT_EQ(p.Ref().Keys().size(), 5u);
}

TEST(Plist, EditsAndRemovals) {
  Plist p = Sample();
  p.Remove("sandbox");
  p.Remove("never-there");
  EXPECT_TRUE(p["sandbox"].IsNull());
  p.Set("sandbox", Plist::Bool(false));
  EXPECT_EQ(p["sandbox"].Bool(), false);
}

TEST(Plist, GarbageIsAnErrorNamingTheFile) {
  auto r = ParsePlist(std::string_view("this is not a plist"), "/x/Info.plist");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformed);
  EXPECT_NE(r.error().message.find("/x/Info.plist"), std::string::npos);
}

// libplist 2.2 reports the raw length of a string with an embedded NUL but stores only the part
// before it; reading `length` bytes over-read the heap (found by provisioning_profile_fuzz).
TEST(Plist, StringWithEmbeddedNulIsCutAtTheNul) {
  std::string xml =
      "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>g</key><array><string>ab";
  xml += std::string("\0\0\0\0cd", 6);
  xml += "</string></array></dict></plist>";
  auto p = ParsePlist(xml, "nul.plist");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->Ref()["g"].Strings(), std::vector<std::string>{"ab"});
}

TEST(Plist, EmptyIsAnError) {
  auto r = ParsePlist(std::string_view(""), "empty.plist");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("empty"), std::string::npos);
}

TEST(Plist, TruncatedInputsNeverCrash) {
  std::string xml = Sample().ToXml();
  std::vector<uint8_t> bin = Sample().ToBinary();
  for (size_t n = 0; n < xml.size(); n += 7) {
    auto r = ParsePlist(std::string_view(xml).substr(0, n), "t.plist");
    if (!r) {
      EXPECT_FALSE(r.error().message.empty());
    }
  }
  for (size_t n = 0; n < bin.size(); ++n) {
    auto r = ParsePlist(std::span(bin.data(), n), "t.plist");
    if (!r) {
      EXPECT_FALSE(r.error().message.empty());
    }
  }
}

TEST(Plist, DeepNestingIsRefusedBeforeParsing) {
  std::string xml = "<?xml version=\"1.0\"?><plist version=\"1.0\">";
  for (int i = 0; i < 10000; ++i) xml += "<array>";
  for (int i = 0; i < 10000; ++i) xml += "</array>";
  xml += "</plist>";
  auto r = ParsePlist(xml, "deep.plist");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kTooLarge);
}

TEST(Plist, OversizeIsRefused) {
  std::vector<uint8_t> big(kMaxPlistBytes + 1, ' ');
  auto r = ParsePlist(big, "big.plist");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kTooLarge);
}

}  // namespace
}  // namespace tollgate::macos
