#include "platform/linux/iptables.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/icmp6.h>
#include <netinet/ip_icmp.h>
#include <netinet/tcp.h>

#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "platform/linux/netfilter_test_support.h"
#include "platform/linux/nfqueue.h"

namespace tollgate::platform {
namespace {

using testing::BoundSocket;
using testing::Captured;
using testing::CollectQueued;
using testing::DatagramArrives;
using ::testing::HasSubstr;
using testing::HaveTool;
using testing::Loopback;
using testing::PortOf;
using testing::RunCommand;
using testing::RunInNetns;
using testing::WaitFor;

// ------------------------------------------------------------------------------------------------
// Rendering (no root needed).

constexpr char kGoldenIpv4Default[] = R"(*mangle
:TOLLGATE-OUT - [0:0]
:TOLLGATE-IN - [0:0]
-A TOLLGATE-OUT -m mark --mark 0x0/0x700000 -m connmark --mark 0x100000/0x700000 -j RETURN
-A TOLLGATE-OUT -m mark ! --mark 0x0/0x700000 -m mark ! --mark 0x500000/0x700000 -m mark ! --mark 0x600000/0x700000 -j CONNMARK --save-mark --nfmask 0x700000 --ctmask 0x700000
-A TOLLGATE-OUT -m connmark --mark 0x200000/0x700000 -j DROP
-A TOLLGATE-OUT -m mark ! --mark 0x0/0x700000 -j RETURN
-A TOLLGATE-OUT -m connmark --mark 0x400000/0x700000 -m conntrack --ctdir ORIGINAL -j NFQUEUE --queue-num 0 --queue-bypass
-A TOLLGATE-OUT -p tcp -m conntrack --ctstate NEW -m connmark --mark 0x0/0x700000 -j NFQUEUE --queue-num 0 --queue-bypass
-A TOLLGATE-OUT -p udp -m conntrack --ctstate NEW -m connmark --mark 0x0/0x700000 -j NFQUEUE --queue-num 0 --queue-bypass
-A TOLLGATE-OUT -p icmp -m conntrack --ctstate NEW -m connmark --mark 0x0/0x700000 -j NFQUEUE --queue-num 0 --queue-bypass
-A TOLLGATE-IN -p udp -m udp --sport 53 -m mark --mark 0x0/0x700000 -m conntrack --ctstate ESTABLISHED --ctdir REPLY -j MARK --set-xmark 0x600000/0x700000
-A TOLLGATE-IN -p tcp -m tcp --sport 53 -m mark --mark 0x0/0x700000 -m conntrack --ctstate ESTABLISHED --ctdir REPLY -j MARK --set-xmark 0x600000/0x700000
-A TOLLGATE-IN -m mark --mark 0x600000/0x700000 -j NFQUEUE --queue-num 0 --queue-bypass
-A TOLLGATE-IN -m mark --mark 0x0/0x700000 -m connmark --mark 0x100000/0x700000 -j RETURN
-A TOLLGATE-IN -m mark ! --mark 0x0/0x700000 -m mark ! --mark 0x500000/0x700000 -m mark ! --mark 0x600000/0x700000 -j CONNMARK --save-mark --nfmask 0x700000 --ctmask 0x700000
-A TOLLGATE-IN -m connmark --mark 0x200000/0x700000 -j DROP
-A TOLLGATE-IN -m mark ! --mark 0x0/0x700000 -j RETURN
-A TOLLGATE-IN -m connmark --mark 0x400000/0x700000 -m conntrack --ctdir ORIGINAL -j NFQUEUE --queue-num 0 --queue-bypass
-I OUTPUT 1 -j TOLLGATE-OUT
-I INPUT 1 -j TOLLGATE-IN
COMMIT
*filter
:TOLLGATE-REJECT - [0:0]
-A TOLLGATE-REJECT -m connmark ! --mark 0x300000/0x700000 -j RETURN
-A TOLLGATE-REJECT -p tcp -m conntrack --ctdir ORIGINAL -j REJECT --reject-with tcp-reset
-A TOLLGATE-REJECT -m conntrack --ctdir ORIGINAL -j REJECT --reject-with icmp-admin-prohibited
-I OUTPUT 1 -j TOLLGATE-REJECT
-I INPUT 1 -j TOLLGATE-REJECT
COMMIT
)";

// Fail-closed, inbound, a queue range, another mark field, excluded interfaces.
constexpr char kGoldenIpv6Custom[] = R"(*mangle
:TOLLGATE-OUT - [0:0]
:TOLLGATE-IN - [0:0]
-A TOLLGATE-OUT -o eth1 -j RETURN
-A TOLLGATE-OUT -o veth+ -j RETURN
-A TOLLGATE-OUT -m mark --mark 0x0/0xe000 -m connmark --mark 0x2000/0xe000 -j RETURN
-A TOLLGATE-OUT -m mark ! --mark 0x0/0xe000 -m mark ! --mark 0xa000/0xe000 -m mark ! --mark 0xc000/0xe000 -j CONNMARK --save-mark --nfmask 0xe000 --ctmask 0xe000
-A TOLLGATE-OUT -m connmark --mark 0x4000/0xe000 -j DROP
-A TOLLGATE-OUT -m mark ! --mark 0x0/0xe000 -j RETURN
-A TOLLGATE-OUT -m connmark --mark 0x8000/0xe000 -m conntrack --ctdir ORIGINAL -j NFQUEUE --queue-balance 2:3
-A TOLLGATE-OUT -p tcp -m conntrack --ctstate NEW -m connmark --mark 0x0/0xe000 -j NFQUEUE --queue-balance 2:3
-A TOLLGATE-OUT -p udp -m conntrack --ctstate NEW -m connmark --mark 0x0/0xe000 -j NFQUEUE --queue-balance 2:3
-A TOLLGATE-OUT -p ipv6-icmp -m conntrack --ctstate NEW -m connmark --mark 0x0/0xe000 -j NFQUEUE --queue-balance 2:3
-A TOLLGATE-IN -i eth1 -j RETURN
-A TOLLGATE-IN -i veth+ -j RETURN
-A TOLLGATE-IN -p udp -m udp --sport 53 -m mark --mark 0x0/0xe000 -m conntrack --ctstate ESTABLISHED --ctdir REPLY -j MARK --set-xmark 0xc000/0xe000
-A TOLLGATE-IN -p tcp -m tcp --sport 53 -m mark --mark 0x0/0xe000 -m conntrack --ctstate ESTABLISHED --ctdir REPLY -j MARK --set-xmark 0xc000/0xe000
-A TOLLGATE-IN -m mark --mark 0xc000/0xe000 -j NFQUEUE --queue-balance 2:3 --queue-bypass
-A TOLLGATE-IN -m mark --mark 0x0/0xe000 -m connmark --mark 0x2000/0xe000 -j RETURN
-A TOLLGATE-IN -m mark ! --mark 0x0/0xe000 -m mark ! --mark 0xa000/0xe000 -m mark ! --mark 0xc000/0xe000 -j CONNMARK --save-mark --nfmask 0xe000 --ctmask 0xe000
-A TOLLGATE-IN -m connmark --mark 0x4000/0xe000 -j DROP
-A TOLLGATE-IN -m mark ! --mark 0x0/0xe000 -j RETURN
-A TOLLGATE-IN -m connmark --mark 0x8000/0xe000 -m conntrack --ctdir ORIGINAL -j NFQUEUE --queue-balance 2:3
-A TOLLGATE-IN -p tcp -m conntrack --ctstate NEW -m connmark --mark 0x0/0xe000 -j NFQUEUE --queue-balance 2:3
-A TOLLGATE-IN -p udp -m conntrack --ctstate NEW -m connmark --mark 0x0/0xe000 -j NFQUEUE --queue-balance 2:3
-A TOLLGATE-IN -p ipv6-icmp -m conntrack --ctstate NEW -m connmark --mark 0x0/0xe000 -j NFQUEUE --queue-balance 2:3
-I OUTPUT 1 -j TOLLGATE-OUT
-I INPUT 1 -j TOLLGATE-IN
COMMIT
*filter
:TOLLGATE-REJECT - [0:0]
-A TOLLGATE-REJECT -m connmark ! --mark 0x6000/0xe000 -j RETURN
-A TOLLGATE-REJECT -p tcp -m conntrack --ctdir ORIGINAL -j REJECT --reject-with tcp-reset
-A TOLLGATE-REJECT -m conntrack --ctdir ORIGINAL -j REJECT --reject-with icmp6-adm-prohibited
-I OUTPUT 1 -j TOLLGATE-REJECT
-I INPUT 1 -j TOLLGATE-REJECT
COMMIT
)";

RulesetOptions CustomOptions() {
  RulesetOptions o;
  o.queue_first = 2;
  o.queue_last = 3;
  o.fail_open = false;
  o.inbound = true;
  o.mark_mask = 0xe000;
  o.excluded_interfaces = {"eth1", "veth+"};
  return o;
}

TEST(RenderRulesetTest, GoldenIpv4Default) {
  auto text = RenderRuleset(IpFamily::kIpv4, RulesetOptions{});
  ASSERT_TRUE(text.has_value()) << text.error().message;
  EXPECT_EQ(*text, kGoldenIpv4Default);
}

TEST(RenderRulesetTest, GoldenIpv6Custom) {
  auto text = RenderRuleset(IpFamily::kIpv6, CustomOptions());
  ASSERT_TRUE(text.has_value()) << text.error().message;
  EXPECT_EQ(*text, kGoldenIpv6Custom);
}

TEST(RenderRulesetTest, RejectsBadOptions) {
  RulesetOptions o;
  o.mark_mask = 0x00500000;  // not contiguous
  EXPECT_THAT(RenderRuleset(IpFamily::kIpv4, o).error().message,
              HasSubstr("mark mask 0x500000 must be one run of at least 3 contiguous bits"));
  o.mark_mask = 0x3;  // too narrow for six values
  EXPECT_FALSE(RenderRuleset(IpFamily::kIpv4, o).has_value());
  o = RulesetOptions{};
  o.queue_first = 4;
  o.queue_last = 3;
  EXPECT_THAT(RenderRuleset(IpFamily::kIpv4, o).error().message,
              HasSubstr("queue range 4-3 is empty"));
  o = RulesetOptions{};
  o.excluded_interfaces = {"eth0 -j ACCEPT"};
  auto bad = RenderRuleset(IpFamily::kIpv4, o);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(bad.error().message, HasSubstr("excluded interface `eth0 -j ACCEPT`"));
  o.excluded_interfaces = {"eth+0"};  // '+' only at the end
  EXPECT_FALSE(RenderRuleset(IpFamily::kIpv4, o).has_value());
  o.excluded_interfaces = {"a-very-long-interface"};
  EXPECT_FALSE(RenderRuleset(IpFamily::kIpv4, o).has_value());
}

TEST(BackendTest, ResolvesFromEnvironment) {
  EXPECT_EQ(*ResolveBackend(IptablesBackend::kLegacy), IptablesBackend::kLegacy);
  unsetenv("TOLLGATE_IPTABLES_BACKEND");
  EXPECT_EQ(*ResolveBackend(IptablesBackend::kAuto), IptablesBackend::kSystemDefault);
  setenv("TOLLGATE_IPTABLES_BACKEND", "legacy", 1);
  EXPECT_EQ(*ResolveBackend(IptablesBackend::kAuto), IptablesBackend::kLegacy);
  setenv("TOLLGATE_IPTABLES_BACKEND", "nft", 1);
  EXPECT_EQ(*ResolveBackend(IptablesBackend::kAuto), IptablesBackend::kNft);
  setenv("TOLLGATE_IPTABLES_BACKEND", "bogus", 1);
  auto bad = ResolveBackend(IptablesBackend::kAuto);
  ASSERT_FALSE(bad.has_value());
  EXPECT_THAT(bad.error().message, HasSubstr("TOLLGATE_IPTABLES_BACKEND=bogus is not one of"));
  unsetenv("TOLLGATE_IPTABLES_BACKEND");
}

TEST(MarkLayoutTest, ValuesClassifyAndRelease) {
  auto layout = MarkLayout::FromMask(kDefaultMarkMask);
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->Value(MarkValue::kAllow), 0x00100000u);
  EXPECT_EQ(layout->Value(MarkValue::kObserve), 0x00600000u);
  EXPECT_EQ(layout->Classify(0x00600000 | 0xca6c), MarkValue::kObserve);
  EXPECT_EQ(layout->Classify(0xca6c), MarkValue::kNone);
  EXPECT_EQ(layout->Classify(0x00700000), MarkValue::kNone);  // 7 is unused
  // Someone else's bits survive; ours are replaced.
  EXPECT_EQ(layout->ReleaseMark(0x8000ca6c | 0x00600000, MarkValue::kAllow), 0x8010ca6cu);
  EXPECT_EQ(MarkLayout::ForAction(Action::kReject), MarkValue::kReject);
  EXPECT_EQ(MarkLayout::ForAction(Action::kInspect), MarkValue::kInspect);
  EXPECT_FALSE(MarkLayout::FromMask(0).has_value());
  EXPECT_FALSE(MarkLayout::FromMask(0x80000003).has_value());
  EXPECT_TRUE(MarkLayout::FromMask(0xe0000000).has_value());
}

// ------------------------------------------------------------------------------------------------
// Installing (root, in a namespace of its own).

// The lines of one table in iptables-save output.
std::map<std::string, std::vector<std::string>> Tables(const std::string& save) {
  std::map<std::string, std::vector<std::string>> tables;
  std::istringstream in(save);
  std::string line, current;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '*') {
      current = line.substr(1);
      continue;
    }
    tables[current].push_back(line);
  }
  return tables;
}

size_t Count(const std::vector<std::string>& lines, const std::string& line) {
  return static_cast<size_t>(std::count(lines.begin(), lines.end(), line));
}

// Every rule we render appears exactly once, every jump once and first in its built-in chain,
// and nothing else of ours is there.
void ExpectInstalledOnce(IpFamily family, IptablesBackend backend, const RulesetOptions& o) {
  auto rendered = RenderRuleset(family, o);
  ASSERT_TRUE(rendered.has_value());
  auto saved = SaveRules(family, backend);
  ASSERT_TRUE(saved.has_value()) << saved.error().message;
  const auto tables = Tables(*saved);
  const auto want = Tables(*rendered);
  size_t ours_expected = 0;
  for (const auto& [table, lines] : want) {
    ASSERT_TRUE(tables.count(table)) << "table " << table << " missing:\n" << *saved;
    const auto& have = tables.at(table);
    for (const std::string& line : lines) {
      if (line == "COMMIT") continue;
      if (line[0] == ':') {
        EXPECT_EQ(Count(have, line), 1u) << line << "\n" << *saved;
      } else if (line.rfind("-A ", 0) == 0) {
        EXPECT_EQ(Count(have, line), 1u) << line << "\n" << *saved;
      } else if (line.rfind("-I ", 0) == 0) {
        // "-I OUTPUT 1 -j X" is saved as "-A OUTPUT -j X" and must be the chain's first rule.
        std::istringstream words(line);
        std::string dash_i, chain, one, rest;
        words >> dash_i >> chain >> one;
        std::getline(words, rest);
        const std::string saved_line = "-A " + chain + rest;
        EXPECT_EQ(Count(have, saved_line), 1u) << saved_line << "\n" << *saved;
        auto first = std::find_if(have.begin(), have.end(), [&](const std::string& l) {
          return l.rfind("-A " + chain + " ", 0) == 0;
        });
        ASSERT_NE(first, have.end());
        EXPECT_EQ(*first, saved_line) << "our jump is not first in " << chain;
      }
      ++ours_expected;
    }
  }
  size_t ours_seen = 0;
  for (const auto& [table, lines] : tables) {
    for (const std::string& line : lines) {
      // A comment that mentions us is someone else's rule.
      ours_seen +=
          line.find("TOLLGATE") != std::string::npos && line.find("--comment") == std::string::npos;
    }
  }
  EXPECT_EQ(ours_seen, ours_expected) << *saved;
}

void ExpectNothingOfOurs(IptablesBackend backend) {
  for (IpFamily family : {IpFamily::kIpv4, IpFamily::kIpv6}) {
    auto saved = SaveRules(family, backend);
    ASSERT_TRUE(saved.has_value()) << saved.error().message;
    EXPECT_EQ(saved->find("TOLLGATE"), std::string::npos) << *saved;
  }
  auto installed = Installed(backend);
  ASSERT_TRUE(installed.has_value()) << installed.error().message;
  EXPECT_FALSE(*installed);
}

struct BackendCase {
  IptablesBackend backend;
  const char* tool;  // skip the case when this is not installed
  // iptables command of the backend, for planting foreign rules; -w because the legacy tools
  // share one lock file across namespaces with tests running in parallel.
  const char* cmd;
  const char* cmd6;
};

// So ctest lists the case by name instead of its bytes.
void PrintTo(const BackendCase& c, std::ostream* os) { *os << BackendName(c.backend); }

class InstallTest : public ::testing::TestWithParam<BackendCase> {};

TEST_P(InstallTest, InstallTwiceRemoveLeavesOthersAlone) {
  TG_REQUIRE_PRIVILEGED();
  if (!HaveTool(GetParam().tool)) GTEST_SKIP() << GetParam().tool << " is not installed";
  const BackendCase bc = GetParam();
  RunInNetns([bc] {
    // Someone else's rules, which must survive all of this, and stay behind ours.
    ASSERT_TRUE(
        RunCommand(std::string(bc.cmd) + " -t mangle -A OUTPUT -p tcp --dport 1 -j ACCEPT"));
    ASSERT_TRUE(RunCommand(std::string(bc.cmd) + " -A INPUT -p tcp --dport 2 -j ACCEPT"));
    ASSERT_TRUE(RunCommand(std::string(bc.cmd6) + " -A OUTPUT -p udp --dport 3 -j ACCEPT"));
    RulesetOptions o = CustomOptions();
    o.backend = bc.backend;
    auto installed = Installed(bc.backend);
    ASSERT_TRUE(installed.has_value()) << installed.error().message;
    EXPECT_FALSE(*installed);

    auto st = Install(o);
    ASSERT_TRUE(st.has_value()) << st.error().message;
    ExpectInstalledOnce(IpFamily::kIpv4, bc.backend, o);
    ExpectInstalledOnce(IpFamily::kIpv6, bc.backend, o);
    EXPECT_TRUE(*Installed(bc.backend));

    st = Install(o);  // a restart: leftovers of the first run are replaced, not duplicated
    ASSERT_TRUE(st.has_value()) << st.error().message;
    ExpectInstalledOnce(IpFamily::kIpv4, bc.backend, o);
    ExpectInstalledOnce(IpFamily::kIpv6, bc.backend, o);

    // Changed options replace the old ruleset entirely.
    RulesetOptions plain;
    plain.backend = bc.backend;
    st = Install(plain);
    ASSERT_TRUE(st.has_value()) << st.error().message;
    ExpectInstalledOnce(IpFamily::kIpv4, bc.backend, plain);
    ExpectInstalledOnce(IpFamily::kIpv6, bc.backend, plain);

    st = Remove(bc.backend);
    ASSERT_TRUE(st.has_value()) << st.error().message;
    ExpectNothingOfOurs(bc.backend);
    auto v4 = SaveRules(IpFamily::kIpv4, bc.backend);
    EXPECT_THAT(*v4, HasSubstr("-A OUTPUT -p tcp -m tcp --dport 1 -j ACCEPT"));
    EXPECT_THAT(*v4, HasSubstr("-A INPUT -p tcp -m tcp --dport 2 -j ACCEPT"));
    EXPECT_THAT(*SaveRules(IpFamily::kIpv6, bc.backend),
                HasSubstr("-A OUTPUT -p udp -m udp --dport 3 -j ACCEPT"));
    st = Remove(bc.backend);  // nothing left to remove is fine
    EXPECT_TRUE(st.has_value()) << st.error().message;
  });
}

TEST_P(InstallTest, CrashLeftoversAreCleanedDuplicatesAndAll) {
  TG_REQUIRE_PRIVILEGED();
  if (!HaveTool(GetParam().tool)) GTEST_SKIP() << GetParam().tool << " is not installed";
  const BackendCase bc = GetParam();
  RunInNetns([bc] {
    const std::string ipt = bc.cmd;
    // What a crashed older version might have left: duplicate jumps, a chain we no longer use
    // referenced from a built-in chain, from a user chain and from our own chain, in several
    // tables.
    for (const char* c :
         {" -t mangle -N TOLLGATE-OUT", " -t mangle -N TOLLGATE-OLD",
          " -t mangle -A TOLLGATE-OUT -j TOLLGATE-OLD", " -t mangle -A TOLLGATE-OLD -j RETURN",
          " -t mangle -I OUTPUT -j TOLLGATE-OUT", " -t mangle -I OUTPUT -j TOLLGATE-OUT",
          " -t mangle -A POSTROUTING -p udp -j TOLLGATE-OLD", " -t mangle -N USER-CHAIN",
          " -t mangle -A USER-CHAIN -g TOLLGATE-OLD", " -t raw -N TOLLGATE-RAW",
          " -t raw -A PREROUTING -j TOLLGATE-RAW",
          " -t raw -A PREROUTING -m comment --comment \"-j TOLLGATE-RAW\" -j RETURN"}) {
      ASSERT_TRUE(RunCommand(ipt + c));
    }
    EXPECT_TRUE(*Installed(bc.backend));
    RulesetOptions o;
    o.backend = bc.backend;
    auto st = Install(o);
    ASSERT_TRUE(st.has_value()) << st.error().message;
    ExpectInstalledOnce(IpFamily::kIpv4, bc.backend, o);
    auto saved = SaveRules(IpFamily::kIpv4, bc.backend);
    EXPECT_THAT(*saved, HasSubstr(":USER-CHAIN"));  // not ours: kept, only its jump went
    // A comment that merely mentions our chain is not a jump to it.
    EXPECT_THAT(*saved, HasSubstr("--comment \"-j TOLLGATE-RAW\" -j RETURN"));
    ASSERT_TRUE(Remove(bc.backend).has_value());
    saved = SaveRules(IpFamily::kIpv4, bc.backend);
    std::istringstream lines(*saved);
    for (std::string line; std::getline(lines, line);) {
      if (line.find("--comment") != std::string::npos) continue;
      EXPECT_EQ(line.find("TOLLGATE"), std::string::npos) << line;
    }
  });
}

INSTANTIATE_TEST_SUITE_P(
    Backends, InstallTest,
    ::testing::Values(BackendCase{IptablesBackend::kSystemDefault, "iptables-restore",
                                  "iptables -w", "ip6tables -w"},
                      BackendCase{IptablesBackend::kLegacy, "iptables-legacy-restore",
                                  "iptables-legacy -w", "ip6tables-legacy -w"},
                      BackendCase{IptablesBackend::kNft, "iptables-nft-restore", "iptables-nft -w",
                                  "ip6tables-nft -w"}),
    [](const auto& param_info) { return std::string(BackendName(param_info.param.backend)); });

TEST(InstallAcrossBackendsTest, InstallSweepsTheOtherBackend) {
  TG_REQUIRE_PRIVILEGED();
  if (!HaveTool("iptables-legacy-restore") || !HaveTool("iptables-nft-restore")) {
    GTEST_SKIP() << "needs both iptables backends";
  }
  RunInNetns([] {
    RulesetOptions legacy;
    legacy.backend = IptablesBackend::kLegacy;
    ASSERT_TRUE(Install(legacy).has_value());
    EXPECT_TRUE(*Installed(IptablesBackend::kLegacy));
    RulesetOptions nft;
    nft.backend = IptablesBackend::kNft;
    auto st = Install(nft);
    ASSERT_TRUE(st.has_value()) << st.error().message;
    // Both kernel interfaces run at once; a leftover legacy chain would still queue packets.
    EXPECT_FALSE(*Installed(IptablesBackend::kLegacy));
    EXPECT_TRUE(*Installed(IptablesBackend::kNft));
    ASSERT_TRUE(Install(legacy).has_value());
    EXPECT_FALSE(*Installed(IptablesBackend::kNft));
    ASSERT_TRUE(Remove(IptablesBackend::kLegacy).has_value());
    ExpectNothingOfOurs(IptablesBackend::kLegacy);
    ExpectNothingOfOurs(IptablesBackend::kNft);
  });
}

TEST(InstallFailureTest, BadBackendInTheEnvironmentIsRefusedBeforeAnyChange) {
  TG_REQUIRE_PRIVILEGED();
  RunInNetns([] {
    RulesetOptions o;
    o.backend = IptablesBackend::kAuto;
    setenv("TOLLGATE_IPTABLES_BACKEND", "nonsense", 1);
    auto st = Install(o);
    unsetenv("TOLLGATE_IPTABLES_BACKEND");
    ASSERT_FALSE(st.has_value());
    EXPECT_THAT(st.error().message, HasSubstr("TOLLGATE_IPTABLES_BACKEND=nonsense"));
  });
}

// ------------------------------------------------------------------------------------------------
// The ruleset at work: real loopback traffic through the installed chains and a real queue.

class RulesetTest : public ::testing::TestWithParam<std::tuple<int, IptablesBackend>> {
 protected:
  static constexpr uint16_t kQueue = 0;

  // Installs the ruleset (fail-closed, so a missing verdict shows) and opens the queue.
  static std::optional<NfQueue> Setup(IptablesBackend backend) {
    RulesetOptions o;
    o.backend = backend;
    o.fail_open = false;
    auto st = Install(o);
    EXPECT_TRUE(st.has_value()) << st.error().message;
    if (!st) return std::nullopt;
    auto q = NfQueue::Open(kQueue, NfQueueOptions{});
    EXPECT_TRUE(q.has_value()) << q.error().message;
    if (!q) return std::nullopt;
    return std::move(*q);
  }

  static void Release(NfQueue& q, const Captured& c, MarkValue v) {
    const MarkLayout layout{kDefaultMarkMask};
    ASSERT_TRUE(q.Verdict(c.meta.queue, c.meta.packet_id, PacketVerdict::kRepeat,
                          layout.ReleaseMark(c.meta.mark, v))
                    .has_value());
    ASSERT_TRUE(q.FlushVerdicts().has_value());
  }

  static MarkValue FieldOf(const Captured& c) {
    return MarkLayout{kDefaultMarkMask}.Classify(c.meta.mark);
  }

  int family() const { return std::get<0>(GetParam()); }
  IptablesBackend backend() const { return std::get<1>(GetParam()); }
  bool BackendMissing() const {
    return backend() == IptablesBackend::kLegacy && !HaveTool("iptables-legacy-restore");
  }

  static UniqueFd Connect(int family, uint16_t port) {
    UniqueFd fd(socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    auto to = Loopback(family, port);
    const int rc = connect(fd.get(), reinterpret_cast<sockaddr*>(&to), testing::AddrLen(family));
    EXPECT_TRUE(rc == 0 || errno == EINPROGRESS) << std::strerror(errno);
    return fd;
  }

  static int SoError(int fd) {
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    return err;
  }
};

TEST_P(RulesetTest, AllowedTcpFlowIsDecidedOnceThenStaysInTheKernel) {
  TG_REQUIRE_PRIVILEGED();
  if (BackendMissing()) GTEST_SKIP() << "iptables-legacy is not installed";
  const int fam = family();
  const IptablesBackend be = backend();
  RunInNetns([fam, be] {
    auto q = Setup(be);
    ASSERT_TRUE(q.has_value());
    auto listener = BoundSocket(fam, SOCK_STREAM, 0);
    auto client = Connect(fam, PortOf(listener.get()));
    auto syn = CollectQueued(*q, 1);
    ASSERT_EQ(syn.size(), 1u);
    EXPECT_EQ(syn[0].tuple.dst_port, PortOf(listener.get()));
    EXPECT_EQ(syn[0].tcp_flags & (TH_SYN | TH_ACK), TH_SYN);
    EXPECT_EQ(FieldOf(syn[0]), MarkValue::kNone);
    EXPECT_EQ(syn[0].meta.hook, QueueHook::kLocalOut);
    Release(*q, syn[0], MarkValue::kAllow);

    ASSERT_TRUE(WaitFor(client.get(), POLLOUT, 2000) & POLLOUT);
    EXPECT_EQ(SoError(client.get()), 0);
    UniqueFd server(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(server.valid());
    // A megabyte each way: not one more packet may reach the queue.
    std::vector<char> block(64 * 1024, 'x');
    size_t sent = 0, received = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (received < (1u << 20) && std::chrono::steady_clock::now() < deadline) {
      if (sent < (1u << 20)) {
        ssize_t w = send(client.get(), block.data(), block.size(), MSG_DONTWAIT);
        if (w > 0) sent += static_cast<size_t>(w);
      }
      WaitFor(server.get(), POLLIN, 100);
      ssize_t r = recv(server.get(), block.data(), block.size(), MSG_DONTWAIT);
      if (r > 0) received += static_cast<size_t>(r);
      if (r == 0) break;
    }
    EXPECT_EQ(received, 1u << 20);
    EXPECT_TRUE(CollectQueued(*q, 1, 200).empty());
    EXPECT_EQ(q->counters().received, 1u);
  });
}

TEST_P(RulesetTest, RejectedTcpFlowFailsFastWithReset) {
  TG_REQUIRE_PRIVILEGED();
  if (BackendMissing()) GTEST_SKIP() << "iptables-legacy is not installed";
  const int fam = family();
  const IptablesBackend be = backend();
  RunInNetns([fam, be] {
    auto q = Setup(be);
    ASSERT_TRUE(q.has_value());
    auto listener = BoundSocket(fam, SOCK_STREAM, 0);
    auto client = Connect(fam, PortOf(listener.get()));
    auto syn = CollectQueued(*q, 1);
    ASSERT_EQ(syn.size(), 1u);
    Release(*q, syn[0], MarkValue::kReject);
    ASSERT_NE(WaitFor(client.get(), POLLOUT, 1000), 0) << "no RST came back";
    EXPECT_EQ(SoError(client.get()), ECONNREFUSED);
  });
}

TEST_P(RulesetTest, DeniedTcpFlowIsDroppedAndItsRetransmitAsksAgain) {
  TG_REQUIRE_PRIVILEGED();
  if (BackendMissing()) GTEST_SKIP() << "iptables-legacy is not installed";
  const int fam = family();
  const IptablesBackend be = backend();
  RunInNetns([fam, be] {
    auto q = Setup(be);
    ASSERT_TRUE(q.has_value());
    auto listener = BoundSocket(fam, SOCK_STREAM, 0);
    auto client = Connect(fam, PortOf(listener.get()));
    auto syn = CollectQueued(*q, 1);
    ASSERT_EQ(syn.size(), 1u);
    Release(*q, syn[0], MarkValue::kDeny);
    EXPECT_EQ(WaitFor(client.get(), POLLOUT, 300), 0) << "a denied connect must hang";
    // The kernel forgets the verdict with the dropped SYN's unconfirmed conntrack entry: the
    // retransmission (after ~1 s) is a new flow to it and comes to the queue again. The filter
    // has to remember recent deny verdicts itself.
    auto again = CollectQueued(*q, 1, 3000);
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].tuple, syn[0].tuple);
    EXPECT_EQ(FieldOf(again[0]), MarkValue::kNone);
    Release(*q, again[0], MarkValue::kDeny);
  });
}

TEST_P(RulesetTest, InspectLetsTheHandshakeThroughAndHoldsClientData) {
  TG_REQUIRE_PRIVILEGED();
  if (BackendMissing()) GTEST_SKIP() << "iptables-legacy is not installed";
  const int fam = family();
  const IptablesBackend be = backend();
  RunInNetns([fam, be] {
    auto q = Setup(be);
    ASSERT_TRUE(q.has_value());
    auto listener = BoundSocket(fam, SOCK_STREAM, 0);
    auto client = Connect(fam, PortOf(listener.get()));
    auto syn = CollectQueued(*q, 1);
    ASSERT_EQ(syn.size(), 1u);
    Release(*q, syn[0], MarkValue::kInspect);
    ASSERT_TRUE(WaitFor(client.get(), POLLOUT, 2000) & POLLOUT);
    EXPECT_EQ(SoError(client.get()), 0);
    ASSERT_EQ(send(client.get(), "hello", 5, 0), 5);
    // Client-side packets now come to the queue: the handshake's last ACK (no payload: let it
    // through with kPass) and the data, which is held until we decide. Decide quickly: a hold
    // past the 200 ms minimum RTO would queue a retransmission too.
    UniqueFd server;
    bool decided = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (!decided && std::chrono::steady_clock::now() < deadline) {
      for (const Captured& c : CollectQueued(*q, 1, 500)) {
        EXPECT_EQ(FieldOf(c), MarkValue::kNone);
        if (c.payload_size == 0) {
          Release(*q, c, MarkValue::kPass);
          continue;
        }
        EXPECT_EQ(c.payload_size, 5u);
        EXPECT_EQ(std::string(c.bytes.end() - 5, c.bytes.end()), "hello");
        server.Reset(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (server.valid()) {
          EXPECT_EQ(WaitFor(server.get(), POLLIN, 50), 0) << "data got through";
        }
        Release(*q, c, MarkValue::kAllow);
        decided = true;
      }
    }
    ASSERT_TRUE(decided);
    if (!server.valid()) {  // the data segment itself completed the handshake
      ASSERT_TRUE(WaitFor(listener.get(), POLLIN, 1000) & POLLIN);
      server.Reset(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    }
    ASSERT_TRUE(server.valid());
    ASSERT_TRUE(WaitFor(server.get(), POLLIN, 1000) & POLLIN);
    char buf[16];
    EXPECT_EQ(recv(server.get(), buf, sizeof(buf), 0), 5);
    // Allowed now: the rest of the flow stays in the kernel.
    ASSERT_EQ(send(client.get(), "more", 4, 0), 4);
    ASSERT_TRUE(WaitFor(server.get(), POLLIN, 1000) & POLLIN);
    EXPECT_EQ(recv(server.get(), buf, sizeof(buf), 0), 4);
    EXPECT_TRUE(CollectQueued(*q, 1, 200).empty());
  });
}

TEST_P(RulesetTest, UdpFlowIsDecidedAndDnsRepliesAreObservedNeverHeld) {
  TG_REQUIRE_PRIVILEGED();
  if (BackendMissing()) GTEST_SKIP() << "iptables-legacy is not installed";
  const int fam = family();
  const IptablesBackend be = backend();
  RunInNetns([fam, be] {
    auto q = Setup(be);
    ASSERT_TRUE(q.has_value());
    auto resolver = BoundSocket(fam, SOCK_DGRAM, 53);
    auto client = BoundSocket(fam, SOCK_DGRAM, 0);
    auto to = Loopback(fam, 53);
    auto query = [&] {
      ASSERT_EQ(sendto(client.get(), "query", 5, 0, reinterpret_cast<sockaddr*>(&to),
                       testing::AddrLen(fam)),
                5);
    };
    auto answer = [&] {
      ASSERT_TRUE(WaitFor(resolver.get(), POLLIN, 1000) & POLLIN);
      sockaddr_storage from{};
      socklen_t len = sizeof(from);
      char b[16];
      ASSERT_EQ(recvfrom(resolver.get(), b, sizeof(b), 0, reinterpret_cast<sockaddr*>(&from), &len),
                5);
      ASSERT_EQ(sendto(resolver.get(), "answer!", 7, 0, reinterpret_cast<sockaddr*>(&from), len),
                7);
    };

    query();
    auto q1 = CollectQueued(*q, 1);
    ASSERT_EQ(q1.size(), 1u);
    EXPECT_EQ(q1[0].tuple.dst_port, 53);
    EXPECT_EQ(FieldOf(q1[0]), MarkValue::kNone);
    Release(*q, q1[0], MarkValue::kAllow);
    answer();
    auto r1 = CollectQueued(*q, 1);
    ASSERT_EQ(r1.size(), 1u);
    EXPECT_EQ(FieldOf(r1[0]), MarkValue::kObserve);
    EXPECT_EQ(r1[0].meta.hook, QueueHook::kLocalIn);
    EXPECT_EQ(r1[0].tuple.src_port, 53);
    EXPECT_EQ(r1[0].payload_size, 7u);
    Release(*q, r1[0], MarkValue::kPass);
    EXPECT_TRUE(DatagramArrives(client.get(), 1000));

    // Same flow again: the query stays in the kernel (allowed), the reply is observed again;
    // NF_ACCEPT is the other way to let an observation go.
    query();
    answer();
    auto r2 = CollectQueued(*q, 1);
    ASSERT_EQ(r2.size(), 1u);
    EXPECT_EQ(FieldOf(r2[0]), MarkValue::kObserve);
    ASSERT_TRUE(
        q->Verdict(r2[0].meta.queue, r2[0].meta.packet_id, PacketVerdict::kAccept).has_value());
    ASSERT_TRUE(q->FlushVerdicts().has_value());
    EXPECT_TRUE(DatagramArrives(client.get(), 1000));
    EXPECT_TRUE(CollectQueued(*q, 1, 200).empty());
    EXPECT_EQ(q->counters().received, 3u);
  });
}

uint16_t Checksum(const uint8_t* data, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(data[i] << 8 | data[i + 1]);
  if (len % 2) sum += static_cast<uint32_t>(data[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

TEST_P(RulesetTest, IcmpEchoIsDecidedRejectAndAllow) {
  TG_REQUIRE_PRIVILEGED();
  if (BackendMissing()) GTEST_SKIP() << "iptables-legacy is not installed";
  const int fam = family();
  const IptablesBackend be = backend();
  RunInNetns([fam, be] {
    auto q = Setup(be);
    ASSERT_TRUE(q.has_value());
    const bool v4 = fam == AF_INET;
    UniqueFd raw(socket(fam, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK,
                        v4 ? int{IPPROTO_ICMP} : int{IPPROTO_ICMPV6}));
    ASSERT_TRUE(raw.valid());
    auto ping = [&](uint16_t id) {
      uint8_t msg[16] = {static_cast<uint8_t>(v4 ? ICMP_ECHO : ICMP6_ECHO_REQUEST),
                         0,
                         0,
                         0,
                         static_cast<uint8_t>(id >> 8),
                         static_cast<uint8_t>(id),
                         0,
                         1};
      if (v4) {
        const uint16_t sum = Checksum(msg, sizeof(msg));
        msg[2] = static_cast<uint8_t>(sum >> 8);
        msg[3] = static_cast<uint8_t>(sum);
      }  // the kernel fills in the ICMPv6 checksum
      auto to = Loopback(fam, 0);
      ASSERT_EQ(sendto(raw.get(), msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&to),
                       testing::AddrLen(fam)),
                static_cast<ssize_t>(sizeof(msg)));
    };
    // Waits for an ICMP message of `type`, skipping the others a raw socket also sees.
    auto expect_type = [&](uint8_t type) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      while (std::chrono::steady_clock::now() < deadline) {
        if (!(WaitFor(raw.get(), POLLIN, 200) & POLLIN)) continue;
        uint8_t buf[256];
        const ssize_t n = recv(raw.get(), buf, sizeof(buf), 0);
        if (n <= 0) continue;
        const size_t off =
            v4 ? static_cast<size_t>(buf[0] & 0x0f) * 4 : 0;  // v4 raw has the IP header
        if (static_cast<size_t>(n) > off && buf[off] == type) return true;
      }
      return false;
    };

    ping(0x1111);
    auto req = CollectQueued(*q, 1);
    ASSERT_EQ(req.size(), 1u);
    EXPECT_EQ(req[0].tuple.src_port, v4 ? int{ICMP_ECHO} : int{ICMP6_ECHO_REQUEST});
    Release(*q, req[0], MarkValue::kReject);
    EXPECT_TRUE(expect_type(v4 ? ICMP_DEST_UNREACH : ICMP6_DST_UNREACH)) << "no admin-prohibited";

    ping(0x2222);  // another identifier: another flow
    req = CollectQueued(*q, 1);
    ASSERT_EQ(req.size(), 1u);
    Release(*q, req[0], MarkValue::kAllow);
    EXPECT_TRUE(expect_type(v4 ? ICMP_ECHOREPLY : ICMP6_ECHO_REPLY));
  });
}

TEST_P(RulesetTest, WithoutAReaderFailOpenPassesAndFailClosedDrops) {
  TG_REQUIRE_PRIVILEGED();
  if (BackendMissing()) GTEST_SKIP() << "iptables-legacy is not installed";
  const int fam = family();
  const IptablesBackend be = backend();
  RunInNetns([fam, be] {
    auto rx = BoundSocket(fam, SOCK_DGRAM, 0);
    auto tx = BoundSocket(fam, SOCK_DGRAM, 0);
    auto to = Loopback(fam, PortOf(rx.get()));
    // No result check: what sendto reports for a packet the queue could not take is not ours.
    auto send_one = [&] {
      (void)sendto(tx.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&to), testing::AddrLen(fam));
    };
    RulesetOptions o;
    o.backend = be;
    o.fail_open = true;
    ASSERT_TRUE(Install(o).has_value());
    send_one();
    EXPECT_TRUE(DatagramArrives(rx.get(), 500)) << "--queue-bypass with no reader";
    // A new flow (another source port) under fail-closed: dropped.
    o.fail_open = false;
    ASSERT_TRUE(Install(o).has_value());
    tx = BoundSocket(fam, SOCK_DGRAM, 0);
    send_one();
    EXPECT_FALSE(DatagramArrives(rx.get(), 300));
    ASSERT_TRUE(Remove(be).has_value());
  });
}

INSTANTIATE_TEST_SUITE_P(FamiliesAndBackends, RulesetTest,
                         ::testing::Combine(::testing::Values(AF_INET, AF_INET6),
                                            ::testing::Values(IptablesBackend::kSystemDefault,
                                                              IptablesBackend::kLegacy)),
                         [](const auto& param_info) {
                           return std::string(std::get<0>(param_info.param) == AF_INET ? "Ipv4"
                                                                                       : "Ipv6") +
                                  "_" + BackendName(std::get<1>(param_info.param));
                         });

}  // namespace
}  // namespace tollgate::platform
