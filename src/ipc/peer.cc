#include "ipc/peer.h"

#include <algorithm>
#include <cstdio>
#include <string_view>

namespace tollgate::ipc {
namespace {

// 0xffffffff is (uid_t)-1: the kernel's "no credentials" value (SO_PEERCRED on a socket without
// peer credentials) and our "nothing configured". It must never match anything, or a peer with
// no credentials would satisfy a policy that configured no group.
constexpr uint32_t kNoId = 0xffffffffu;

std::string Lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  return out;
}

bool IsSha256Hex(std::string_view text) {
  if (text.size() != 64) return false;
  return std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

// A path chosen by the peer ends up in our log and in the refusal it reads: control characters
// are escaped so a crafted file name cannot forge log lines.
std::string Printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c != 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

// "uid 65534 (pid 123, exe /usr/bin/foo)": who the peer is, in every message about it.
std::string DescribePeer(const PeerFacts& peer) {
  std::string out = "uid " + std::to_string(peer.uid) + " (pid ";
  out += peer.pid > 0 ? std::to_string(peer.pid) : std::string("unknown");
  out += ", exe ";
  out += peer.exe_known ? Printable(peer.exe_path) : std::string("unknown");
  out += ")";
  return out;
}

std::string DescribeGroup(const PeerPolicy& policy) {
  if (policy.group_name.empty()) return "group gid " + std::to_string(policy.group_gid);
  return "group \"" + policy.group_name + "\" (gid " + std::to_string(policy.group_gid) + ")";
}

PeerDecision Refuse(std::string reason) { return PeerDecision{false, std::move(reason)}; }

// The group rule alone. On success `why` says how the peer qualified.
PeerDecision CheckGroup(const PeerPolicy& policy, const PeerFacts& peer) {
  const std::string who = DescribePeer(peer);
  if (peer.uid == 0) return PeerDecision{true, who + " is root"};
  if (policy.group_gid == kNoId) {
    return Refuse(who + " is not root and no app group is configured, so only root is admitted");
  }
  if (peer.gid == policy.group_gid) {
    return PeerDecision{true, who + " has primary " + DescribeGroup(policy)};
  }
  if (peer.groups_known &&
      std::find(peer.groups.begin(), peer.groups.end(), policy.group_gid) != peer.groups.end()) {
    return PeerDecision{true, who + " is a supplementary member of " + DescribeGroup(policy)};
  }
  if (!peer.groups_known) {
    return Refuse(who + " is not root and its primary gid " + std::to_string(peer.gid) +
                  " is not " + DescribeGroup(policy) +
                  "; its supplementary groups were unavailable from the kernel, so membership "
                  "through them could not be checked");
  }
  return Refuse(who + " is not root and not in " + DescribeGroup(policy));
}

// The allowlist rule alone; only called with a non-empty allowlist.
PeerDecision CheckExecutable(const std::vector<ExeAllowEntry>& allowlist, const PeerFacts& peer) {
  const std::string who = DescribePeer(peer);
  if (!peer.exe_known) {
    const std::string& why = peer.exe_unknown_reason.empty() ? std::string("no reason given")
                                                             : Printable(peer.exe_unknown_reason);
    return Refuse("executable identity unavailable: " + why + "; refusing " + who +
                  " because an executable allowlist is configured");
  }
  // The same path may appear more than once (e.g. old and new hash during an upgrade): any
  // matching entry admits.
  bool path_listed = false;
  std::string mismatch;
  for (const ExeAllowEntry& entry : allowlist) {
    if (entry.path != peer.exe_path) continue;
    path_listed = true;
    if (entry.sha256.empty()) {
      return PeerDecision{true, "executable " + Printable(peer.exe_path) + " is on the allowlist"};
    }
    if (!IsSha256Hex(entry.sha256)) {
      mismatch = "the allowlist entry for " + Printable(entry.path) + " has a malformed sha256 \"" +
                 Printable(entry.sha256) + "\" (expected 64 hex digits); fix the configuration";
      continue;
    }
    if (peer.exe_sha256.empty()) {
      const std::string& why = peer.exe_sha256_unavailable_reason.empty()
                                   ? std::string("it was not computed")
                                   : Printable(peer.exe_sha256_unavailable_reason);
      mismatch = "the allowlist pins a sha256 for " + Printable(entry.path) +
                 " but the executable's hash is unavailable: " + why;
      continue;
    }
    if (Lowercase(entry.sha256) == Lowercase(peer.exe_sha256)) {
      return PeerDecision{true, "executable " + Printable(peer.exe_path) +
                                    " is on the allowlist (sha256 " + Lowercase(peer.exe_sha256) +
                                    " verified)"};
    }
    mismatch = "executable sha256 " + Printable(Lowercase(peer.exe_sha256)) +
               " does not match the allowlist entry for " + Printable(entry.path) + " (expected " +
               Lowercase(entry.sha256) + "); update the entry if the binary was upgraded";
  }
  if (!path_listed) {
    return Refuse(who + " is not on the executable allowlist; add " + Printable(peer.exe_path) +
                  " to it if this program should connect");
  }
  return Refuse(who + ": " + mismatch);
}

}  // namespace

PeerDecision DecideClient(const PeerPolicy& policy, const PeerFacts& peer) {
  PeerDecision group = CheckGroup(policy, peer);
  if (!group.allowed) return group;
  // The allowlist applies to root as well: it pins which programs speak the protocol, which is
  // about correctness of the channel as much as about privilege.
  if (policy.exe_allowlist.empty()) return group;
  PeerDecision exe = CheckExecutable(policy.exe_allowlist, peer);
  if (!exe.allowed) return exe;
  std::string reason = group.reason + "; " + exe.reason;
  if (!peer.exe_from_pidfd) reason += " (identified by pid, not pidfd: pid reuse was possible)";
  return PeerDecision{true, std::move(reason)};
}

PeerDecision DecideDaemon(uint32_t expected_daemon_uid, const PeerFacts& daemon) {
  const std::string who = DescribePeer(daemon);
  if (daemon.uid == 0) return PeerDecision{true, "daemon " + who + " is root"};
  if (expected_daemon_uid != kNoId && daemon.uid == expected_daemon_uid) {
    return PeerDecision{true, "daemon " + who + " runs as the expected uid"};
  }
  std::string expected = "root";
  if (expected_daemon_uid != kNoId) expected += " or uid " + std::to_string(expected_daemon_uid);
  return Refuse("the daemon end of the socket is " + who + ", expected " + expected +
                "; refusing to talk to it (is another program listening on the socket path?)");
}

}  // namespace tollgate::ipc
