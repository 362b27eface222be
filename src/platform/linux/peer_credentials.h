// The Linux source of ipc::PeerIdentity: what the kernel says about the process at the other end
// of a connected AF_UNIX socket. tollgated calls it for every accepted analysis/control connection
// and the filter calls it on the daemon end before trusting a Welcome.
//
// uid/gid/pid come from SO_PEERCRED, supplementary groups from SO_PEERGROUPS (both fixed at
// connect time). The executable comes from the peer's pidfd (SO_PEERPIDFD): the pidfd pins the
// process, so after reading /proc/<pid>/exe we can prove the pid still named that process and was
// not recycled. Kernels without SO_PEERPIDFD fall back to pidfd_open(pid), which has a pid-reuse
// window and says so (exe_from_pidfd = false). The pid is never looked up by any other route.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "common/error.h"
#include "ipc/peer.h"

namespace tollgate::platform {

class LinuxPeerIdentity final : public ipc::PeerIdentity {
 public:
  struct Options {
    // false: behave like a kernel without SO_PEERPIDFD (tests exercise the fallback with it).
    bool use_so_peerpidfd = true;
    // Executables larger than this are not hashed (hashing blocks the caller).
    uint64_t max_hash_bytes = uint64_t{256} << 20;
    size_t hash_cache_entries = 64;
  };

  LinuxPeerIdentity() = default;
  explicit LinuxPeerIdentity(Options options) : options_(options) {}

  // Fails only when the socket itself yields no credentials (not a socket, not AF_UNIX, not
  // connected). Anything unknown about the executable is reported inside PeerFacts.
  Expected<ipc::PeerFacts> Identify(int connected_fd, bool want_exe_hash) override;

  // Number of executables whose hash is cached (for tests and status output).
  size_t CachedHashCount() const;

 private:
  // A cached hash is reused only while the file is provably unchanged: any write moves ctime,
  // which (unlike mtime) no unprivileged caller can set back.
  using FileKey = std::tuple<dev_t, ino_t, off_t, int64_t, int64_t, int64_t, int64_t>;

  void IdentifyExecutable(int pidfd, bool from_pidfd, bool want_exe_hash, ipc::PeerFacts& facts);
  // Fills exe_sha256 or exe_sha256_unavailable_reason from an open executable.
  void HashExecutable(int exe_fd, ipc::PeerFacts& facts);

  Options options_;
  mutable std::mutex cache_mutex_;
  std::map<FileKey, std::string> hash_cache_;  // guarded by cache_mutex_
  std::deque<FileKey> cache_order_;            // insertion order, oldest evicted first
};

}  // namespace tollgate::platform
