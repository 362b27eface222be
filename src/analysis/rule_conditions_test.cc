// The fact conditions of rules (host, list, user/uid, exe, unit, app_protocol), lifetimes
// (expires, once), on_unknown and the inspect decision, against a FlowFacts fake that says exactly
// what is known. The tuple conditions and precedence are in rule_table_test.cc.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "analysis/blocklist.h"
#include "analysis/facts_for_tests.h"
#include "analysis/rule_table.h"

namespace tollgate::analysis {
namespace {

using testing::App;
using testing::Proc;

using namespace std::chrono_literals;

class FakeFacts final : public FlowFacts {
 public:
  FlowQuestion q;
  WallTime now = std::chrono::sys_days{std::chrono::year{2026} / 12 / 1};
  std::vector<KnownName> known;
  bool can_inspect = false;
  std::optional<AppClassification> classified;
  ProcessLookup lookup{Attribution::kNotFound, {}, "no socket"};
  int name_asks = 0;
  int process_asks = 0;

  FakeFacts() {
    q.id = 7;
    q.direction = Direction::kOutbound;
    q.tuple.protocol = ipproto::kTcp;
    q.tuple.src = *IpAddress::Parse("192.0.2.1");
    q.tuple.dst = *IpAddress::Parse("198.51.100.7");
    q.tuple.src_port = 40000;
    q.tuple.dst_port = 443;
  }
  const FlowQuestion& question() const override { return q; }
  WallTime wall_now() const override { return now; }
  std::span<const KnownName> names() override {
    ++name_asks;
    return known;
  }
  bool inspectable() const override { return can_inspect; }
  const AppClassification* app() override { return classified ? &*classified : nullptr; }
  const ProcessLookup& process() override {
    ++process_asks;
    return lookup;
  }
};

class FakeClassifier final : public AppClassifier {
 public:
  Expected<AppClassification> Classify(const FlowTuple&, std::span<const uint8_t>) override {
    return AppClassification{};
  }
  bool KnowsProtocol(std::string_view name) const override {
    return name == "TLS" || name == "HTTP" || name == "BitTorrent" || name == "tls";
  }
  std::string Suggest(std::string_view name) const override {
    return name == "Bittorent" ? "BitTorrent" : "";
  }
};

struct Loaded {
  std::map<std::string, std::shared_ptr<const Blocklist>> lists;
  FakeClassifier classifier;
  std::shared_ptr<const RuleTable> table;
};

std::unique_ptr<Loaded> Load(const std::string& text, Action default_action = Action::kAllow) {
  auto loaded = std::make_unique<Loaded>();
  auto ads = Blocklist::Parse("0.0.0.0 doubleclick.net\ntracker.example\n", "ads", "ads.txt");
  EXPECT_TRUE(ads) << ads.error().message;
  if (ads) loaded->lists["ads"] = *ads;
  RuleLoadContext context;
  context.blocklists = &loaded->lists;
  context.classifier = &loaded->classifier;
  context.lookup_user = [](const std::string& name) -> std::optional<uint32_t> {
    if (name == "alice") return 1000;
    if (name == "bob") return 1001;
    return std::nullopt;
  };
  auto rules = ParseRuleFile(text, "r.toml", context);
  EXPECT_TRUE(rules) << rules.error().message;
  if (rules) {
    auto table = RuleTable::Build(std::move(*rules), default_action);
    EXPECT_TRUE(table) << table.error().message;
    if (table) loaded->table = *table;
  }
  if (!loaded->table) loaded->table = RuleTable::Empty(default_action);
  return loaded;
}

std::string Rule1(const std::string& body, const std::string& action = "deny") {
  return "[[rule]]\nname = \"r\"\naction = \"" + action + "\"\n" + body;
}

KnownName Dns(std::string name) { return {std::move(name), NameSource::kDns}; }

// --- host ---

TEST(HostConditionTest, ExactSuffixAndRegex) {
  auto l = Load(Rule1("host = [\"example.com\", \"*.ads.test\", \"/track[0-9]+\\\\.net/\"]\n"));
  auto verdict_for = [&](std::string name) {
    FakeFacts f;
    f.known = {Dns(std::move(name))};
    return l->table->Decide(f).verdict;
  };
  EXPECT_EQ(verdict_for("example.com").action, Action::kDeny);
  EXPECT_EQ(verdict_for("www.example.com").action, Action::kAllow) << "exact means exact";
  EXPECT_EQ(verdict_for("x.ads.test").action, Action::kDeny);
  EXPECT_EQ(verdict_for("a.b.ads.test").action, Action::kDeny);
  EXPECT_EQ(verdict_for("ads.test").action, Action::kAllow) << "*.x is below x, not x";
  EXPECT_EQ(verdict_for("badads.test").action, Action::kAllow) << "label boundary";
  EXPECT_EQ(verdict_for("track42.net").action, Action::kDeny);
  EXPECT_EQ(verdict_for("xtrack42.net").action, Action::kAllow) << "regex matches the whole name";
  EXPECT_EQ(verdict_for("track.net").action, Action::kAllow);
}

TEST(HostConditionTest, PatternsAreCaseInsensitiveAndLoseTheTrailingDot) {
  auto l = Load(Rule1("host = [\"WWW.Example.COM.\", \"/SHOP\\\\.test/\"]\n"));
  FakeFacts f;
  f.known = {Dns("www.example.com")};
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kDeny);
  f.known = {Dns("shop.test")};
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kDeny);
  EXPECT_EQ(l->table->description(0), "host www.example.com,/SHOP\\.test/");
}

TEST(HostConditionTest, AnyKnownNameCanMatchAndTheReasonSaysWhichAndHow) {
  auto l = Load(Rule1("protocol = \"tcp\"\nhost = \"*.doubleclick.net\"\n"));
  FakeFacts f;
  f.known = {Dns("cdn.example"), {"ad.doubleclick.net", NameSource::kSni}};
  Verdict v = l->table->Decide(f).verdict;
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.reason, "deny: rule \"r\" (tcp host *.doubleclick.net via SNI: ad.doubleclick.net)");
  auto exact = Load(Rule1("host = \"ads.test\"\n"));
  f.known = {{"ads.test", NameSource::kHttpHost}};
  EXPECT_EQ(exact->table->Decide(f).verdict.reason, "deny: rule \"r\" (host ads.test via Host)");
}

TEST(HostConditionTest, NoNameKnownAsksForInspectionWhenThatCanHelp) {
  auto l = Load(Rule1("host = \"ads.test\"\n"));
  FakeFacts f;
  f.can_inspect = true;
  Decision d = l->table->Decide(f);
  EXPECT_EQ(d.verdict.action, Action::kInspect);
  EXPECT_EQ(d.verdict.inspect_bytes, 1u);
  EXPECT_EQ(d.verdict.reason, "inspect: rule \"r\" (host ads.test) needs the host name");
  ASSERT_NE(d.rule, nullptr);
  EXPECT_EQ(d.rule->name, "r");
}

TEST(HostConditionTest, NoNameAndNoInspectionSkipsTheRuleWithoutOnUnknown) {
  auto l = Load(Rule1("host = \"ads.test\"\n"), Action::kReject);
  FakeFacts f;
  Verdict v = l->table->Decide(f).verdict;
  EXPECT_EQ(v.action, Action::kReject);
  EXPECT_EQ(v.reason, "default: no rule matched");
}

TEST(HostConditionTest, OnUnknownDecidesWhenTheNameCannotBeLearnt) {
  auto l = Load(Rule1("host = \"ads.test\"\non_unknown = \"reject\"\n", "allow"));
  FakeFacts f;
  Verdict v = l->table->Decide(f).verdict;
  EXPECT_EQ(v.action, Action::kReject);
  EXPECT_EQ(v.reason, "reject: rule \"r\" (host ads.test: no name known, on_unknown)");
  f.known = {Dns("other.test")};
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow)
      << "a known name that does not match is a no, not an unknown";
}

TEST(HostConditionTest, TupleConditionsAreCheckedBeforeAnyNameIsAskedFor) {
  auto l = Load(Rule1("port = 80\nhost = \"ads.test\"\n"));
  FakeFacts f;  // port 443
  f.can_inspect = true;
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow) << "port 443: no inspection";
}

// --- list ---

TEST(ListConditionTest, MatchesListedNamesAndTheirSubdomains) {
  auto l = Load(Rule1("list = \"ads\"\n"));
  FakeFacts f;
  f.known = {Dns("x.y.doubleclick.net")};
  Verdict v = l->table->Decide(f).verdict;
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.reason,
            "deny: rule \"r\" (list ads via DNS: x.y.doubleclick.net (listed: doubleclick.net))");
  f.known = {Dns("tracker.example")};
  EXPECT_EQ(l->table->Decide(f).verdict.reason,
            "deny: rule \"r\" (list ads via DNS: tracker.example)");
  f.known = {Dns("notdoubleclick.net")};
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow);
}

TEST(ListConditionTest, HostAndListMustBothHold) {
  auto l = Load(Rule1("host = \"*.doubleclick.net\"\nlist = \"ads\"\n"));
  FakeFacts f;
  f.known = {Dns("a.doubleclick.net")};
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kDeny);
  f.known = {Dns("doubleclick.net")};  // listed, but not below the host pattern
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow);
}

TEST(ListConditionTest, UnknownListNamesTheConfiguredOnes) {
  std::map<std::string, std::shared_ptr<const Blocklist>> lists;
  lists["ads"] = *Blocklist::Parse("a.test\n", "ads", "ads.txt");
  lists["malware"] = *Blocklist::Parse("m.test\n", "malware", "m.txt");
  RuleLoadContext context;
  context.blocklists = &lists;
  auto rules = ParseRuleFile(Rule1("list = \"adz\"\n"), "r.toml", context);
  ASSERT_FALSE(rules);
  EXPECT_EQ(rules.error().message,
            "r.toml:4:8: rule \"r\": no blocklist named \"adz\"; configured: ads, malware");
}

// --- user, uid, exe, unit ---

TEST(ProcessConditionTest, UidFromTheKernelNeedsNoProcessLookup) {
  auto l = Load(Rule1("user = \"alice\"\n"));
  FakeFacts f;
  f.q.uid = 1000;
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kDeny);
  f.q.uid = 1001;
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow);
  EXPECT_EQ(f.process_asks, 0);
  EXPECT_EQ(l->table->description(0), "uid 1000");
}

TEST(ProcessConditionTest, UidFallsBackToTheProcessWhenTheKernelDidNotSay) {
  auto l = Load(Rule1("uid = [0, 1001]\n"));
  FakeFacts f;
  f.lookup = {Attribution::kFound, Proc(5, 1001, ""), ""};
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kDeny);
  EXPECT_EQ(f.process_asks, 1);
  f.lookup.process.uid = 1000;
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow);
}

TEST(ProcessConditionTest, ExeAndUnitGlobs) {
  auto l = Load(Rule1("exe = [\"/usr/bin/curl\", \"/opt/*/bin/*\"]\nunit = \"app-*.scope\"\n"));
  FakeFacts f;
  f.lookup = {Attribution::kFound, Proc(5, 0, "/usr/bin/curl"), ""};
  f.lookup.process.unit = "app-firefox-123.scope";
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kDeny);
  f.lookup.process.exe = "/opt/acme/bin/agent";
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kDeny);
  f.lookup.process.exe = "/usr/bin/wget";
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow);
  f.lookup.process.exe = "/usr/bin/curl";
  f.lookup.process.unit = "sshd.service";
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow);
}

TEST(ProcessConditionTest, AGoneProcessIsUnknownNeverAGuess) {
  auto strict = Load(Rule1("exe = \"/usr/bin/curl\"\n", "allow"), Action::kDeny);
  FakeFacts f;
  f.lookup = {Attribution::kGone, {}, "exited"};
  Verdict v = strict->table->Decide(f).verdict;
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.reason, "default: no rule matched");
  auto with_fallback =
      Load(Rule1("exe = \"/usr/bin/curl\"\non_unknown = \"reject\"\n", "allow"), Action::kDeny);
  v = with_fallback->table->Decide(f).verdict;
  EXPECT_EQ(v.action, Action::kReject);
  EXPECT_EQ(v.reason, "reject: rule \"r\" (exe /usr/bin/curl: process gone, on_unknown)");
}

TEST(ProcessConditionTest, NoProcessLookupWhenACheaperConditionSaysNo) {
  auto l = Load(Rule1("port = 22\nexe = \"/usr/bin/ssh\"\n"));
  FakeFacts f;
  (void)l->table->Decide(f);
  EXPECT_EQ(f.process_asks, 0);
}

// --- app_protocol ---

TEST(AppProtocolConditionTest, MatchesProtocolOrMasterCaseInsensitively) {
  auto l = Load(Rule1("app_protocol = \"tls\"\n"));
  FakeFacts f;
  f.classified = App("Google", "TLS");
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kDeny);
  f.classified = App("HTTP");
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow);
}

TEST(AppProtocolConditionTest, NoPayloadAsksForInspectionAGuessIsUnknown) {
  auto l = Load(Rule1("app_protocol = \"BitTorrent\"\non_unknown = \"deny\"\n", "reject"));
  FakeFacts f;
  f.can_inspect = true;
  Verdict v = l->table->Decide(f).verdict;
  EXPECT_EQ(v.action, Action::kInspect);
  EXPECT_EQ(v.reason, "inspect: rule \"r\" (app_protocol BitTorrent) needs the protocol");
  f.can_inspect = false;
  f.classified = App("BitTorrent", "", true);
  v = l->table->Decide(f).verdict;
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.reason,
            "deny: rule \"r\" (app_protocol BitTorrent: protocol only guessed, on_unknown)");
  f.classified = App("Unknown");
  EXPECT_EQ(l->table->Decide(f).verdict.reason,
            "deny: rule \"r\" (app_protocol BitTorrent: protocol not recognised, on_unknown)");
}

TEST(AppProtocolConditionTest, MisspeltNameGetsASuggestion) {
  FakeClassifier classifier;
  RuleLoadContext context;
  context.classifier = &classifier;
  auto rules = ParseRuleFile(Rule1("app_protocol = \"Bittorent\"\n"), "r.toml", context);
  ASSERT_FALSE(rules);
  EXPECT_EQ(rules.error().message,
            "r.toml:4:16: rule \"r\": unknown app_protocol \"Bittorent\"; did you mean "
            "\"BitTorrent\"?");
}

TEST(AppProtocolConditionTest, UnknownIsRefusedBecauseItCouldNeverMatch) {
  FakeClassifier classifier;
  RuleLoadContext context;
  context.classifier = &classifier;
  auto rules = ParseRuleFile(Rule1("app_protocol = \"unknown\"\n"), "r.toml", context);
  ASSERT_FALSE(rules);
  EXPECT_EQ(rules.error().message,
            "r.toml:4:16: rule \"r\": app_protocol \"Unknown\" never matches: a flow the "
            "classifier cannot name is decided by on_unknown");
}

// --- lifetime ---

TEST(LifetimeTest, AnExpiredRuleNoLongerMatches) {
  auto l = Load(Rule1("expires = 2026-12-01T10:00:00+01:00\n"));
  FakeFacts f;
  f.now = std::chrono::sys_days{std::chrono::year{2026} / 12 / 1} + 8h + 59min + 59s;
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kDeny);
  f.now += 1s;  // 09:00Z = 10:00+01:00
  EXPECT_EQ(l->table->Decide(f).verdict.action, Action::kAllow);
}

TEST(LifetimeTest, AOnceRuleDecidesExactlyOneFlowEvenUnderConcurrency) {
  auto l = Load(Rule1("once = true\nport = 443\n"));
  constexpr int kThreads = 4;
  constexpr int kEach = 500;
  std::atomic<int> denied{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        FakeFacts f;
        if (l->table->Decide(f).verdict.action == Action::kDeny) denied.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(denied.load(), 1);
  EXPECT_TRUE(l->table->used_up(0));
}

// --- the index ---

// Rules filed under names and addresses must keep their place in the evaluation order with the
// rules that are tried for every flow.
TEST(RuleIndexTest, IndexedAndUnindexedRulesKeepTheirOrder) {
  auto l = Load(R"(
[[rule]]
name = "https-allow"
action = "allow"
priority = 5
port = 443
[[rule]]
name = "ads"
action = "deny"
priority = 10
host = "*.ads.test"
[[rule]]
name = "one-ip"
action = "reject"
priority = 7
ip = "198.51.100.7"
[[rule]]
name = "exact"
action = "deny"
priority = 1
host = "exact.test"
)");
  auto winner = [&](std::vector<KnownName> names) {
    FakeFacts f;
    f.known = std::move(names);
    Decision d = l->table->Decide(f);
    return d.rule != nullptr ? d.rule->name : std::string("default");
  };
  EXPECT_EQ(winner({Dns("x.ads.test")}), "ads");
  EXPECT_EQ(winner({Dns("exact.test")}), "one-ip") << "priority 7 beats 5 and 1";
  EXPECT_EQ(winner({}), "one-ip");
  FakeFacts other;
  other.q.tuple.dst = *IpAddress::Parse("198.51.100.8");
  other.known = {Dns("exact.test")};
  Decision d = l->table->Decide(other);
  ASSERT_NE(d.rule, nullptr);
  EXPECT_EQ(d.rule->name, "https-allow");
  other.q.tuple.dst_port = 80;
  d = l->table->Decide(other);
  ASSERT_NE(d.rule, nullptr);
  EXPECT_EQ(d.rule->name, "exact");
}

// A brute-force check of the index: every flow gets the rule a plain scan in evaluation order
// would pick.
TEST(RuleIndexTest, AgreesWithALinearScan) {
  std::string text;
  const char* hosts[] = {"a.test", "*.a.test", "b.test", "*.test", "/c[0-9]\\\\.test/"};
  const char* ips[] = {"198.51.100.1",  "198.51.100.2", "198.51.100.0/24",
                       "198.51.0.0/16", "0.0.0.0/0",    "2001:db8::/32"};
  for (int i = 0; i < 90; ++i) {
    text += "[[rule]]\nname = \"r" + std::to_string(i) + "\"\naction = \"" +
            (i % 3 == 0 ? "allow" : "deny") + "\"\npriority = " + std::to_string((i * 7) % 11) +
            "\n";
    // Every rule has a condition, so no catch-all hides the others.
    switch (i % 4) {
      case 0:
        text += std::string("host = \"") + hosts[(i / 4) % 5] + "\"\n";
        break;
      case 1:
        text += std::string("cidr = \"") + ips[(i / 4) % 6] + "\"\n";
        break;
      case 2:
        text += "port = " + std::to_string(440 + i % 7) + "\n";
        break;
      default:
        text += "cidr = [\"198.51.100.2\", \"203.0.113.0/25\"]\n";
    }
    if (i % 5 == 2 && i % 4 != 2) text += "port = [" + std::to_string(438 + i % 11) + ", 443]\n";
  }
  auto l = Load(text);
  const std::vector<std::vector<KnownName>> name_sets = {{},
                                                         {Dns("a.test")},
                                                         {Dns("x.a.test")},
                                                         {Dns("b.test")},
                                                         {Dns("c7.test")},
                                                         {Dns("zzz.test")},
                                                         {Dns("other.example")},
                                                         {Dns("b.test"), Dns("x.a.test")}};
  for (const auto& names : name_sets) {
    for (const char* dst : {"198.51.100.1", "198.51.100.2", "198.51.100.9", "198.51.7.7",
                            "203.0.113.1", "203.0.113.200", "2001:db8::5", "2001:db9::5"}) {
      for (uint16_t port = 438; port <= 448; ++port) {
        FakeFacts f;
        f.known = names;
        f.q.tuple.dst = *IpAddress::Parse(dst);
        f.q.tuple.dst_port = port;
        Decision d = l->table->Decide(f);
        // The plain scan: the first rule in evaluation order that matches.
        const Rule* expected = nullptr;
        for (const Rule& rule : l->table->rules()) {
          if (!rule.MatchesTuple(f.q)) continue;
          bool host_ok = rule.hosts.empty();
          for (const auto& n : names) {
            for (const auto& h : rule.hosts) host_ok = host_ok || h.Matches(n.name);
          }
          if (host_ok) {
            expected = &rule;
            break;
          }
        }
        EXPECT_EQ(d.rule, expected)
            << "dst " << dst << " port " << port << " names " << names.size();
      }
    }
  }
}

}  // namespace
}  // namespace tollgate::analysis
