#include "cli/opensnitch_import.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "analysis/rule_table.h"

namespace tollgate::cli::opensnitch {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kNow = 1714564800;  // 2024-05-01T12:00:00Z

// One rule file with one rule: `operator` is the operator's JSON.
std::string Rule(const std::string& name, const std::string& op, const std::string& action = "deny",
                 const std::string& extra = "") {
  return R"({"name":")" + name + R"(","enabled":true,"precedence":false,"action":")" + action +
         R"(","duration":"always",)" + extra + R"("operator":)" + op + "}";
}
std::string Op(const std::string& type, const std::string& operand, const std::string& data) {
  return R"({"type":")" + type + R"(","operand":")" + operand + R"(","sensitive":false,"data":")" +
         data + R"("})";
}

ImportResult Import(std::vector<std::string> texts, std::string prefix = "") {
  std::vector<SourceFile> files;
  for (size_t i = 0; i < texts.size(); ++i) {
    files.push_back({"f" + std::to_string(i) + ".json", texts[i]});
  }
  return ImportOpenSnitchRules(files, {kNow, prefix});
}

// The converted TOML of a one-rule import, after checking it loads in tollgate.
std::string OnlyToml(const ImportResult& r) {
  EXPECT_EQ(r.rules.size(), 1u);
  for (const auto& u : r.unconverted) ADD_FAILURE() << u.what << ": " << u.why;
  if (r.rules.empty()) return "";
  EXPECT_TRUE(analysis::ParseRuleFile(r.rules[0].toml, "test"));
  return r.rules[0].toml;
}

TEST(OpenSnitchImportTest, ProcessPathSimpleIsExe) {
  EXPECT_EQ(
      OnlyToml(Import({Rule("curl", Op("simple", "process.path", "/usr/bin/curl"), "allow")})),
      "[[rule]]\nname = \"curl\"\naction = \"allow\"\nexe = \"/usr/bin/curl\"\n");
}

TEST(OpenSnitchImportTest, DestHostSimpleIsExactLowercaseHost) {
  EXPECT_EQ(OnlyToml(Import({Rule("h", Op("simple", "dest.host", "Ads.Example.COM."))})),
            "[[rule]]\nname = \"h\"\naction = \"deny\"\nhost = \"ads.example.com\"\n");
}

TEST(OpenSnitchImportTest, DestHostRegexpBecomesAWholeNameRe2Pattern) {
  // Unanchored: OpenSnitch searches anywhere in the name.
  std::string t =
      OnlyToml(Import({Rule("r", Op("regexp", "dest.host", ".*\\\\.example\\\\.com"))}));
  EXPECT_THAT(t, HasSubstr("host = \"/.*(?:.*\\\\.example\\\\.com).*/\"\n"));
  // Anchored at both ends without a top-level |: the same expression.
  t = OnlyToml(Import({Rule("r", Op("regexp", "dest.host", "^(www\\\\.)?example\\\\.com$"))}));
  EXPECT_THAT(t, HasSubstr("host = \"/^(www\\\\.)?example\\\\.com$/\"\n"));
  // Anchors on two branches are wrapped, so "^a|b$" keeps its search meaning.
  t = OnlyToml(Import({Rule("r", Op("regexp", "dest.host", "^ads|tracker$"))}));
  EXPECT_THAT(t, HasSubstr("host = \"/.*(?:^ads|tracker$).*/\"\n"));
  // Literal alternatives become a host list.
  t = OnlyToml(Import({Rule("r", Op("regexp", "dest.host", "^(a\\\\.com|b\\\\.org)$"))}));
  EXPECT_THAT(t, HasSubstr("host = [\"a.com\", \"b.org\"]\n"));
}

TEST(OpenSnitchImportTest, NonRe2HostRegexpIsReportedNotDropped) {
  // A back-reference: Go's regexp refuses it too, but a hand-edited file may hold anything.
  auto r = Import({Rule("bad", Op("regexp", "dest.host", "(a)\\\\1"))});
  EXPECT_TRUE(r.rules.empty());
  ASSERT_EQ(r.unconverted.size(), 1u);
  EXPECT_EQ(r.unconverted[0].rule, "bad");
  EXPECT_THAT(r.unconverted[0].why, HasSubstr("RE2"));
}

TEST(OpenSnitchImportTest, DestIpNetworkPortProtocolUid) {
  EXPECT_THAT(OnlyToml(Import({Rule("i", Op("simple", "dest.ip", "2001:DB8::1"))})),
              HasSubstr("ip = \"2001:db8::1\"\n"));
  EXPECT_THAT(OnlyToml(Import({Rule("n", Op("network", "dest.network", "10.0.0.0/8"))})),
              HasSubstr("cidr = \"10.0.0.0/8\"\n"));
  EXPECT_THAT(OnlyToml(Import({Rule("p", Op("simple", "dest.port", "443"))})),
              HasSubstr("port = 443\n"));
  EXPECT_THAT(OnlyToml(Import({Rule("p", Op("regexp", "dest.port", "^(53|80|443)$"))})),
              HasSubstr("port = [53, 80, 443]\n"));
  EXPECT_THAT(OnlyToml(Import({Rule("u", Op("simple", "user.id", "1000"))})),
              HasSubstr("uid = 1000\n"));
  EXPECT_THAT(OnlyToml(Import({Rule("u", Op("regexp", "user.id", "^(0|115|118)$"))})),
              HasSubstr("uid = [0, 115, 118]\n"));
}

TEST(OpenSnitchImportTest, NetworkWithHostBitsIsMaskedWithANote) {
  auto r = Import({Rule("n", Op("network", "dest.network", "192.168.1.0/16"))});
  EXPECT_THAT(OnlyToml(r), HasSubstr("cidr = \"192.168.0.0/16\"\n"));
  ASSERT_EQ(r.rules[0].notes.size(), 1u);
  EXPECT_THAT(r.rules[0].notes[0], HasSubstr("host bits"));
}

TEST(OpenSnitchImportTest, ProtocolKeepsOpenSnitchsAddressFamily) {
  EXPECT_THAT(OnlyToml(Import({Rule("t", Op("simple", "protocol", "tcp"))})),
              HasSubstr("protocol = \"tcp\"\ncidr = \"0.0.0.0/0\"\n"));
  EXPECT_THAT(OnlyToml(Import({Rule("t", Op("simple", "protocol", "udp6"))})),
              HasSubstr("protocol = \"udp\"\ncidr = \"::/0\"\n"));
  // Both families: no restriction.
  std::string both = OnlyToml(Import({Rule("t", Op("regexp", "protocol", "^(tcp|tcp6)$"))}));
  EXPECT_THAT(both, HasSubstr("protocol = \"tcp\"\n"));
  EXPECT_THAT(both, ::testing::Not(HasSubstr("cidr")));
  // An IPv6 address with an IPv4 protocol never matched in OpenSnitch: reported.
  auto never = Import(
      {Rule("x", R"({"type":"list","operand":"list","list":[)" + Op("simple", "protocol", "tcp") +
                     "," + Op("simple", "dest.ip", "::1") + "]}")});
  EXPECT_TRUE(never.rules.empty());
  ASSERT_EQ(never.unconverted.size(), 1u);
  EXPECT_THAT(never.unconverted[0].why, HasSubstr("never matches"));
  auto lite = Import({Rule("l", Op("simple", "protocol", "udplite"))});
  ASSERT_EQ(lite.unconverted.size(), 1u);
  EXPECT_THAT(lite.unconverted[0].why, HasSubstr("udplite"));
}

TEST(OpenSnitchImportTest, ListOperatorIsAnAndOfAllItsConditions) {
  std::string list = R"({"type":"list","operand":"list","data":"[...]","list":[)" +
                     Op("simple", "process.path", "/usr/bin/ssh") + "," +
                     Op("simple", "dest.port", "22") + "," + Op("simple", "dest.ip", "10.1.2.3") +
                     "," + Op("simple", "user.id", "1000") + "]}";
  EXPECT_EQ(OnlyToml(Import({Rule("ssh", list, "allow")})),
            "[[rule]]\nname = \"ssh\"\naction = \"allow\"\nport = 22\nip = \"10.1.2.3\"\n"
            "uid = 1000\nexe = \"/usr/bin/ssh\"\n");
}

TEST(OpenSnitchImportTest, IpAndNetworkInOneRuleFoldIntoTheAddressesInside) {
  std::string list = R"({"type":"list","operand":"list","list":[)" +
                     Op("regexp", "dest.ip", "^(10.0.0.1|192.0.2.1)$") + "," +
                     Op("network", "dest.network", "10.0.0.0/8") + "]}";
  std::string t = OnlyToml(Import({Rule("x", list)}));
  EXPECT_THAT(t, HasSubstr("ip = \"10.0.0.1\"\n"));
  EXPECT_THAT(t, ::testing::Not(HasSubstr("cidr")));
}

TEST(OpenSnitchImportTest, ARuleWithOneUnconvertibleConditionIsNotConvertedAtAll) {
  std::string list = R"({"type":"list","operand":"list","list":[)" +
                     Op("simple", "process.path", "/usr/bin/python3") + "," +
                     Op("simple", "process.command", "python3 -m http.server") + "," +
                     Op("regexp", "process.path", "^/usr/bin/python[0-9.]*$") + "]}";
  auto r = Import({Rule("py", list, "allow")});
  EXPECT_TRUE(r.rules.empty()) << "an allow without one of its conditions would allow more";
  ASSERT_EQ(r.unconverted.size(), 2u);
  EXPECT_THAT(r.unconverted[0].what, HasSubstr("process.command"));
  EXPECT_THAT(r.unconverted[1].what, HasSubstr("process.path regexp"));
  EXPECT_THAT(r.unconverted[1].why, HasSubstr("not a list of literal alternatives"));
  EXPECT_FALSE(r.complete());
}

TEST(OpenSnitchImportTest, ListsOperatorIsReportedWithABlocklistHint) {
  auto r =
      Import({Rule("bl", R"({"type":"lists","operand":"lists.domains","data":"/etc/os/bl"})")});
  EXPECT_TRUE(r.rules.empty());
  ASSERT_EQ(r.unconverted.size(), 1u);
  EXPECT_THAT(r.unconverted[0].hint, HasSubstr("[blocklists]"));
  EXPECT_THAT(r.unconverted[0].hint, HasSubstr("/etc/os/bl/*"));
}

TEST(OpenSnitchImportTest, DisabledRulesAreListedNotConverted) {
  std::string off = R"({"name":"off","enabled":false,"action":"deny","duration":"always",)"
                    R"("operator":)" +
                    Op("simple", "dest.port", "23") + "}";
  auto r = Import({off});
  EXPECT_TRUE(r.rules.empty());
  ASSERT_EQ(r.unconverted.size(), 1u);
  EXPECT_EQ(r.unconverted[0].rule, "off");
  EXPECT_THAT(r.unconverted[0].why, HasSubstr("disabled"));
}

TEST(OpenSnitchImportTest, DurationsMapToOnceAndExpires) {
  auto once = Import({R"({"name":"o","action":"deny","duration":"once","operator":)" +
                      Op("simple", "dest.port", "25") + "}"});
  EXPECT_THAT(OnlyToml(once), HasSubstr("once = true\n"));
  // 30m after "created", which is 10 minutes ago.
  auto later = Import({R"({"name":"t","action":"deny","duration":"30m",)"
                       R"("created":"2024-05-01T13:50:00.5+02:00","operator":)" +
                       Op("simple", "dest.port", "25") + "}"});
  EXPECT_THAT(OnlyToml(later), HasSubstr("expires = 2024-05-01T12:20:00Z\n"));
  // Without "created": from the import, with a note.
  auto now = Import({R"({"name":"t","action":"deny","duration":"1h","operator":)" +
                     Op("simple", "dest.port", "25") + "}"});
  EXPECT_THAT(OnlyToml(now), HasSubstr("expires = 2024-05-01T13:00:00Z\n"));
  ASSERT_EQ(now.rules[0].notes.size(), 1u);
  // Already expired, until restart, nonsense: reported.
  for (const char* d :
       {R"("12h","created":"2024-04-01T00:00:00Z")", R"("until restart")", R"("fortnight")"}) {
    auto r = Import({std::string(R"({"name":"t","action":"deny","duration":)") + d +
                     R"(,"operator":)" + Op("simple", "dest.port", "25") + "}"});
    EXPECT_TRUE(r.rules.empty()) << d;
    ASSERT_EQ(r.unconverted.size(), 1u) << d;
    EXPECT_THAT(r.unconverted[0].what, HasSubstr("duration")) << d;
  }
}

TEST(OpenSnitchImportTest, NamesAreSanitisedPrefixedAndUnique) {
  auto r = Import({Rule("allow curl!", Op("simple", "dest.port", "1")),
                   Rule("allow curl?", Op("simple", "dest.port", "2"))},
                  "os-");
  ASSERT_EQ(r.rules.size(), 2u);
  EXPECT_EQ(r.rules[0].name, "os-allow-curl-");
  EXPECT_EQ(r.rules[1].name, "os-allow-curl--2");
  EXPECT_THAT(r.rules[0].notes.back(), HasSubstr("renamed"));
  // The whole rendered file loads: names unique, every rule valid.
  EXPECT_TRUE(analysis::ParseRuleFile(RenderRuleFile(r), "all"));
}

TEST(OpenSnitchImportTest, OrderIsAlphabeticalAndPrecedenceAllowGetsPriorities) {
  // Without a precedence allow: priority 0 everywhere, sorted by name.
  auto plain = Import({Rule("b", Op("simple", "dest.port", "2")),
                       Rule("a", Op("simple", "dest.port", "1"), "allow")});
  ASSERT_EQ(plain.rules.size(), 2u);
  EXPECT_EQ(plain.rules[0].name, "a");
  EXPECT_THAT(plain.rules[1].toml, ::testing::Not(HasSubstr("priority")));
  // "000-allow" (precedence) must beat "001-deny": priorities keep the alphabetical order of the
  // rules that decide at once; a plain allow stays at 0.
  auto prec =
      Import({Rule("001-deny", Op("simple", "dest.port", "22")),
              Rule("000-allow", Op("simple", "dest.port", "22"), "allow", R"("precedence":true,)"),
              Rule("002-allow", Op("simple", "dest.port", "80"), "allow")});
  // Rule() already sets precedence:false before `extra`; JSON keeps the last duplicate key.
  ASSERT_EQ(prec.rules.size(), 3u);
  EXPECT_THAT(prec.rules[0].toml,
              HasSubstr("name = \"000-allow\"\naction = \"allow\"\npriority = 2"));
  EXPECT_THAT(prec.rules[1].toml,
              HasSubstr("name = \"001-deny\"\naction = \"deny\"\npriority = 1"));
  EXPECT_THAT(prec.rules[2].toml, ::testing::Not(HasSubstr("priority")));
}

TEST(OpenSnitchImportTest, BrokenFilesAndOddOperatorsAreReported) {
  auto r = Import(
      {"{not json",
       R"([{"name":"ok","action":"deny","operator":)" + Op("simple", "dest.port", "1") +
           R"(}, 42, {"name":""}])",
       Rule("weird", Op("simple", "iface.out", "eth0")),
       Rule("act", Op("simple", "dest.port", "1"), "log"),
       Rule("port", Op("simple", "dest.port", "http")),
       Rule("glob", Op("simple", "process.path", "/usr/bin/*")),
       Rule(
           "deep",
           R"({"type":"list","operand":"list","list":[{"type":"list","list":[{"type":"list","list":[{"type":"list","list":[{"type":"list","list":[{"type":"simple","operand":"dest.port","data":"1"}]}]}]}]}]})")});
  ASSERT_EQ(r.rules.size(), 1u);
  EXPECT_EQ(r.rules[0].name, "ok");
  EXPECT_EQ(r.rules_seen, 8u);  // the broken file holds none
  std::vector<std::string> whats;
  for (const auto& u : r.unconverted) whats.push_back(u.rule + ": " + u.what);
  EXPECT_THAT(
      whats, ElementsAre(": the file", ": entry 1", ": entry 2", "act: action \"log\"",
                         "deep: operator list", "glob: operator process.path simple \"/usr/bin/*\"",
                         "port: operator dest.port simple \"http\"",
                         "weird: operator iface.out simple \"eth0\""));
}

TEST(OpenSnitchImportTest, FieldsOfTheWrongTypeAreReportedNotThrown) {
  // Found by the fuzzer: "type": [...] made json::value() throw.
  auto r = Import({R"({"name":"t","action":["deny"],"duration":7,"operator":{"type":[1]}})",
                   R"({"name":"u","action":"deny","operator":{"type":"simple","operand":{},)"
                   R"("data":"1"}})"});
  EXPECT_TRUE(r.rules.empty());
  ASSERT_EQ(r.unconverted.size(), 2u);
  EXPECT_EQ(r.unconverted[0].what, "action \"<array>\"");
  EXPECT_THAT(r.unconverted[1].why, HasSubstr("<object>"));
}

TEST(LiteralAlternativesTest, AcceptsOnlyAnchoredLiteralLists) {
  EXPECT_THAT(*LiteralAlternatives("^(53|80|443)$", false), ElementsAre("53", "80", "443"));
  EXPECT_THAT(*LiteralAlternatives("^(?:/a\\.b|/c)$", false), ElementsAre("/a.b", "/c"));
  EXPECT_THAT(*LiteralAlternatives("^/usr/bin/curl$", false), ElementsAre("/usr/bin/curl"));
  EXPECT_THAT(*LiteralAlternatives("^1.2.3.4$", true), ElementsAre("1.2.3.4"));
  for (const char* re : {"53|80", "^53|80", "^(53|80)", "^555[12345]$", "^a.b$", "^\\d+$",
                         "^(a||b)$", "^$", "^(a)(b)$", "^a|b$"}) {
    EXPECT_FALSE(LiteralAlternatives(re, false)) << re;
  }
}

}  // namespace
}  // namespace tollgate::cli::opensnitch
