#include "ipc/peer.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace tollgate::ipc {
namespace {

constexpr uint32_t kGroup = 999;
const std::string kHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const std::string kOtherHash = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

PeerFacts Peer(uint32_t uid, uint32_t gid, std::vector<uint32_t> groups = {},
               bool groups_known = true) {
  PeerFacts f;
  f.uid = uid;
  f.gid = gid;
  f.pid = 123;
  f.groups = std::move(groups);
  f.groups_known = groups_known;
  f.exe_path = "/usr/bin/tollgate-filter";
  f.exe_sha256 = kHash;
  f.exe_known = true;
  f.exe_from_pidfd = true;
  return f;
}

PeerPolicy Policy(std::vector<ExeAllowEntry> allowlist = {}) {
  PeerPolicy p;
  p.group_gid = kGroup;
  p.group_name = "tollgate";
  p.exe_allowlist = std::move(allowlist);
  return p;
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  return s;
}

struct ClientCase {
  const char* name;
  PeerPolicy policy;
  PeerFacts peer;
  bool allowed;
  std::vector<std::string> reason_has;  // every fragment must appear in the reason
};

// Test names (and ctest's) show the case name, not the bytes of the struct.
void PrintTo(const ClientCase& c, std::ostream* os) { *os << c.name; }

class DecideClientTest : public ::testing::TestWithParam<ClientCase> {};

TEST_P(DecideClientTest, DecidesWithSpecificReason) {
  const ClientCase& c = GetParam();
  PeerDecision d = DecideClient(c.policy, c.peer);
  EXPECT_EQ(d.allowed, c.allowed) << d.reason;
  EXPECT_FALSE(d.reason.empty());
  for (const std::string& fragment : c.reason_has) {
    EXPECT_NE(d.reason.find(fragment), std::string::npos)
        << "reason \"" << d.reason << "\" lacks \"" << fragment << "\"";
  }
}

PeerFacts ExeUnknown(PeerFacts f, const char* why) {
  f.exe_known = false;
  f.exe_from_pidfd = false;
  f.exe_path.clear();
  f.exe_sha256.clear();
  f.exe_unknown_reason = why;
  return f;
}

PeerFacts WithHash(PeerFacts f, std::string hash, std::string unavailable = {}) {
  f.exe_sha256 = std::move(hash);
  f.exe_sha256_unavailable_reason = std::move(unavailable);
  return f;
}

PeerFacts WithPid(PeerFacts f, bool from_pidfd) {
  f.exe_from_pidfd = from_pidfd;
  return f;
}

PeerPolicy RootOnly() {
  PeerPolicy p;  // group_gid stays 0xffffffff
  return p;
}

const ExeAllowEntry kFilterAnyContent{"/usr/bin/tollgate-filter", ""};
const ExeAllowEntry kFilterPinned{"/usr/bin/tollgate-filter", kHash};

INSTANTIATE_TEST_SUITE_P(
    peer, DecideClientTest,
    ::testing::Values(
        ClientCase{"RootAdmitted", Policy(), Peer(0, 0), true, {"uid 0", "root"}},
        ClientCase{"RootAdmittedWithoutGroupConfigured", RootOnly(), Peer(0, 0), true, {"root"}},
        ClientCase{"PrimaryGroupAdmitted",
                   Policy(),
                   Peer(1000, kGroup),
                   true,
                   {"primary", "\"tollgate\" (gid 999)"}},
        ClientCase{"SupplementaryGroupAdmitted",
                   Policy(),
                   Peer(1000, 1000, {4, kGroup, 27}),
                   true,
                   {"supplementary"}},
        ClientCase{"NotInGroupRefused",
                   Policy(),
                   Peer(65534, 65534, {100}),
                   false,
                   {"uid 65534 (pid 123, exe /usr/bin/tollgate-filter) is not root and not in "
                    "group \"tollgate\" (gid 999)"}},
        ClientCase{"GroupsUnknownPrimaryStillCounts",
                   Policy(),
                   Peer(1000, kGroup, {}, /*groups_known=*/false),
                   true,
                   {"primary"}},
        // With groups unknown, a supplementary list (which should not be trusted) is ignored.
        ClientCase{"GroupsUnknownRefusedWithReason",
                   Policy(),
                   Peer(1000, 1000, {kGroup}, /*groups_known=*/false),
                   false,
                   {"primary gid 1000", "supplementary groups were unavailable"}},
        ClientCase{"NoGroupConfiguredRefusesNonRoot",
                   RootOnly(),
                   Peer(1000, 1000),
                   false,
                   {"only root is admitted"}},
        // (uid_t)-1 / (gid_t)-1 is what the kernel reports for a socket without credentials; it
        // must not match "no group configured".
        ClientCase{"NoCredentialsNeverMatchUnsetGroup",
                   RootOnly(),
                   Peer(0xffffffffu, 0xffffffffu, {0xffffffffu}),
                   false,
                   {"only root"}},
        ClientCase{"GroupNameMissingStillSaysGid",
                   [] {
                     PeerPolicy p = Policy();
                     p.group_name.clear();
                     return p;
                   }(),
                   Peer(1000, 1000),
                   false,
                   {"not in group gid 999"}},
        ClientCase{"AllowlistPathMatchNoHash",
                   Policy({kFilterAnyContent}),
                   Peer(1000, kGroup),
                   true,
                   {"on the allowlist"}},
        ClientCase{"AllowlistPathMismatchRefused",
                   Policy({{"/usr/sbin/tollgate-filter", ""}}),
                   Peer(1000, kGroup),
                   false,
                   {"not on the executable allowlist", "/usr/bin/tollgate-filter"}},
        // Exact match only: a prefix or a "(deleted)" suffix is a different path.
        ClientCase{"AllowlistDeletedBinaryRefused",
                   Policy({kFilterAnyContent}),
                   [] {
                     PeerFacts f = Peer(1000, kGroup);
                     f.exe_path += " (deleted)";
                     return f;
                   }(),
                   false,
                   {"(deleted)", "not on the executable allowlist"}},
        // A peer-chosen path must not be able to forge log lines.
        ClientCase{"ControlCharactersInPathAreEscaped",
                   Policy(),
                   [] {
                     PeerFacts f = Peer(1000, 1000);
                     f.exe_path = "/tmp/x\n<3>tollgated: fake";
                     return f;
                   }(),
                   false,
                   {"exe /tmp/x\\x0a<3>tollgated: fake)"}},
        ClientCase{"AllowlistHashMatchAdmitted",
                   Policy({kFilterPinned}),
                   Peer(1000, kGroup),
                   true,
                   {"verified"}},
        ClientCase{"AllowlistHashMismatchRefused",
                   Policy({kFilterPinned}),
                   WithHash(Peer(1000, kGroup), kOtherHash),
                   false,
                   {"sha256 " + kOtherHash, "expected " + kHash}},
        ClientCase{"AllowlistUppercaseHashInConfigMatches",
                   Policy({{"/usr/bin/tollgate-filter", Upper(kHash)}}),
                   Peer(1000, kGroup),
                   true,
                   {"verified"}},
        ClientCase{"AllowlistUppercaseHashFromPeerMatches",
                   Policy({kFilterPinned}),
                   WithHash(Peer(1000, kGroup), Upper(kHash)),
                   true,
                   {"verified"}},
        ClientCase{"AllowlistSecondEntryForSamePathMatches",
                   Policy({{"/usr/bin/tollgate-filter", kOtherHash}, kFilterPinned}),
                   Peer(1000, kGroup),
                   true,
                   {"verified"}},
        ClientCase{"AllowlistMalformedHashInConfigRefused",
                   Policy({{"/usr/bin/tollgate-filter", "abc"}}),
                   Peer(1000, kGroup),
                   false,
                   {"malformed sha256"}},
        ClientCase{"AllowlistHashNotComputedRefused",
                   Policy({kFilterPinned}),
                   WithHash(Peer(1000, kGroup), "", "executable is larger than 1 GiB"),
                   false,
                   {"hash is unavailable", "larger than 1 GiB"}},
        ClientCase{"AllowlistExeUnknownRefused",
                   Policy({kFilterAnyContent}),
                   ExeUnknown(Peer(1000, kGroup), "peer process exited"),
                   false,
                   {"executable identity unavailable: peer process exited", "exe unknown"}},
        // The allowlist applies to root too.
        ClientCase{"AllowlistAppliesToRoot",
                   Policy({kFilterPinned}),
                   WithHash(Peer(0, 0), kOtherHash),
                   false,
                   {"does not match"}},
        ClientCase{"ExeUnknownWithoutAllowlistAdmitted",
                   Policy(),
                   ExeUnknown(Peer(1000, kGroup), "peer process exited"),
                   true,
                   {"exe unknown"}},
        // Group refusal comes first: an allowlisted binary run by an outsider is still refused.
        ClientCase{"GroupRefusalBeforeAllowlist",
                   Policy({kFilterAnyContent}),
                   Peer(1000, 1000),
                   false,
                   {"not in group"}},
        ClientCase{"PidFallbackIsNamedInReason",
                   Policy({kFilterAnyContent}),
                   WithPid(Peer(1000, kGroup), /*from_pidfd=*/false),
                   true,
                   {"pid reuse"}}),
    [](const ::testing::TestParamInfo<ClientCase>& param_info) { return param_info.param.name; });

struct DaemonCase {
  const char* name;
  uint32_t expected_uid;
  uint32_t daemon_uid;
  bool allowed;
  const char* reason_has;
};

void PrintTo(const DaemonCase& c, std::ostream* os) { *os << c.name; }

class DecideDaemonTest : public ::testing::TestWithParam<DaemonCase> {};

TEST_P(DecideDaemonTest, Decides) {
  const DaemonCase& c = GetParam();
  PeerFacts daemon = Peer(c.daemon_uid, c.daemon_uid);
  PeerDecision d = DecideDaemon(c.expected_uid, daemon);
  EXPECT_EQ(d.allowed, c.allowed) << d.reason;
  EXPECT_NE(d.reason.find(c.reason_has), std::string::npos) << d.reason;
}

INSTANTIATE_TEST_SUITE_P(
    peer, DecideDaemonTest,
    ::testing::Values(DaemonCase{"RootAlwaysAccepted", 998, 0, true, "is root"},
                      DaemonCase{"ExpectedUidAccepted", 998, 998, true, "expected uid"},
                      DaemonCase{"OtherUidRefused", 998, 1000, false,
                                 "uid 1000 (pid 123, exe /usr/bin/tollgate-filter), expected root "
                                 "or uid 998"},
                      DaemonCase{"NoExpectedUidMeansRootOnly", 0xffffffffu, 1000, false,
                                 "expected root;"},
                      DaemonCase{"NoCredentialsNeverMatchUnsetUid", 0xffffffffu, 0xffffffffu, false,
                                 "expected root;"}),
    [](const ::testing::TestParamInfo<DaemonCase>& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace tollgate::ipc
