// Who is on the other end of a channel connection, and whether we talk to them. The facts come
// from the kernel at connect time (Linux: SO_PEERCRED, SO_PEERGROUPS, SO_PEERPIDFD; macOS later:
// the XPC audit token), never from a pid looked up afterwards. The policy is portable and pure.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace tollgate::ipc {

struct PeerFacts {
  uint32_t uid = 0xffffffffu;
  uint32_t gid = 0xffffffffu;
  pid_t pid = 0;
  std::vector<uint32_t> groups;  // supplementary groups
  bool groups_known = false;     // false: the kernel could not report them
  std::string exe_path;          // executable of the peer, from its pidfd
  std::string exe_sha256;        // lowercase hex; empty when not computed
  bool exe_known = false;
  bool exe_from_pidfd = false;  // identity bound to the process itself (no pid-reuse race)
  std::string exe_unknown_reason;
  // Why exe_sha256 is empty although a hash was asked for (unreadable, too large); the policy
  // quotes it when an allowlist entry pins a hash.
  std::string exe_sha256_unavailable_reason;
};

struct ExeAllowEntry {
  std::string path;    // exact path of the executable
  std::string sha256;  // lowercase hex; empty accepts any content at that path
};

struct PeerPolicy {
  uint32_t group_gid = 0xffffffffu;  // app group; 0xffffffff = no group admitted (root only)
  std::string group_name;            // for messages
  std::vector<ExeAllowEntry> exe_allowlist;  // empty = any executable
};

struct PeerDecision {
  bool allowed = false;
  std::string reason;  // why refused (sent to the peer and logged), or why admitted
};

// The daemon's rule for a connecting client: uid 0 or a member of the app group (primary or
// supplementary), and, when an allowlist is configured, an executable on it.
PeerDecision DecideClient(const PeerPolicy& policy, const PeerFacts& peer);

// The client's rule for the daemon it reached: uid 0 or the configured daemon uid.
PeerDecision DecideDaemon(uint32_t expected_daemon_uid, const PeerFacts& daemon);

// Reads the kernel's facts about the peer of a connected socket.
class PeerIdentity {
 public:
  virtual ~PeerIdentity() = default;
  // want_exe_hash: compute exe_sha256 (costly; only when an allowlist pins hashes).
  virtual Expected<PeerFacts> Identify(int connected_fd, bool want_exe_hash) = 0;
};

}  // namespace tollgate::ipc
