// The Linux ProcessSource (analysis/process.h): which process owns the local socket of a flow.
// tollgated's analysis engine calls Find() for a question only when a rule needs the process.
//
// Two steps, both through kernel interfaces of the daemon's own namespaces:
//  1. Socket: netlink NETLINK_SOCK_DIAG (inet_diag) gives the socket's inode. TCP uses an exact
//     4-tuple request, which reaches the same hash tables as the kernel's packet lookup, so it
//     finds a client still in SYN_SENT (its SYN is the packet held in NFQUEUE), a listener behind
//     a wildcard address, and a dual-stack AF_INET6 socket serving IPv4. When that yields no owned
//     socket for an inbound flow (an unaccepted or TIME_WAIT entry in front of the listener) a
//     dump of listeners on the port decides. UDP is always a dump filtered by local port in the
//     kernel (INET_DIAG_REQ_BYTECODE), scored in user space: connected to this peer, else bound
//     to this address, else bound to the wildcard (SocketMatchScore). Replies are parsed as
//     untrusted bytes (WalkSockDiagReply, fuzzed) and every recv() has a 1 s timeout.
//  2. Owner: /proc/<pid>/fd/* links "socket:[inode]". A bounded LRU cache maps inode -> (pid, fd);
//     a hit is believed only after re-reading that one fd link. A miss costs one full /proc scan,
//     which records every socket inode it sees, so a burst of new flows costs one scan. Scans are
//     rate-limited: a miss within `min_rescan_interval` of the last scan waits for the rest of the
//     interval, then scans (a bounded delay, never a guess). When a scan finds no holder of a
//     socket that existed before it started (kernel-owned, in flight in SCM_RIGHTS, or held by a
//     process we cannot read) the inode is remembered for `negative_ttl`, so one such socket
//     cannot force a scan per flow. Several holders (fork, SCM_RIGHTS): the scan reports the
//     lowest pid that holds it; a cached owner is kept for as long as it still holds it.
// Process details are read through an open /proc/<pid> directory, and the fd link is checked again
// afterwards, so a process that exits (or a pid that is recycled) mid-lookup yields kGone, never
// another process's details.
//
// Cost, measured with a throwaway -O2 program on the 2-vCPU build VM while it was loaded (load
// average ~8), so read them as upper bounds: a lookup whose owner is cached takes ~40 us p50 for
// TCP (one netlink exchange plus ~8 small /proc reads) and ~60 us for UDP (two port-filtered dumps;
// the kernel walks its UDP hash for each); a miss adds a full /proc scan, which is one readlink
// per open fd on the host: ~7 ms for ~100 processes and ~1,000 fds, ~50 ms with 5,000 more fds
// (~8 us per fd there, all of it in the kernel). Worst-case blocking of one Find: the rescan wait
// (min_rescan_interval) plus one scan, or 2 s if the kernel stops answering netlink.
//
// Namespaces: sock_diag answers for the network namespace of the netlink socket, i.e. the daemon's.
// A process in another network namespace (a container with its own netns) is not found (kNotFound).
// pids and exe paths are those of the pid/mount namespace whose /proc is at `proc_root`; the unit
// is read from /proc/<pid>/cgroup, relative to the daemon's cgroup namespace.
//
// Privileges: sock_diag needs none. Reading another user's /proc/<pid>/fd needs root (with
// capabilities dropped: CAP_DAC_READ_SEARCH for the 0500 directory and CAP_SYS_PTRACE for the
// ptrace access check). Without them only the daemon's own user's processes are attributed; the
// others come back as kGone, with a detail counting the unreadable processes.
//
// An eBPF source (a second ProcessSource) would record pid, tgid, uid and the cgroup id at
// connect()/sendmsg()/accept time in kernel context, keyed by socket cookie or 5-tuple, and would
// so remove the /proc scan, the race with short-lived processes (it sees the process that acted,
// even if it exited since) and the ambiguity of sockets shared after fork; it could also cover
// ping sockets. It needs CAP_BPF plus CAP_PERFMON (tracing hooks) or CAP_NET_ADMIN (cgroup socket
// hooks), and a BTF kernel for CO-RE; this source stays as the fallback where those are missing.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "analysis/process.h"
#include "common/error.h"
#include "common/flow.h"
#include "common/unique_fd.h"

namespace tollgate::platform {

// --- Pure pieces, exposed for tests and the fuzzer --------------------------------------------

// The systemd unit of a cgroup path: its outermost component named "*.service" or "*.scope"
// (what sd_pid_get_unit reports), with systemd's cgroup escaping (one leading '_') removed.
// "/system.slice/sshd.service" -> "sshd.service";
// "/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope" -> "user@1000.service";
// "/" or "/user.slice" -> "".
// Why outermost: below a delegated unit (user@UID.service, or a service with Delegate=yes) the
// cgroup names are chosen by that unit's owner, so an inner "sshd.service" proves nothing; the
// outermost unit is made by PID 1. Per-application user units would need a separate, clearly
// untrusted fact (a `user_unit` condition), not this one.
std::string UnitFromCgroupPath(std::string_view path);

// The unit from the text of /proc/<pid>/cgroup: the cgroup v2 line "0::<path>" when it names a
// unit, else the cgroup v1 "N:name=systemd:<path>" line; "" when neither does.
std::string UnitFromProcCgroup(std::string_view contents);

inline constexpr size_t kMaxCmdlineBytes = 4096;
// /proc/<pid>/cmdline (arguments each ending in NUL) as one line: NULs become spaces, trailing
// NULs are dropped, the result is cut at kMaxCmdlineBytes. A process that rewrote its argv
// (setproctitle) shows what it wrote.
std::string FormatCmdline(std::string_view raw);

struct ProcStatus {
  uint32_t ppid = 0;
  uint32_t uid = 0;  // real uid (first field of "Uid:")
};
// The "PPid:" and "Uid:" lines of /proc/<pid>/status; nullopt when either is missing or garbled.
std::optional<ProcStatus> ParseProcStatus(std::string_view contents);

// "socket:[12345]" -> 12345; nullopt for any other link text (files, pipes, anon inodes).
std::optional<uint32_t> SocketInodeFromLink(std::string_view link);

// One inet socket as sock_diag describes it. Addresses are as the kernel keeps them: a dual-stack
// AF_INET6 socket serving IPv4 shows ::ffff:a.b.c.d.
struct SockDiagSocket {
  uint8_t family = 0;  // AF_INET or AF_INET6: the socket's own family
  uint8_t state = 0;   // TCP_* numbering; an unconnected UDP socket is TCP_CLOSE (7)
  IpAddress local;
  IpAddress remote;
  uint16_t local_port = 0;  // host byte order
  uint16_t remote_port = 0;
  uint32_t bound_iface = 0;  // SO_BINDTODEVICE ifindex, 0 when unbound
  uint32_t uid = 0;          // the socket's owner uid
  uint32_t inode = 0;        // 0: no file behind it (orphaned, TIME_WAIT, not yet accepted)
  int8_t v6only =
      -1;  // INET_DIAG_SKV6ONLY, sent for AF_INET6 listening/unconnected sockets; else -1
};

struct SockDiagReplyChunk {
  bool done = false;     // the answer is complete (NLMSG_DONE, an error/ack, or a single reply)
  int kernel_errno = 0;  // positive errno from NLMSG_ERROR or NLMSG_DONE; 0 when none
  size_t sockets = 0;    // socket messages passed to the visitor
  size_t skipped = 0;    // messages of another sequence number or type (stale replies)
};

using SockDiagVisitor = std::function<void(const SockDiagSocket&)>;

// Walks one datagram read from a NETLINK_SOCK_DIAG socket, calling `visit` for every
// SOCK_DIAG_BY_FAMILY message with sequence number `sequence`. Every nlmsghdr and rtattr is
// bound-checked against the datagram; a length that points outside it, or a socket message too
// short for inet_diag_msg, is an Error (kMalformed) naming the byte offset. Nothing is allocated
// besides what `visit` does.
Expected<SockDiagReplyChunk> WalkSockDiagReply(std::span<const uint8_t> datagram, uint32_t sequence,
                                               const SockDiagVisitor& visit);

// How specifically `socket` serves the local end (local, local_port) of a flow whose other end is
// (remote, remote_port); -1 when it cannot. Mirrors the kernel's preference: 4 for connected to
// exactly this peer, plus 2 for bound to exactly this address or 1 for the wildcard (0.0.0.0, or
// :: when not IPV6_V6ONLY for an IPv4 flow). So >= kConnectedMatch means connected to this peer;
// 1..2 is a listener or an unconnected UDP socket.
inline constexpr int kConnectedMatch = 4;
int SocketMatchScore(const SockDiagSocket& socket, const IpAddress& local, uint16_t local_port,
                     const IpAddress& remote, uint16_t remote_port);

// --- The source --------------------------------------------------------------------------------

class SockDiagProcessSource final : public analysis::ProcessSource {
 public:
  struct Options {
    std::string proc_root = "/proc";  // tests point this at a fake tree
    size_t inode_cache_entries = 4096;
    // At most one full /proc scan per interval; a miss inside it waits for the rest of it.
    std::chrono::milliseconds min_rescan_interval{50};
    // How long "a scan did not find this socket's owner" is believed without scanning again.
    std::chrono::milliseconds negative_ttl{1000};
    size_t negative_cache_entries = 1024;
    size_t user_cache_entries = 256;  // uid -> name; names are not re-read while cached
  };

  struct Stats {
    uint64_t lookups = 0;               // Find and FindByInode calls
    uint64_t netlink_requests = 0;      // sock_diag request/reply exchanges
    uint64_t cache_hits = 0;            // inode found in the cache and still held by that fd
    uint64_t cache_stale = 0;           // cached owner no longer held the socket
    uint64_t proc_scans = 0;            // full /proc scans
    uint64_t scan_waits = 0;            // misses that waited for the rescan interval
    uint64_t negative_hits = 0;         // answered kGone from the negative cache
    uint64_t unreadable_processes = 0;  // /proc/<pid>/fd we could not read, summed over scans
    size_t cached_inodes = 0;           // entries in the inode -> owner cache now
  };

  SockDiagProcessSource();
  explicit SockDiagProcessSource(Options options);
  ~SockDiagProcessSource() override;
  SockDiagProcessSource(const SockDiagProcessSource&) = delete;
  SockDiagProcessSource& operator=(const SockDiagProcessSource&) = delete;

  // Thread-safe (one internal mutex: lookups are serialized). Never throws. `exe` is the kernel's
  // text verbatim, so a binary replaced on disk (package upgrade) reads "/usr/bin/x (deleted)".
  // kGone/kNotFound details name the flow and, once the socket is known, its owner uid.
  analysis::ProcessLookup Find(const FlowQuestion& question) override;

  // Step 2 alone: the process holding socket `inode` (kFound, or kGone with a detail).
  analysis::ProcessLookup FindByInode(uint32_t inode);

  Stats stats() const;

 private:
  struct Owner {
    uint32_t pid = 0;
    int fd = -1;
  };
  struct CacheEntry {
    uint32_t inode = 0;
    Owner owner;
    uint64_t scan = 0;  // the scan that recorded it (keeps the lowest pid within one scan)
  };
  using Clock = std::chrono::steady_clock;

  // Step 1. nullopt: no matching socket. Error: the lookup itself failed.
  Expected<std::optional<SockDiagSocket>> FindSocket(const FlowQuestion& question);
  Expected<std::optional<SockDiagSocket>> ExactLookup(uint8_t family, uint8_t protocol,
                                                      const IpAddress& local, uint16_t local_port,
                                                      const IpAddress& remote, uint16_t remote_port,
                                                      uint32_t iface);
  // Dumps `family`/`protocol` sockets in `states` on local port `local_port`, keeping the best
  // SocketMatchScore >= min_score in `best`.
  Status DumpBest(uint8_t family, uint8_t protocol, uint32_t states, const IpAddress& local,
                  uint16_t local_port, const IpAddress& remote, uint16_t remote_port, int min_score,
                  std::optional<SockDiagSocket>& best, int& best_score);
  // Sends one request and reads the answer; returns the kernel's errno (0 = success).
  Expected<int> Exchange(std::vector<uint8_t>& request, const SockDiagVisitor& visit);
  Status EnsureNetlink();
  Status EnsureProcRoot();

  // Step 2.
  analysis::ProcessLookup FindByInodeLocked(uint32_t inode);
  bool StillHolds(int pid_dir, const Owner& owner, uint32_t inode) const;
  // Full scan: records every socket inode in the cache, returns the owner of `target` if seen.
  Expected<std::optional<Owner>> ScanProc(uint32_t target);
  void Remember(uint32_t inode, Owner owner, uint64_t scan);
  void Forget(uint32_t inode);
  std::string UserName(uint32_t uid);

  const Options options_;
  mutable std::mutex mutex_;
  // All below guarded by mutex_.
  UniqueFd netlink_;
  uint32_t sequence_ = 0;
  bool exact_handler_checked_ = false;  // exact lookups are TCP only
  std::vector<uint8_t> recv_buffer_;
  UniqueFd proc_root_;
  std::list<CacheEntry> lru_;  // most recently used first
  std::unordered_map<uint32_t, std::list<CacheEntry>::iterator> by_inode_;
  std::unordered_map<uint32_t, Clock::time_point> not_found_;  // negative cache
  std::unordered_map<uint32_t, std::string> user_names_;
  uint64_t scan_count_ = 0;
  std::optional<Clock::time_point> last_scan_start_;
  Stats stats_;
};

}  // namespace tollgate::platform
