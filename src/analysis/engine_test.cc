// The engine end to end without the OS: DNS replies in, questions in, verdicts out; the process
// source and classifier are fakes, names and payloads are real bytes through the real parsers.
#include "analysis/engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

#include "analysis/facts_for_tests.h"
#include "analysis/wire_for_tests.h"

namespace tollgate::analysis {
namespace {

using testing::App;
using testing::Proc;

using testing::AnswerSpec;
using testing::ClientHelloBytes;
using testing::DnsReplyBytes;
using namespace std::chrono_literals;

class FakeProcesses final : public ProcessSource {
 public:
  ProcessLookup answer{Attribution::kFound, Proc(42, 1000, "/usr/bin/curl"), ""};
  int calls = 0;
  ProcessLookup Find(const FlowQuestion&) override {
    ++calls;
    return answer;
  }
};

class FakeClassifier final : public AppClassifier {
 public:
  int calls = 0;
  Expected<AppClassification> Classify(const FlowTuple&, std::span<const uint8_t> bytes) override {
    ++calls;
    if (!bytes.empty() && bytes[0] == 22) return App("TLS");
    return App("Unknown");
  }
  bool KnowsProtocol(std::string_view name) const override { return name == "TLS"; }
  std::string Suggest(std::string_view) const override { return ""; }
};

std::shared_ptr<const RuleTable> Rules(const std::string& text, AppClassifier* classifier = nullptr,
                                       Action default_action = Action::kAllow) {
  RuleLoadContext context;
  context.classifier = classifier;
  auto rules = ParseRuleFile(text, "r.toml", context);
  EXPECT_TRUE(rules) << rules.error().message;
  if (!rules) return RuleTable::Empty(default_action);
  auto table = RuleTable::Build(std::move(*rules), default_action);
  EXPECT_TRUE(table) << table.error().message;
  return table ? *table : RuleTable::Empty(default_action);
}

FlowQuestion Tcp(std::string_view dst, uint16_t port, uint64_t id = 1) {
  FlowQuestion q;
  q.id = id;
  q.tuple.protocol = ipproto::kTcp;
  q.tuple.src = *IpAddress::Parse(IpAddress::Parse(dst)->family == 4 ? "192.0.2.1" : "2001:db8::1");
  q.tuple.dst = *IpAddress::Parse(dst);
  q.tuple.src_port = 50000;
  q.tuple.dst_port = port;
  return q;
}

void Observe(Engine& engine, const std::vector<uint8_t>& reply) {
  engine.ObserveDns(reply.data(), reply.size());
}

constexpr char kAdsRule[] = R"(
[[rule]]
name = "ads"
action = "deny"
host = "*.doubleclick.net"
)";

TEST(EngineTest, DnsThenConnectIsDecidedByTheResolvedName) {
  FakeClock clock;
  Engine engine(Rules(kAdsRule), nullptr, nullptr, clock);
  Observe(engine, DnsReplyBytes("ad.doubleclick.net", {{"ad.doubleclick.net", "198.51.100.7"}}));
  Verdict v = engine.Decide(Tcp("198.51.100.7", 443, 9));
  EXPECT_EQ(v.id, 9u);
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.reason, "deny: rule \"ads\" (host *.doubleclick.net via DNS: ad.doubleclick.net)");
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.8", 443)).action, Action::kInspect)
      << "another address, no name known: inspect";
  EXPECT_EQ(engine.counters().dns_replies.load(), 1u);
}

TEST(EngineTest, CnameChainNamesEveryHop) {
  FakeClock clock;
  Engine engine(Rules(kAdsRule), nullptr, nullptr, clock);
  Observe(engine, DnsReplyBytes("www.news.example",
                                {{"www.news.example", "ads.g.doubleclick.net", 300, true},
                                 {"ads.g.doubleclick.net", "2001:db8::7"}}));
  Verdict v = engine.Decide(Tcp("2001:db8::7", 443));
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.reason, "deny: rule \"ads\" (host *.doubleclick.net via DNS: ads.g.doubleclick.net)");
}

TEST(EngineTest, NamesExpireWithTheirTtl) {
  FakeClock clock;
  Engine engine(Rules(kAdsRule), nullptr, nullptr, clock);
  Observe(engine, DnsReplyBytes("x.doubleclick.net", {{"x.doubleclick.net", "198.51.100.7", 60}}));
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.7", 443)).action, Action::kDeny);
  clock.Advance(61s);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.7", 443)).action, Action::kInspect);
}

TEST(EngineTest, MalformedDnsIsCountedAndIgnored) {
  FakeClock clock;
  Engine engine(Rules(kAdsRule), nullptr, nullptr, clock);
  const uint8_t junk[] = {1, 2, 3};
  engine.ObserveDns(junk, sizeof junk);
  EXPECT_EQ(engine.counters().dns_malformed.load(), 1u);
  EXPECT_EQ(engine.known_names(), 0u);
}

TEST(EngineTest, SniOnlyFlowIsInspectedThenDecidedBySni) {
  FakeClock clock;
  Engine engine(Rules(kAdsRule), nullptr, nullptr, clock);
  FlowQuestion q = Tcp("198.51.100.9", 443, 1);
  Verdict first = engine.Decide(q);
  EXPECT_EQ(first.action, Action::kInspect);
  EXPECT_EQ(first.inspect_bytes, 1u);
  q.id = 2;
  q.payload = ClientHelloBytes("stats.doubleclick.net");
  Verdict second = engine.Decide(q);
  EXPECT_EQ(second.action, Action::kDeny);
  EXPECT_EQ(second.reason,
            "deny: rule \"ads\" (host *.doubleclick.net via SNI: stats.doubleclick.net)");
  q.payload = ClientHelloBytes("www.example.org");
  EXPECT_EQ(engine.Decide(q).action, Action::kAllow);
  EXPECT_EQ(engine.counters().names_from_sni.load(), 2u);
  EXPECT_EQ(engine.counters().inspect_verdicts.load(), 1u);
}

TEST(EngineTest, HttpHostOnlyFlow) {
  FakeClock clock;
  Engine engine(Rules(kAdsRule), nullptr, nullptr, clock);
  FlowQuestion q = Tcp("198.51.100.9", 80);
  std::string request = "GET / HTTP/1.1\r\nHost: pixel.doubleclick.net\r\n\r\n";
  q.payload.assign(request.begin(), request.end());
  Verdict v = engine.Decide(q);
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.reason,
            "deny: rule \"ads\" (host *.doubleclick.net via Host: pixel.doubleclick.net)");
}

TEST(EngineTest, ATruncatedClientHelloAsksForTheRestOnce) {
  FakeClock clock;
  Engine engine(Rules(kAdsRule), nullptr, nullptr, clock);
  FlowQuestion q = Tcp("198.51.100.9", 443);
  std::vector<uint8_t> hello = ClientHelloBytes("a.doubleclick.net");
  q.payload.assign(hello.begin(), hello.begin() + 20);
  Verdict v = engine.Decide(q);
  EXPECT_EQ(v.action, Action::kInspect);
  EXPECT_EQ(v.inspect_bytes, hello.size()) << "the record length says how much is coming";
  q.payload = hello;
  EXPECT_EQ(engine.Decide(q).action, Action::kDeny);
}

TEST(EngineTest, APayloadWithNoNameFallsToOnUnknown) {
  FakeClock clock;
  Engine engine(Rules(R"(
[[rule]]
name = "ads"
action = "deny"
host = "*.doubleclick.net"
on_unknown = "reject"
)"),
                nullptr, nullptr, clock);
  FlowQuestion q = Tcp("198.51.100.9", 443);
  q.payload = ClientHelloBytes("");  // no SNI
  Verdict v = engine.Decide(q);
  EXPECT_EQ(v.action, Action::kReject);
  EXPECT_EQ(v.reason, "reject: rule \"ads\" (host *.doubleclick.net: no name known, on_unknown)");
  q.payload = {'S', 'S', 'H', '-', '2', '.', '0', '-', 'x', '\r', '\n'};
  EXPECT_EQ(engine.Decide(q).action, Action::kReject);
  EXPECT_EQ(engine.counters().payload_unreadable.load(), 2u);
}

TEST(EngineTest, HostLiteralInHttpIsNotAName) {
  FakeClock clock;
  Engine engine(Rules("[[rule]]\nname = \"n\"\naction = \"deny\"\nhost = \"/.*/\"\n"), nullptr,
                nullptr, clock);
  FlowQuestion q = Tcp("198.51.100.9", 80);
  std::string request = "GET / HTTP/1.1\r\nHost: 198.51.100.9\r\n\r\n";
  q.payload.assign(request.begin(), request.end());
  EXPECT_EQ(engine.Decide(q).action, Action::kAllow);
}

TEST(EngineTest, UdpAndInboundFlowsAreNeverInspected) {
  FakeClock clock;
  Engine engine(Rules(kAdsRule), nullptr, nullptr, clock);
  FlowQuestion udp = Tcp("198.51.100.9", 443);
  udp.tuple.protocol = ipproto::kUdp;
  EXPECT_EQ(engine.Decide(udp).action, Action::kAllow);
  FlowQuestion inbound = Tcp("198.51.100.9", 443);
  inbound.direction = Direction::kInbound;
  EXPECT_EQ(engine.Decide(inbound).action, Action::kAllow);
}

TEST(EngineTest, InspectionOffMeansUnknownAtOnce) {
  FakeClock clock;
  EngineOptions options;
  options.inspect_max_bytes = 0;
  Engine engine(Rules(kAdsRule), nullptr, nullptr, clock, options);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.9", 443)).action, Action::kAllow);
}

TEST(EngineTest, ProcessIsLookedUpOnlyWhenARuleNeedsIt) {
  FakeClock clock;
  FakeProcesses processes;
  Engine engine(Rules("[[rule]]\nname = \"curl\"\naction = \"reject\"\nexe = \"/usr/bin/curl\"\n"
                      "port = 443\n"),
                &processes, nullptr, clock);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.9", 80)).action, Action::kAllow);
  EXPECT_EQ(processes.calls, 0);
  Verdict v = engine.Decide(Tcp("198.51.100.9", 443));
  EXPECT_EQ(v.action, Action::kReject);
  EXPECT_EQ(v.reason, "reject: rule \"curl\" (port 443 exe /usr/bin/curl)");
  EXPECT_EQ(processes.calls, 1);
}

TEST(EngineTest, AppProtocolNeedsInspectionThenClassifies) {
  FakeClock clock;
  FakeClassifier classifier;
  Engine engine(
      Rules("[[rule]]\nname = \"tls\"\naction = \"deny\"\napp_protocol = \"TLS\"\n", &classifier),
      nullptr, &classifier, clock);
  FlowQuestion q = Tcp("198.51.100.9", 8443);
  EXPECT_EQ(engine.Decide(q).action, Action::kInspect);
  EXPECT_EQ(classifier.calls, 0);
  q.payload = ClientHelloBytes("x.test");
  EXPECT_EQ(engine.Decide(q).action, Action::kDeny);
  q.payload = {'G', 'E', 'T', ' '};
  EXPECT_EQ(engine.Decide(q).action, Action::kAllow);
  EXPECT_EQ(classifier.calls, 2);
}

TEST(EngineTest, OnceRulesStayUsedAcrossAReload) {
  FakeClock clock;
  const std::string text = "[[rule]]\nname = \"one\"\naction = \"deny\"\nonce = true\n";
  Engine engine(Rules(text), nullptr, nullptr, clock);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.9", 1)).action, Action::kDeny);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.9", 1)).action, Action::kAllow);
  engine.Replace(Rules(text));
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.9", 1)).action, Action::kAllow);
  EXPECT_EQ(engine.counters().once_rules_used.load(), 1u);
}

TEST(EngineTest, ExplainNeitherUsesUpOnceRulesNorTellsTheObserver) {
  FakeClock clock;
  Engine engine(Rules("[[rule]]\nname = \"one\"\naction = \"deny\"\nonce = true\n"), nullptr,
                nullptr, clock);
  std::vector<DecisionRecord> seen;
  engine.SetObserver([&](const DecisionRecord& r) { seen.push_back(r); });
  EXPECT_EQ(engine.Explain(Tcp("198.51.100.9", 1)).verdict.action, Action::kDeny);
  EXPECT_EQ(engine.Explain(Tcp("198.51.100.9", 1)).verdict.action, Action::kDeny);
  EXPECT_TRUE(seen.empty());
  EXPECT_EQ(engine.counters().questions.load(), 0u);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.9", 1)).action, Action::kDeny);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.9", 1)).action, Action::kAllow);
}

TEST(EngineTest, TheObserverSeesEveryDecisionWithItsRuleNamesAndNoPayload) {
  FakeClock clock;
  FakeProcesses processes;
  Engine engine(Rules(kAdsRule), &processes, nullptr, clock);
  std::vector<DecisionRecord> seen;
  engine.SetObserver([&](const DecisionRecord& r) { seen.push_back(r); });
  Observe(engine, DnsReplyBytes("ad.doubleclick.net", {{"ad.doubleclick.net", "198.51.100.7"}}));
  FlowQuestion q = Tcp("198.51.100.7", 443, 5);
  q.payload = ClientHelloBytes("ad.doubleclick.net");
  (void)engine.Decide(q);
  (void)engine.Decide(Tcp("198.51.100.8", 443, 6));
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].question.id, 5u);
  EXPECT_TRUE(seen[0].question.payload.empty());
  EXPECT_EQ(seen[0].rule, "ads");
  EXPECT_EQ(seen[0].verdict.action, Action::kDeny);
  ASSERT_EQ(seen[0].names.size(), 1u);
  EXPECT_EQ(seen[0].names[0].name, "ad.doubleclick.net");
  EXPECT_FALSE(seen[0].process.has_value()) << "no rule needed the process";
  EXPECT_EQ(processes.calls, 0);
  EXPECT_EQ(seen[1].verdict.action, Action::kInspect);
  EXPECT_EQ(seen[1].rule, "ads");
}

// Generation g's table: every rule and the default agree on one action (deny for even g, allow
// for odd g) and every rule name carries g, so a verdict proves which whole table decided it.
std::shared_ptr<const RuleTable> GenerationTable(int g) {
  const char* action = g % 2 == 0 ? "deny" : "allow";
  std::string text;
  for (int i = 0; i < 20; ++i) {
    text += "[[rule]]\nname = \"g" + std::to_string(g) + "-r" + std::to_string(i) +
            "\"\naction = \"" + action + "\"\nport = " + std::to_string(1000 + i) + "\n";
  }
  return Rules(text, nullptr, g % 2 == 0 ? Action::kDeny : Action::kAllow);
}

TEST(EngineTest, ReplaceIsAtomicUnderConcurrentDecisions) {
  FakeClock clock;
  Engine engine(GenerationTable(0), nullptr, nullptr, clock);
  constexpr int kGenerations = 300;
  std::atomic<bool> done{false};
  std::atomic<int> decisions{0};
  std::atomic<int> latest_seen{0};
  std::atomic<int> bad{0};
  int distinct_seen = 0;

  std::thread reader([&] {
    int last_generation = 0;
    int distinct = 1;
    uint16_t port = 1000;
    while (!done.load()) {
      // Ports 1000-1019 hit a rule; 1020 takes the table's default.
      const uint16_t asked = port;
      port = port == 1020 ? 1000 : port + 1;
      Verdict v = engine.Decide(Tcp("198.51.100.7", asked));
      decisions.fetch_add(1);
      if (asked == 1020) {
        if (v.reason != kDefaultReason) bad.fetch_add(1);
        continue;
      }
      // "deny: rule "g17-r3" (port 1003)" -> 17
      size_t start = v.reason.find("\"g");
      size_t dash = v.reason.find('-', start);
      if (start == std::string::npos || dash == std::string::npos) {
        bad.fetch_add(1);
        continue;
      }
      int generation = std::stoi(v.reason.substr(start + 2, dash - start - 2));
      Action expected = generation % 2 == 0 ? Action::kDeny : Action::kAllow;
      // The action, the rule and its port all come from one table of one generation...
      if (v.action != expected ||
          v.reason.find("-r" + std::to_string(asked - 1000) + "\"") == std::string::npos) {
        bad.fetch_add(1);
      }
      // ...and once a newer table has decided, an older one never decides again.
      if (generation < last_generation) bad.fetch_add(1);
      if (generation != last_generation) ++distinct;
      last_generation = generation;
      latest_seen.store(generation);
    }
    distinct_seen = distinct;
  });

  while (decisions.load() == 0) std::this_thread::yield();
  for (int g = 1; g <= kGenerations; ++g) {
    engine.Replace(GenerationTable(g));  // the old table is freed while the reader runs
  }
  while (latest_seen.load() != kGenerations) std::this_thread::yield();
  done.store(true);
  reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GE(distinct_seen, 2);  // the reader really did decide across swaps
}

}  // namespace
}  // namespace tollgate::analysis

namespace tollgate::analysis {
namespace {

// Destination scope (CacheScope::kDestination): only for a decision that used nothing but the
// tuple and uid, so that a filter may reuse it for new flows to the same destination.
constexpr char kScopeRules[] = R"(
[[rule]]
name = "web"
action = "allow"
protocol = "tcp"
port = 443

[[rule]]
name = "ssh-by-curl"
action = "reject"
protocol = "tcp"
port = 22
exe = "/usr/bin/curl"

[[rule]]
name = "one-off"
action = "allow"
protocol = "tcp"
port = 2222
once = true

[[rule]]
name = "until-2030"
action = "allow"
protocol = "tcp"
port = 3030
expires = 2030-01-01T00:00:00Z
)";

TEST(EngineTest, OnlyTupleDecisionsAreReusableForTheirDestination) {
  FakeClock clock;
  FakeProcesses processes;
  EngineOptions options;
  options.wall_clock = [] {
    return WallTime(std::chrono::sys_days(std::chrono::year(2029) / 12 / 31) + 23h + 59min);
  };
  Engine engine(Rules(kScopeRules, nullptr, Action::kDeny), &processes, nullptr, clock, options);

  Verdict web = engine.Decide(Tcp("198.51.100.7", 443));
  EXPECT_EQ(web.action, Action::kAllow);
  EXPECT_EQ(web.cache, CacheScope::kDestination);
  EXPECT_EQ(web.cache_ttl_ms, 60'000u);

  Verdict fallthrough = engine.Decide(Tcp("198.51.100.7", 9999));
  EXPECT_EQ(fallthrough.action, Action::kDeny) << "the default";
  EXPECT_EQ(fallthrough.cache, CacheScope::kDestination) << "no rule needed more than the tuple";

  Verdict ssh = engine.Decide(Tcp("198.51.100.7", 22));
  EXPECT_EQ(ssh.action, Action::kReject);
  EXPECT_EQ(ssh.cache, CacheScope::kFlow) << "it needed the process";
  EXPECT_EQ(processes.calls, 1);

  Verdict once = engine.Decide(Tcp("198.51.100.7", 2222));
  EXPECT_EQ(once.action, Action::kAllow);
  EXPECT_EQ(once.cache, CacheScope::kFlow) << "a once rule decides one flow only";

  Verdict expiring = engine.Decide(Tcp("198.51.100.7", 3030));
  EXPECT_EQ(expiring.cache, CacheScope::kDestination);
  EXPECT_EQ(expiring.cache_ttl_ms, 60'000u) << "a minute left: the whole TTL";

  FlowQuestion with_payload = Tcp("198.51.100.7", 443);
  with_payload.payload = {0x16, 0x03, 0x01};
  EXPECT_EQ(engine.Decide(with_payload).cache, CacheScope::kFlow);
}

// With a name rule in the table every decision looks the remote address up in the name map
// (the rule index needs it), and a DNS reply may change that name at any time: a decision is
// reusable then only until a DNS reply names the address (cache_until_dns), and never past the
// first of its names to expire.
TEST(EngineTest, DecisionsThatUsedNamesAreReusableUntilDnsNamesTheAddress) {
  FakeClock clock;
  Engine engine(Rules(std::string(kScopeRules) + kAdsRule, nullptr, Action::kDeny), nullptr,
                nullptr, clock);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.7", 443)).action, Action::kInspect)
      << "no name known: the first bytes may carry one (never reused)";
  FlowQuestion udp = Tcp("198.51.100.7", 9999);
  udp.tuple.protocol = ipproto::kUdp;
  Verdict unnamed = engine.Decide(udp);
  EXPECT_EQ(unnamed.action, Action::kDeny) << "the default";
  EXPECT_EQ(unnamed.cache, CacheScope::kDestination);
  EXPECT_TRUE(unnamed.cache_until_dns) << "no name known for it yet: a reply may give it one";
  EXPECT_EQ(unnamed.cache_ttl_ms, 60'000u);

  Observe(engine, DnsReplyBytes("x.doubleclick.net", {{"x.doubleclick.net", "198.51.100.7", 30}}));
  Verdict ads = engine.Decide(Tcp("198.51.100.7", 443));
  EXPECT_EQ(ads.action, Action::kDeny) << "the name decides now";
  EXPECT_EQ(ads.cache, CacheScope::kDestination);
  EXPECT_TRUE(ads.cache_until_dns);
  EXPECT_EQ(ads.cache_ttl_ms, 30'000u) << "no longer than the name is known";

  clock.Advance(29'999ms);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.7", 443)).cache_ttl_ms, 1u);

  // A name read from the payload (SNI) is this flow's alone.
  FlowQuestion with_payload = Tcp("198.51.100.9", 443);
  with_payload.payload = {0x16, 0x03, 0x01};
  EXPECT_EQ(engine.Decide(with_payload).cache, CacheScope::kFlow);
}

TEST(EngineTest, ATableWithoutNameRulesNeverDependsOnDns) {
  FakeClock clock;
  Engine engine(Rules(kScopeRules, nullptr, Action::kDeny), nullptr, nullptr, clock);
  Observe(engine, DnsReplyBytes("x.example", {{"x.example", "198.51.100.7", 30}}));
  Verdict v = engine.Decide(Tcp("198.51.100.7", 443));
  EXPECT_EQ(v.cache, CacheScope::kDestination);
  EXPECT_FALSE(v.cache_until_dns);
  EXPECT_EQ(v.cache_ttl_ms, 60'000u) << "the name's expiry does not matter to a port rule";
}

TEST(EngineTest, ReuseNeverOutlivesTheDecidingRule) {
  FakeClock clock;
  EngineOptions options;
  options.wall_clock = [] {
    return WallTime(std::chrono::sys_days(std::chrono::year(2030) / 1 / 1) - 10s);
  };
  Engine engine(Rules(kScopeRules, nullptr, Action::kDeny), nullptr, nullptr, clock, options);
  Verdict v = engine.Decide(Tcp("198.51.100.7", 3030));
  EXPECT_EQ(v.action, Action::kAllow);
  EXPECT_EQ(v.cache, CacheScope::kDestination);
  EXPECT_EQ(v.cache_ttl_ms, 10'000u);
}

TEST(EngineTest, ReuseCanBeTurnedOff) {
  FakeClock clock;
  EngineOptions options;
  options.destination_cache_ttl = std::chrono::milliseconds(0);
  Engine engine(Rules(kScopeRules, nullptr, Action::kDeny), nullptr, nullptr, clock, options);
  EXPECT_EQ(engine.Decide(Tcp("198.51.100.7", 443)).cache, CacheScope::kFlow);
}

TEST(EngineTest, AFlowTheFilterDecidedIsLoggedWithItsRule) {
  FakeClock clock;
  Engine engine(Rules(kScopeRules, nullptr, Action::kDeny), nullptr, nullptr, clock);
  std::vector<DecisionRecord> records;
  engine.SetObserver([&](const DecisionRecord& r) { records.push_back(r); });
  engine.ObserveDecided(Tcp("198.51.100.7", 443, 77), Action::kAllow);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].question.id, 77u);
  EXPECT_EQ(records[0].verdict.action, Action::kAllow);
  EXPECT_EQ(records[0].rule, "web");
  EXPECT_NE(records[0].verdict.reason.find("reused by the filter"), std::string::npos);
  // What the filter did is what is logged, even if the rules say otherwise by now.
  engine.ObserveDecided(Tcp("198.51.100.7", 443, 78), Action::kReject);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].verdict.action, Action::kReject);
  EXPECT_EQ(records[1].rule, "");
  EXPECT_EQ(engine.counters().decided_by_filters.load(), 2u);
  EXPECT_EQ(engine.counters().questions.load(), 0u) << "not questions";
}

}  // namespace
}  // namespace tollgate::analysis
