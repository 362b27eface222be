#include "analysis/rule_table.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace tollgate::analysis {
namespace {

constexpr char kLocal[] = "192.0.2.1";

IpAddress Ip(std::string_view text) {
  auto ip = IpAddress::Parse(text);
  EXPECT_TRUE(ip.has_value()) << text;
  return ip.value_or(IpAddress{});
}

// A flow from this host to `remote`:`port`.
FlowQuestion Outbound(uint8_t protocol, std::string_view remote, uint16_t port) {
  FlowQuestion q;
  q.id = 42;
  q.direction = Direction::kOutbound;
  q.tuple.protocol = protocol;
  q.tuple.src = Ip(Ip(remote).family == 4 ? kLocal : "2001:db8:ffff::1");
  q.tuple.dst = Ip(remote);
  q.tuple.src_port = 40000;
  q.tuple.dst_port = port;
  return q;
}

// A flow from `remote` to this host's `port`.
FlowQuestion Inbound(uint8_t protocol, std::string_view remote, uint16_t port) {
  FlowQuestion q = Outbound(protocol, remote, port);
  q.direction = Direction::kInbound;
  std::swap(q.tuple.src, q.tuple.dst);
  return q;
}

std::shared_ptr<const RuleTable> Table(const std::string& text,
                                       Action default_action = Action::kAllow) {
  auto rules = ParseRuleFile(text, "r.toml");
  EXPECT_TRUE(rules) << rules.error().message;
  if (!rules) return RuleTable::Empty(default_action);
  auto table = RuleTable::Build(std::move(*rules), default_action);
  EXPECT_TRUE(table) << table.error().message;
  return table ? *table : RuleTable::Empty(default_action);
}

// The name of the deciding rule, or "" for the default.
std::string Winner(const RuleTable& table, const FlowQuestion& q) {
  const Rule* rule = table.Match(q);
  return rule != nullptr ? rule->name : "";
}

std::string ErrorOf(const std::string& text) {
  auto rules = ParseRuleFile(text, "r.toml");
  EXPECT_FALSE(rules.has_value()) << "parsed:\n" << text;
  return rules ? std::string() : rules.error().message;
}

std::string OneRule(const std::string& body) {
  return "[[rule]]\nname = \"r\"\naction = \"deny\"\n" + body;
}

using ipproto::kIcmp;
using ipproto::kIcmpV6;
using ipproto::kTcp;
using ipproto::kUdp;

// --- matchers ---

TEST(RuleMatchTest, SinglePort) {
  auto table = Table(R"(
[[rule]]
name = "no-telnet"
action = "deny"
protocol = "tcp"
port = 23
)");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 23)), "no-telnet");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 22)), "");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 24)), "");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "198.51.100.7", 23)), "");

  Verdict verdict = table->Decide(Outbound(kTcp, "198.51.100.7", 23));
  EXPECT_EQ(verdict.id, 42u);
  EXPECT_EQ(verdict.action, Action::kDeny);
  EXPECT_EQ(verdict.reason, "deny: rule \"no-telnet\" (tcp port 23)");
}

TEST(RuleMatchTest, PortRangeIsInclusive) {
  auto table = Table(OneRule("port = \"80-90\"\n"));
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 79)), "");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 80)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 85)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "198.51.100.7", 90)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 91)), "");
  EXPECT_EQ(table->description(0), "port 80-90");
}

TEST(RuleMatchTest, PortListOfNumbersAndRanges) {
  auto table = Table(OneRule("port = [22, \"80-90\", 443, \"0-0\", \"65535\"]\n"));
  for (uint16_t port : {0, 22, 80, 90, 443, 65535}) {
    EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", port)), "r") << port;
  }
  for (uint16_t port : {1, 21, 23, 79, 91, 442, 444, 65534}) {
    EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", port)), "") << port;
  }
  EXPECT_EQ(table->description(0), "port 22,80-90,443,0,65535");
}

TEST(RuleMatchTest, PortNeverMatchesIcmpTypeAndCode) {
  // The tuple carries ICMP type/code in the port fields; a port rule must not see them.
  auto table = Table(OneRule("port = \"0-65535\"\n"));
  FlowQuestion ping = Outbound(kIcmp, "198.51.100.7", 0);
  ping.tuple.src_port = 8;
  EXPECT_EQ(Winner(*table, ping), "");
  EXPECT_EQ(Winner(*table, Outbound(kIcmpV6, "2001:db8::1", 0)), "");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "198.51.100.7", 0)), "r");
}

TEST(RuleMatchTest, ProtocolSingleAndList) {
  auto tcp_udp = Table(OneRule("protocol = [\"tcp\", \"udp\"]\n"));
  EXPECT_EQ(Winner(*tcp_udp, Outbound(kTcp, "198.51.100.7", 1)), "r");
  EXPECT_EQ(Winner(*tcp_udp, Outbound(kUdp, "198.51.100.7", 1)), "r");
  EXPECT_EQ(Winner(*tcp_udp, Outbound(kIcmp, "198.51.100.7", 0)), "");
  EXPECT_EQ(tcp_udp->description(0), "tcp,udp");

  auto icmp = Table(OneRule("protocol = [\"icmp\", \"icmpv6\"]\n"));
  EXPECT_EQ(Winner(*icmp, Outbound(kIcmp, "198.51.100.7", 0)), "r");
  EXPECT_EQ(Winner(*icmp, Outbound(kIcmpV6, "2001:db8::1", 0)), "r");
  EXPECT_EQ(Winner(*icmp, Outbound(kTcp, "198.51.100.7", 80)), "");

  auto udp = Table(OneRule("protocol = \"udp\"\n"));
  EXPECT_EQ(Winner(*udp, Outbound(kUdp, "198.51.100.7", 53)), "r");
  EXPECT_EQ(Winner(*udp, Outbound(kTcp, "198.51.100.7", 53)), "");
}

TEST(RuleMatchTest, CidrV4PrefixBoundaries) {
  auto table = Table(OneRule("cidr = [\"10.0.0.0/8\", \"192.168.16.0/20\", \"203.0.113.5/32\"]\n"));
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "10.0.0.0", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "10.255.255.255", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "9.255.255.255", 1)), "");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "11.0.0.0", 1)), "");
  // /20: the boundary falls inside the third byte.
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "192.168.16.0", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "192.168.31.255", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "192.168.15.255", 1)), "");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "192.168.32.0", 1)), "");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "203.0.113.5", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "203.0.113.4", 1)), "");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "203.0.113.6", 1)), "");
  EXPECT_EQ(table->description(0), "remote 10.0.0.0/8,192.168.16.0/20,203.0.113.5");
}

TEST(RuleMatchTest, CidrV6PrefixBoundaries) {
  auto table = Table(OneRule("cidr = [\"2001:db8::/32\", \"fd00::/127\", \"fe80::1\"]\n"));
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "2001:db8::", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", 1)), "");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "2001:db9::", 1)), "");
  // /127: the last bit is free, the one before it is not.
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "fd00::", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "fd00::1", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "fd00::2", 1)), "");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "fe80::1", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "fe80::2", 1)), "");
}

TEST(RuleMatchTest, FamiliesNeverCrossAndZeroPrefixMatchesItsFamily) {
  auto v4_all = Table(OneRule("cidr = \"0.0.0.0/0\"\n"));
  EXPECT_EQ(Winner(*v4_all, Outbound(kTcp, "198.51.100.7", 1)), "r");
  EXPECT_EQ(Winner(*v4_all, Outbound(kTcp, "::", 1)), "");
  auto v6_all = Table(OneRule("cidr = \"::/0\"\n"));
  EXPECT_EQ(Winner(*v6_all, Outbound(kTcp, "2001:db8::1", 1)), "r");
  EXPECT_EQ(Winner(*v6_all, Outbound(kTcp, "0.0.0.0", 1)), "");
  // An IPv4-mapped IPv6 address is a different address family on the wire.
  auto mapped = Table(OneRule("ip = \"10.0.0.1\"\n"));
  EXPECT_EQ(Winner(*mapped, Outbound(kTcp, "::ffff:10.0.0.1", 1)), "");
}

TEST(RuleMatchTest, IpSingleAndMixedList) {
  auto table = Table(OneRule("ip = [\"198.51.100.7\", \"2001:db8::7\"]\n"));
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.8", 1)), "");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "2001:db8::7", 1)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "2001:db8::8", 1)), "");
  EXPECT_EQ(table->description(0), "remote 198.51.100.7,2001:db8::7");
}

TEST(RuleMatchTest, DirectionAndRemoteAddressOfInboundFlows) {
  auto table = Table(R"(
[[rule]]
name = "ssh-from-lan"
action = "allow"
direction = "inbound"
protocol = "tcp"
port = 22
cidr = "10.0.0.0/8"
)");
  // Inbound: the remote is the source, the port is ours (the destination).
  EXPECT_EQ(Winner(*table, Inbound(kTcp, "10.1.2.3", 22)), "ssh-from-lan");
  EXPECT_EQ(Winner(*table, Inbound(kTcp, "11.1.2.3", 22)), "");
  EXPECT_EQ(Winner(*table, Inbound(kTcp, "10.1.2.3", 23)), "");
  // The same addresses outbound are not this rule's business.
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "10.1.2.3", 22)), "");
  EXPECT_EQ(table->description(0), "inbound tcp port 22 remote 10.0.0.0/8");

  auto outbound = Table(OneRule("direction = \"outbound\"\n"));
  EXPECT_EQ(Winner(*outbound, Outbound(kTcp, "10.1.2.3", 22)), "r");
  EXPECT_EQ(Winner(*outbound, Inbound(kTcp, "10.1.2.3", 22)), "");
}

TEST(RuleMatchTest, AllConditionsMustHold) {
  auto table = Table(OneRule("protocol = \"udp\"\nport = 53\nip = \"9.9.9.9\"\n"));
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "9.9.9.9", 53)), "r");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "9.9.9.9", 53)), "");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "9.9.9.8", 53)), "");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "9.9.9.9", 54)), "");
}

TEST(RuleMatchTest, RuleWithoutConditionsMatchesEverything) {
  auto table = Table(OneRule(""));
  EXPECT_EQ(Winner(*table, Outbound(kIcmp, "198.51.100.7", 0)), "r");
  EXPECT_EQ(Winner(*table, Inbound(kTcp, "2001:db8::1", 80)), "r");
  EXPECT_EQ(table->description(0), "any flow");
}

TEST(RuleMatchTest, LongListsAreShortenedInTheReason) {
  auto table = Table(OneRule("port = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n"));
  EXPECT_EQ(table->description(0), "port 1,2,3,4,5,6,7,8 and 3 more");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 11)), "r");
}

TEST(RuleNetworkTest, IpNetworkParseMaskAndPrint) {
  auto network = IpNetwork::Parse("10.1.2.3/8");
  ASSERT_TRUE(network);
  EXPECT_EQ(network->prefix_len, 8);
  EXPECT_EQ(network->Masked().ToString(), "10.0.0.0/8");
  EXPECT_EQ(IpNetwork::Parse("2001:db8::1/33")->Masked().ToString(), "2001:db8::/33");
  EXPECT_EQ(IpNetwork::Parse("2001:db8:ffff::/33")->Masked().ToString(), "2001:db8:8000::/33");
  EXPECT_EQ(IpNetwork::Parse("10.0.0.1")->prefix_len, 32);
  EXPECT_EQ(IpNetwork::Parse("::1")->prefix_len, 128);
  EXPECT_EQ(IpNetwork::Parse("::1")->ToString(), "::1");
  EXPECT_EQ(IpNetwork::Parse("0.0.0.0/0")->ToString(), "0.0.0.0/0");
  for (const char* bad : {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/8/8",
                          "10.0.0.0/-1", "10.0.0.0/0008", "10.0.0/8", "host/8", "fe80::1%eth0"}) {
    EXPECT_FALSE(IpNetwork::Parse(bad)) << bad;
  }
}

// --- precedence ---

TEST(RulePrecedenceTest, HigherPriorityWinsWhateverTheAction) {
  auto table = Table(R"(
[[rule]]
name = "block-web"
action = "deny"
port = 443

[[rule]]
name = "allow-updates"
action = "allow"
priority = 10
ip = "198.51.100.7"
)");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 443)), "allow-updates");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.8", 443)), "block-web");
}

TEST(RulePrecedenceTest, NegativePriorityComesAfterTheDefaultPriority) {
  auto table = Table(R"(
[[rule]]
name = "late-deny"
action = "deny"
priority = -5

[[rule]]
name = "allow-dns"
action = "allow"
port = 53
)");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "9.9.9.9", 53)), "allow-dns");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "9.9.9.9", 54)), "late-deny");
}

TEST(RulePrecedenceTest, DenyAndRejectBeatAllowAtEqualPriority) {
  auto table = Table(R"(
[[rule]]
name = "allow-all"
action = "allow"

[[rule]]
name = "reject-smtp"
action = "reject"
port = 25

[[rule]]
name = "deny-telnet"
action = "deny"
port = 23
)");
  // The allow comes first in the file and matches everything, yet the blocks hold.
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 23)), "deny-telnet");
  EXPECT_EQ(table->Decide(Outbound(kTcp, "198.51.100.7", 25)).action, Action::kReject);
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 80)), "allow-all");
  // Evaluation order as the table reports it.
  ASSERT_EQ(table->rules().size(), 3u);
  EXPECT_EQ(table->rules()[0].name, "reject-smtp");
  EXPECT_EQ(table->rules()[1].name, "deny-telnet");
  EXPECT_EQ(table->rules()[2].name, "allow-all");
}

TEST(RulePrecedenceTest, FileOrderAmongEqualsOfTheSameKind) {
  auto table = Table(R"(
[[rule]]
name = "first-allow"
action = "allow"
port = 80

[[rule]]
name = "second-allow"
action = "allow"
protocol = "tcp"

[[rule]]
name = "first-block"
action = "reject"
port = 8080

[[rule]]
name = "second-block"
action = "deny"
protocol = "tcp"
)");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 8080)), "first-block");
  EXPECT_EQ(Winner(*table, Outbound(kTcp, "198.51.100.7", 80)), "second-block");
  EXPECT_EQ(Winner(*table, Outbound(kUdp, "198.51.100.7", 80)), "first-allow");
}

TEST(RulePrecedenceTest, DefaultWhenNothingMatches) {
  auto allow_default = Table(OneRule("port = 23\n"), Action::kAllow);
  Verdict verdict = allow_default->Decide(Outbound(kTcp, "198.51.100.7", 80));
  EXPECT_EQ(verdict.id, 42u);
  EXPECT_EQ(verdict.action, Action::kAllow);
  EXPECT_EQ(verdict.reason, "default: no rule matched");

  auto reject_default = RuleTable::Empty(Action::kReject);
  verdict = reject_default->Decide(Outbound(kTcp, "198.51.100.7", 80));
  EXPECT_EQ(verdict.action, Action::kReject);
  EXPECT_EQ(verdict.reason, "default: no rule matched");
  EXPECT_EQ(reject_default->default_action(), Action::kReject);
}

TEST(RuleTableBuildTest, RefusesInspectAndDuplicates) {
  Rule inspect;
  inspect.name = "x";
  inspect.action = Action::kInspect;
  auto bad_action = RuleTable::Build({inspect}, Action::kAllow);
  ASSERT_FALSE(bad_action);
  EXPECT_EQ(bad_action.error().message,
            "rule \"x\": a rule's action must be allow, deny or reject, not inspect");

  auto bad_default = RuleTable::Build({}, Action::kInspect);
  ASSERT_FALSE(bad_default);

  Rule a;
  a.name = "same";
  a.origin = "a.toml:2:8";
  Rule b = a;
  b.origin = "b.toml:5:8";
  auto duplicate = RuleTable::Build({a, b}, Action::kAllow);
  ASSERT_FALSE(duplicate);
  EXPECT_EQ(duplicate.error().message,
            "b.toml:5:8: rule name \"same\" is already used at a.toml:2:8; rule names must be "
            "unique across all rule files");
}

// --- rule file errors: file:line:col, what was expected, what was there ---

TEST(RuleFileErrorTest, SyntaxError) {
  auto rules = ParseRuleFile("[[rule]]\nname = \"x\nport = 1\n", "r.toml");
  ASSERT_FALSE(rules);
  EXPECT_EQ(rules.error().code, ErrorCode::kMalformed);
  EXPECT_EQ(rules.error().message.rfind("r.toml:2:", 0), 0u) << rules.error().message;
}

TEST(RuleFileErrorTest, UnknownKeys) {
  EXPECT_EQ(ErrorOf(OneRule("prot = \"tcp\"\n")),
            "r.toml:4:1: rule \"r\": unknown key \"prot\"; did you mean \"port\"?");
  EXPECT_EQ(ErrorOf(OneRule("protocols = \"tcp\"\n")),
            "r.toml:4:1: rule \"r\": unknown key \"protocols\"; did you mean \"protocol\"?");
  EXPECT_EQ(ErrorOf(OneRule("comment = \"x\"\n")),
            "r.toml:4:1: rule \"r\": unknown key \"comment\"; expected one of: name, action, "
            "priority, protocol, port, ip, cidr, direction, host, list, user, uid, exe, unit, "
            "app_protocol, expires, once, on_unknown");
  EXPECT_EQ(ErrorOf("[defaults]\naction = \"deny\"\n"),
            "r.toml:1:2: unknown table [defaults] at the top level; rules are written as [[rule]] "
            "tables");
  EXPECT_EQ(ErrorOf("name = \"x\"\n"),
            "r.toml:1:1: unknown key \"name\" at the top level; rules are written as [[rule]] "
            "tables");
  EXPECT_EQ(ErrorOf("[rule]\nname = \"x\"\n"),
            "r.toml:1:1: rule must be an array of tables ([[rule]]), got a table");
  EXPECT_EQ(ErrorOf("rule = [1]\n"), "r.toml:1:9: rule #1 must be a table, got 1");
}

TEST(RuleFileErrorTest, FactConditions) {
  EXPECT_EQ(ErrorOf(OneRule("host = \"*.exa mple.com\"\n")),
            "r.toml:4:8: rule \"r\": host \"*.exa mple.com\": names hold letters, digits, '-', "
            "'_' and dots; '*' only as \"*.\" at the start, and regular expressions are written "
            "between slashes: \"/.../\"");
  EXPECT_EQ(ErrorOf(OneRule("host = \"/(ab/\"\n")),
            "r.toml:4:8: rule \"r\": host \"/(ab/\": not a valid RE2 regular expression: "
            "missing ): (ab");
  EXPECT_EQ(ErrorOf(OneRule("host = \"a..b\"\n")),
            "r.toml:4:8: rule \"r\": host \"a..b\": empty label (two dots, or a leading dot)");
  EXPECT_EQ(ErrorOf(OneRule("list = \"ads\"\n")),
            "r.toml:4:8: rule \"r\": no blocklist named \"ads\"; none is configured "
            "([blocklists] in the settings)");
  EXPECT_EQ(ErrorOf(OneRule("user = \"no-such-user-here\"\n")),
            "r.toml:4:8: rule \"r\": no user named \"no-such-user-here\" on this system (a rule "
            "for a user who does not exist would silently match nothing)");
  EXPECT_EQ(ErrorOf(OneRule("uid = -1\n")),
            "r.toml:4:7: rule \"r\": uid must be a user id from 0 to 4294967294, or a list of "
            "them, got -1");
  EXPECT_EQ(ErrorOf(OneRule("exe = \"curl\"\n")),
            "r.toml:4:7: rule \"r\": exe must be an absolute path or glob (\"/usr/bin/curl\", "
            "\"/opt/*/bin/*\"), or a list of them, got \"curl\"");
  EXPECT_EQ(ErrorOf(OneRule("app_protocol = \"TLS\"\n")),
            "r.toml:4:16: rule \"r\": app_protocol needs the protocol classifier (nDPI), which is "
            "not available");
  EXPECT_EQ(ErrorOf(OneRule("expires = 2030-01-01T00:00:00\n")),
            "r.toml:4:11: rule \"r\": expires has no UTC offset; add Z or +hh:mm (a local time "
            "would change meaning with the machine's time zone)");
  EXPECT_EQ(ErrorOf(OneRule("expires = \"tomorrow\"\n")),
            "r.toml:4:11: rule \"r\": expires must be a date and time with its offset, like "
            "2026-12-31T18:00:00Z or 2026-12-31T19:00:00+01:00, got \"tomorrow\"");
  EXPECT_EQ(ErrorOf(OneRule("once = 1\n")),
            "r.toml:4:8: rule \"r\": once must be true or false, got 1");
  EXPECT_EQ(ErrorOf(OneRule("port = 22\non_unknown = \"deny\"\n")),
            "r.toml:5:14: rule \"r\": on_unknown has no effect: the rule has no host, list, user, "
            "uid, exe, unit or app_protocol condition whose fact could be unknown");
  EXPECT_EQ(ErrorOf(OneRule("host = \"x.org\"\non_unknown = \"inspect\"\n")),
            "r.toml:5:14: rule \"r\": on_unknown must be \"allow\", \"deny\" or \"reject\", got "
            "\"inspect\"");
}

TEST(RuleFileErrorTest, NameAndAction) {
  EXPECT_EQ(ErrorOf("\n[[rule]]\naction = \"deny\"\n"),
            "r.toml:2:1: rule #1 has no name; every rule needs name = \"...\", unique across all "
            "rule files");
  EXPECT_EQ(ErrorOf("[[rule]]\nname = \"a b\"\naction = \"deny\"\n"),
            "r.toml:2:8: rule #1: name must be 1 to 64 letters, digits, \"-\", \"_\", \".\" or "
            "\":\" (it appears in every verdict reason), got \"a b\"");
  EXPECT_EQ(ErrorOf("[[rule]]\nname = \"x\"\n"),
            "r.toml:1:1: rule \"x\" has no action; add action = \"allow\", \"deny\" or \"reject\"");
  EXPECT_EQ(ErrorOf("[[rule]]\nname = \"x\"\naction = \"drop\"\n"),
            "r.toml:3:10: rule \"x\": action must be \"allow\", \"deny\" or \"reject\", got "
            "\"drop\"");
  EXPECT_EQ(ErrorOf("[[rule]]\nname = \"x\"\naction = \"inspect\"\n"),
            "r.toml:3:10: rule \"x\": action must be \"allow\", \"deny\" or \"reject\", got "
            "\"inspect\"");
}

TEST(RuleFileErrorTest, DuplicateNameWithinAFile) {
  EXPECT_EQ(ErrorOf("[[rule]]\nname = \"x\"\naction = \"deny\"\n"
                    "[[rule]]\nname = \"x\"\naction = \"allow\"\n"),
            "r.toml:5:8: rule name \"x\" is already used at r.toml:2:8; rule names must be unique "
            "across all rule files");
}

TEST(RuleFileErrorTest, Priority) {
  EXPECT_EQ(ErrorOf(OneRule("priority = \"high\"\n")),
            "r.toml:4:12: rule \"r\": priority must be an integer from -2147483648 to 2147483647, "
            "got \"high\"");
  EXPECT_EQ(ErrorOf(OneRule("priority = 2147483648\n")),
            "r.toml:4:12: rule \"r\": priority must be an integer from -2147483648 to 2147483647, "
            "got 2147483648");
}

TEST(RuleFileErrorTest, Protocol) {
  const std::string expected =
      "protocol must be \"tcp\", \"udp\", \"icmp\" or \"icmpv6\", or a list of them, got ";
  EXPECT_EQ(ErrorOf(OneRule("protocol = \"sctp\"\n")),
            "r.toml:4:12: rule \"r\": " + expected + "\"sctp\"");
  EXPECT_EQ(ErrorOf(OneRule("protocol = [\"tcp\", \"TCP\"]\n")),
            "r.toml:4:20: rule \"r\": " + expected + "\"TCP\"");
  EXPECT_EQ(ErrorOf(OneRule("protocol = 6\n")), "r.toml:4:12: rule \"r\": " + expected + "6");
  EXPECT_EQ(ErrorOf(OneRule("protocol = []\n")),
            "r.toml:4:12: rule \"r\": protocol must not be an empty list (leave it out to match "
            "any protocol)");
}

TEST(RuleFileErrorTest, Port) {
  const std::string expected =
      "port must be a port number from 0 to 65535, a range like \"80-90\" (first <= last), or a "
      "list of them, got ";
  const std::pair<const char*, const char*> cases[] = {{"65536", "65536"},
                                                       {"-1", "-1"},
                                                       {"\"90-80\"", "\"90-80\""},
                                                       {"\"http\"", "\"http\""},
                                                       {"\"80-\"", "\"80-\""},
                                                       {"\"80 - 90\"", "\"80 - 90\""},
                                                       {"8.0", "8"},
                                                       {"true", "true"},
                                                       {"[[80]]", "an array"}};
  for (const auto& [value, shown] : cases) {
    std::string message = ErrorOf(OneRule(std::string("port = ") + value + "\n"));
    EXPECT_NE(message.find(": rule \"r\": " + expected + shown), std::string::npos) << message;
  }
  EXPECT_EQ(ErrorOf(OneRule("port = \"90-80\"\n")),
            "r.toml:4:8: rule \"r\": " + expected + "\"90-80\"");
  EXPECT_EQ(ErrorOf(OneRule("port = [80, \"x\"]\n")),
            "r.toml:4:13: rule \"r\": " + expected + "\"x\"");
  EXPECT_EQ(ErrorOf(OneRule("port = []\n")),
            "r.toml:4:8: rule \"r\": port must not be an empty list (leave it out to match any "
            "port)");
}

TEST(RuleFileErrorTest, PortNeedsTcpOrUdp) {
  EXPECT_EQ(ErrorOf(OneRule("protocol = [\"tcp\", \"icmp\"]\nport = 80\n")),
            "r.toml:5:8: rule \"r\": port applies only to tcp and udp, but protocol also lists "
            "icmp; put the icmp part in a rule of its own");
}

TEST(RuleFileErrorTest, Addresses) {
  EXPECT_EQ(ErrorOf(OneRule("ip = \"10.0.0.0/8\"\n")),
            "r.toml:4:6: rule \"r\": ip must be an IPv4 or IPv6 address, or a list of them "
            "(networks go in cidr), got \"10.0.0.0/8\"");
  EXPECT_EQ(ErrorOf(OneRule("ip = [\"10.0.0.1\", \"example.com\"]\n")),
            "r.toml:4:19: rule \"r\": ip must be an IPv4 or IPv6 address, or a list of them "
            "(networks go in cidr), got \"example.com\"");
  EXPECT_EQ(ErrorOf(OneRule("cidr = \"10.0.0.0/33\"\n")),
            "r.toml:4:8: rule \"r\": cidr must be a network like \"10.0.0.0/8\" or "
            "\"2001:db8::/32\" (or a plain address), or a list of them, got \"10.0.0.0/33\"");
  EXPECT_EQ(ErrorOf(OneRule("cidr = \"192.168.1.0/16\"\n")),
            "r.toml:4:8: rule \"r\": cidr \"192.168.1.0/16\" has host bits set; did you mean "
            "\"192.168.0.0/16\"?");
  EXPECT_EQ(ErrorOf(OneRule("cidr = \"2001:db8::1/64\"\n")),
            "r.toml:4:8: rule \"r\": cidr \"2001:db8::1/64\" has host bits set; did you mean "
            "\"2001:db8::/64\"?");
  EXPECT_EQ(ErrorOf(OneRule("cidr = \"10.0.0.0/8\"\nip = \"10.0.0.1\"\n")),
            "r.toml:5:6: rule \"r\": use either ip or cidr, not both (both match the remote "
            "address; cidr also takes plain addresses)");
  EXPECT_EQ(ErrorOf(OneRule("cidr = []\n")),
            "r.toml:4:8: rule \"r\": cidr must not be an empty list (leave it out to match any "
            "remote address)");
}

TEST(RuleFileErrorTest, Direction) {
  EXPECT_EQ(ErrorOf(OneRule("direction = \"out\"\n")),
            "r.toml:4:13: rule \"r\": direction must be \"outbound\" or \"inbound\", got \"out\"");
}

TEST(RuleFileErrorTest, ReportsTheEarliestProblemAndCountsTheRest) {
  EXPECT_EQ(ErrorOf("[[rule]]\nname = \"x\"\naction = \"deny\"\nport = \"a\"\n"
                    "direction = \"up\"\n[[rule]]\nname = \"y\"\n"),
            "r.toml:4:8: rule \"x\": port must be a port number from 0 to 65535, a range like "
            "\"80-90\" (first <= last), or a list of them, got \"a\" (and 2 more problems in this "
            "file)");
}

TEST(RuleFileTest, EmptyAndCommentOnlyFilesHaveNoRules) {
  for (const char* text : {"", "# nothing yet\n", "rule = []\n"}) {
    auto rules = ParseRuleFile(text, "r.toml");
    ASSERT_TRUE(rules) << rules.error().message;
    EXPECT_TRUE(rules->empty());
  }
}

TEST(RuleFileTest, InlineTablesAndOriginsAreRecorded) {
  auto rules = ParseRuleFile(
      "rule = [{ name = \"a\", action = \"allow\" }, { name = \"b\", action = \"deny\", priority "
      "= 3 }]\n",
      "r.toml");
  ASSERT_TRUE(rules) << rules.error().message;
  ASSERT_EQ(rules->size(), 2u);
  EXPECT_EQ((*rules)[0].origin, "r.toml:1:18");
  EXPECT_EQ((*rules)[1].priority, 3);
}

// --- loading a directory ---

class RuleDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tollgate-rules-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(RuleDirTest, LoadsTomlFilesInLexicalOrder) {
  // "10-" sorts before "9-": lexical, as in every *.d directory.
  Write("9-late.toml", "[[rule]]\nname = \"late\"\naction = \"allow\"\nport = 80\n");
  Write("10-early.toml", "[[rule]]\nname = \"early\"\naction = \"allow\"\nprotocol = \"tcp\"\n");
  Write("README", "not rules");
  Write("x.toml.dpkg-old", "garbage [[[");
  Write(".hidden.toml", "garbage [[[");
  std::filesystem::create_directory(dir_ + "/sub.toml");
  auto table = LoadRuleFiles(dir_, Action::kDeny);
  ASSERT_TRUE(table) << table.error().message;
  ASSERT_EQ((*table)->rules().size(), 2u);
  EXPECT_EQ(Winner(**table, Outbound(kTcp, "198.51.100.7", 80)), "early");
  EXPECT_EQ(Winner(**table, Outbound(kUdp, "198.51.100.7", 80)), "late");
  EXPECT_EQ((*table)->Decide(Outbound(kUdp, "198.51.100.7", 81)).action, Action::kDeny);
  EXPECT_EQ((*table)->rules()[0].origin, dir_ + "/10-early.toml:2:8");
}

TEST_F(RuleDirTest, DuplicateNameAcrossFiles) {
  Write("a.toml", "[[rule]]\nname = \"web\"\naction = \"allow\"\nport = 80\n");
  Write("b.toml", "# second\n[[rule]]\nname = \"web\"\naction = \"deny\"\n");
  auto table = LoadRuleFiles(dir_, Action::kAllow);
  ASSERT_FALSE(table);
  EXPECT_EQ(table.error().message, dir_ + "/b.toml:3:8: rule name \"web\" is already used at " +
                                       dir_ + "/a.toml:2:8; rule names must be unique across all " +
                                       "rule files");
}

TEST_F(RuleDirTest, AnyBrokenFileFailsTheWholeLoad) {
  Write("a.toml", "[[rule]]\nname = \"fine\"\naction = \"allow\"\n");
  Write("b.toml", "[[rule]]\nname = \"broken\"\naction = \"deny\"\nport = \"x\"\n");
  auto table = LoadRuleFiles(dir_, Action::kAllow);
  ASSERT_FALSE(table);
  EXPECT_EQ(table.error().message.rfind(dir_ + "/b.toml:4:8: rule \"broken\": port must be", 0), 0u)
      << table.error().message;
}

TEST_F(RuleDirTest, EmptyDirectoryMeansDefaultOnly) {
  auto table = LoadRuleFiles(dir_ + "/", Action::kReject);
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_TRUE((*table)->rules().empty());
  EXPECT_EQ((*table)->Decide(Outbound(kTcp, "198.51.100.7", 1)).action, Action::kReject);
}

TEST_F(RuleDirTest, MissingDirectoryIsNotFound) {
  auto table = LoadRuleFiles(dir_ + "/absent", Action::kAllow);
  ASSERT_FALSE(table);
  EXPECT_EQ(table.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(table.error().message,
            "cannot read rules directory " + dir_ + "/absent: No such file or directory");
}

TEST_F(RuleDirTest, DanglingLinkAndFifoFailLoudly) {
  ASSERT_EQ(::symlink((dir_ + "/nowhere").c_str(), (dir_ + "/link.toml").c_str()), 0);
  auto dangling = LoadRuleFiles(dir_, Action::kAllow);
  ASSERT_FALSE(dangling);
  EXPECT_EQ(dangling.error().message,
            "cannot read rule file " + dir_ + "/link.toml: No such file or directory");
  std::filesystem::remove(dir_ + "/link.toml");

  ASSERT_EQ(::mkfifo((dir_ + "/pipe.toml").c_str(), 0600), 0);
  auto fifo = LoadRuleFiles(dir_, Action::kAllow);
  ASSERT_FALSE(fifo);
  EXPECT_EQ(fifo.error().message,
            "cannot read rule file " + dir_ + "/pipe.toml: not a regular file");
}

}  // namespace
}  // namespace tollgate::analysis
