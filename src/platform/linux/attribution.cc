#include "platform/linux/attribution.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstddef>
#include <cstring>
#include <thread>
#include <utility>

namespace tollgate::platform {
namespace {

using analysis::Attribution;
using analysis::ProcessLookup;

// TCP state numbers as inet_diag reports them (include/net/tcp_states.h).
constexpr uint8_t kTcpListen = 10;
constexpr const char* kTcpStateNames[] = {
    "?",     "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "NEW_SYN_RECV"};

// Netlink answers from the kernel come in datagrams of at most 32 KiB (the kernel sizes dump
// datagrams by our largest recv buffer, capped there), so this buffer is never truncated.
constexpr size_t kRecvBufferBytes = size_t{32} * 1024;
// A port-filtered dump is a handful of sockets; these only stop a runaway answer.
constexpr size_t kMaxDatagramsPerAnswer = 4096;
constexpr auto kMaxAnswerTime = std::chrono::seconds(2);
constexpr size_t kMaxStatusBytes = 4096;   // PPid and Uid are in the first 600 bytes
constexpr size_t kMaxCgroupBytes = 16384;  // v1 hosts list one line per hierarchy
constexpr size_t kMaxPasswdBuffer = 1 << 20;

const char* TcpStateName(uint8_t state) {
  return state < std::size(kTcpStateNames) ? kTcpStateNames[state] : "?";
}

Error Malformed(size_t offset, const char* what) {
  return Error{ErrorCode::kMalformed,
               "sock_diag reply: " + std::string(what) + " at byte " + std::to_string(offset)};
}

IpAddress AddressFromKernel(uint8_t family, const uint32_t (&words)[4]) {
  IpAddress ip;
  ip.family = family == AF_INET ? 4 : 6;
  std::memcpy(ip.bytes.data(), words, family == AF_INET ? 4 : 16);
  return ip;
}

// ::ffff:a.b.c.d -> a.b.c.d; anything else unchanged.
IpAddress Unmapped(const IpAddress& ip) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (ip.family != 6 || std::memcmp(ip.bytes.data(), kPrefix, sizeof(kPrefix)) != 0) return ip;
  return IpAddress::V4(ip.bytes[12], ip.bytes[13], ip.bytes[14], ip.bytes[15]);
}

// Compares only the bytes the family uses, so padding in an IPv4 address cannot matter.
bool SameAddress(const IpAddress& a, const IpAddress& b) {
  return a.family == b.family && (a.family == 4 || a.family == 6) &&
         std::memcmp(a.bytes.data(), b.bytes.data(), a.size()) == 0;
}

bool IsAny(const IpAddress& ip) {
  IpAddress u = Unmapped(ip);
  for (size_t i = 0; i < u.size(); ++i) {
    if (u.bytes[i] != 0) return false;
  }
  return true;
}

std::string Endpoint(const IpAddress& ip, uint16_t port) {
  return ip.family == 6 ? "[" + ip.ToString() + "]:" + std::to_string(port)
                        : ip.ToString() + ":" + std::to_string(port);
}

std::string DescribeFlow(const FlowQuestion& q) {
  const FlowTuple& t = q.tuple;
  return ProtocolName(t.protocol) + " " + Endpoint(t.src, t.src_port) + " -> " +
         Endpoint(t.dst, t.dst_port) +
         (q.direction == Direction::kOutbound ? " (outbound)" : " (inbound)");
}

bool IsUnitName(std::string_view name) {
  for (std::string_view suffix : {std::string_view(".service"), std::string_view(".scope")}) {
    if (name.size() > suffix.size() && name.ends_with(suffix)) return true;
  }
  return false;
}

std::optional<uint32_t> ParseU32(std::string_view text) {
  uint32_t value = 0;
  if (text.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Reads at most `cap` bytes of a file under `dir`. /proc files are generated on read, so loop.
Expected<std::string> ReadSmallFile(int dir, const char* name, size_t cap) {
  UniqueFd fd(::openat(dir, name, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Unexpected(Error::System(std::string("open ") + name, errno));
  std::string out(cap, '\0');
  size_t used = 0;
  while (used < cap) {
    ssize_t n = ::read(fd.get(), out.data() + used, cap - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unexpected(Error::System(std::string("read ") + name, errno));
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  out.resize(used);
  return out;
}

Expected<std::string> ReadLinkAt(int dir, const char* name) {
  std::string buf(PATH_MAX, '\0');
  ssize_t n = ::readlinkat(dir, name, buf.data(), buf.size());
  if (n < 0) return Unexpected(Error::System(std::string("readlink ") + name, errno));
  if (static_cast<size_t>(n) >= buf.size()) {
    return Unexpected(ErrorCode::kTooLarge, std::string("readlink ") + name + ": path too long");
  }
  buf.resize(static_cast<size_t>(n));
  return buf;
}

// A SOCK_DIAG_BY_FAMILY request; with `port_filter` a dump whose kernel-side bytecode keeps only
// sockets whose local port is that port (two ops: S_EQ, then the port in the second op's `no`).
std::vector<uint8_t> BuildRequest(uint8_t family, uint8_t protocol, uint32_t states, bool dump,
                                  const inet_diag_sockid& id, std::optional<uint16_t> port_filter) {
  inet_diag_req_v2 req{};
  req.sdiag_family = family;
  req.sdiag_protocol = protocol;
  req.idiag_states = states;
  req.id = id;

  inet_diag_bc_op ops[2]{};
  rtattr rta{};
  size_t attr_len = 0;
  if (port_filter) {
    ops[0].code = INET_DIAG_BC_S_EQ;
    ops[0].yes = sizeof(ops);     // match: run off the end = accept
    ops[0].no = sizeof(ops) + 4;  // no match: past the end = reject
    ops[1].no = *port_filter;     // the operand, host byte order
    rta.rta_type = INET_DIAG_REQ_BYTECODE;
    rta.rta_len = static_cast<unsigned short>(RTA_LENGTH(sizeof(ops)));
    attr_len = RTA_ALIGN(rta.rta_len);
  }

  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(sizeof(req)) + attr_len);
  h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  h.nlmsg_flags = NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0);

  std::vector<uint8_t> out(h.nlmsg_len, 0);
  std::memcpy(out.data(), &h, sizeof(h));
  std::memcpy(out.data() + NLMSG_HDRLEN, &req, sizeof(req));
  if (port_filter) {
    size_t at = NLMSG_LENGTH(sizeof(req));
    std::memcpy(out.data() + at, &rta, sizeof(rta));
    std::memcpy(out.data() + at + RTA_LENGTH(0), ops, sizeof(ops));
  }
  return out;
}

inet_diag_sockid SockId(const IpAddress& local, uint16_t local_port, const IpAddress& remote,
                        uint16_t remote_port, uint32_t iface) {
  inet_diag_sockid id{};
  id.idiag_sport = htons(local_port);
  id.idiag_dport = htons(remote_port);
  std::memcpy(id.idiag_src, local.bytes.data(), local.size());
  std::memcpy(id.idiag_dst, remote.bytes.data(), remote.size());
  id.idiag_if = iface;
  id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  return id;
}

}  // namespace

// --- Pure pieces -----------------------------------------------------------------------------

// The outermost unit on the path, as systemd's sd_pid_get_unit() reports it. Everything below a
// unit's cgroup may be delegated to that unit's user (user@1000.service delegates its subtree),
// so an inner component is whatever that user chose to call it: trusting it would let any user
// run a process whose "unit" reads sshd.service. The outermost unit is made by PID 1.
std::string UnitFromCgroupPath(std::string_view path) {
  size_t begin = 0;
  while (begin <= path.size()) {
    size_t slash = path.find('/', begin);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view component = path.substr(begin, slash - begin);
    // systemd prefixes a name with '_' when it would collide with a kernel cgroup file name.
    if (!component.empty() && component.front() == '_') component.remove_prefix(1);
    if (IsUnitName(component)) return std::string(component);
    begin = slash + 1;
  }
  return {};
}

std::string UnitFromProcCgroup(std::string_view contents) {
  std::string v1_unit;
  while (!contents.empty()) {
    size_t nl = contents.find('\n');
    std::string_view line = contents.substr(0, nl);
    contents.remove_prefix(nl == std::string_view::npos ? contents.size() : nl + 1);
    // "hierarchy-id:controllers:path"; the path itself may contain ':'.
    size_t c1 = line.find(':');
    if (c1 == std::string_view::npos) continue;
    size_t c2 = line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) continue;
    std::string_view hierarchy = line.substr(0, c1);
    std::string_view controllers = line.substr(c1 + 1, c2 - c1 - 1);
    std::string_view path = line.substr(c2 + 1);
    if (hierarchy == "0" && controllers.empty()) {
      std::string unit = UnitFromCgroupPath(path);
      if (!unit.empty()) return unit;
    } else if (v1_unit.empty()) {
      while (!controllers.empty()) {
        size_t comma = controllers.find(',');
        if (controllers.substr(0, comma) == "name=systemd") {
          v1_unit = UnitFromCgroupPath(path);
          break;
        }
        if (comma == std::string_view::npos) break;
        controllers.remove_prefix(comma + 1);
      }
    }
  }
  return v1_unit;
}

std::string FormatCmdline(std::string_view raw) {
  raw = raw.substr(0, std::min(raw.size(), kMaxCmdlineBytes));
  while (!raw.empty() && raw.back() == '\0') raw.remove_suffix(1);
  std::string out(raw);
  std::replace(out.begin(), out.end(), '\0', ' ');
  return out;
}

std::optional<ProcStatus> ParseProcStatus(std::string_view contents) {
  std::optional<uint32_t> ppid, uid;
  auto first_number = [](std::string_view rest) -> std::optional<uint32_t> {
    size_t begin = rest.find_first_not_of(" \t");
    if (begin == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(begin);
    size_t end = rest.find_first_of(" \t");
    return ParseU32(rest.substr(0, end));
  };
  while (!contents.empty()) {
    size_t nl = contents.find('\n');
    std::string_view line = contents.substr(0, nl);
    contents.remove_prefix(nl == std::string_view::npos ? contents.size() : nl + 1);
    if (line.starts_with("PPid:")) {
      ppid = first_number(line.substr(5));
    } else if (line.starts_with("Uid:")) {
      uid = first_number(line.substr(4));
    }
  }
  if (!ppid || !uid) return std::nullopt;
  return ProcStatus{*ppid, *uid};
}

std::optional<uint32_t> SocketInodeFromLink(std::string_view link) {
  constexpr std::string_view kPrefix = "socket:[";
  if (!link.starts_with(kPrefix) || !link.ends_with("]")) return std::nullopt;
  return ParseU32(link.substr(kPrefix.size(), link.size() - kPrefix.size() - 1));
}

Expected<SockDiagReplyChunk> WalkSockDiagReply(std::span<const uint8_t> datagram, uint32_t sequence,
                                               const SockDiagVisitor& visit) {
  SockDiagReplyChunk chunk;
  size_t offset = 0;
  while (offset < datagram.size()) {
    const size_t left = datagram.size() - offset;
    if (left < sizeof(nlmsghdr)) return Unexpected(Malformed(offset, "truncated nlmsghdr"));
    nlmsghdr h;
    std::memcpy(&h, datagram.data() + offset, sizeof(h));
    if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > left) {
      return Unexpected(Malformed(offset, "nlmsg_len outside the datagram"));
    }
    const size_t message_at = offset;
    std::span<const uint8_t> payload =
        datagram.subspan(offset + NLMSG_HDRLEN, h.nlmsg_len - NLMSG_HDRLEN);
    // The last message may lack its alignment padding.
    offset += std::min<size_t>(NLMSG_ALIGN(h.nlmsg_len), left);

    if (h.nlmsg_seq != sequence) {
      ++chunk.skipped;  // a late answer to a request we gave up on
      continue;
    }
    if (h.nlmsg_type == NLMSG_NOOP) continue;
    if (h.nlmsg_type == NLMSG_DONE || h.nlmsg_type == NLMSG_ERROR) {
      // NLMSG_ERROR carries a (negative) errno, 0 for an acknowledgement; NLMSG_DONE of a dump
      // carries the dump's final status the same way (absent on old kernels).
      int32_t status = 0;
      if (payload.size() >= sizeof(status)) {
        std::memcpy(&status, payload.data(), sizeof(status));
      } else if (h.nlmsg_type == NLMSG_ERROR) {
        return Unexpected(Malformed(message_at, "NLMSG_ERROR without an error code"));
      }
      if (status > 0 || status < -4095) {
        return Unexpected(Malformed(message_at, "error code out of range"));
      }
      chunk.done = true;
      chunk.kernel_errno = -status;
      return chunk;
    }
    if (h.nlmsg_type != SOCK_DIAG_BY_FAMILY) {
      ++chunk.skipped;
      continue;
    }
    if (payload.size() < sizeof(inet_diag_msg)) {
      return Unexpected(Malformed(message_at, "socket message shorter than inet_diag_msg"));
    }
    inet_diag_msg msg;
    std::memcpy(&msg, payload.data(), sizeof(msg));
    if (msg.idiag_family != AF_INET && msg.idiag_family != AF_INET6) {
      return Unexpected(Malformed(message_at, "socket message of an unknown address family"));
    }
    SockDiagSocket s;
    s.family = msg.idiag_family;
    s.state = msg.idiag_state;
    s.local = AddressFromKernel(msg.idiag_family, msg.id.idiag_src);
    s.remote = AddressFromKernel(msg.idiag_family, msg.id.idiag_dst);
    s.local_port = ntohs(msg.id.idiag_sport);
    s.remote_port = ntohs(msg.id.idiag_dport);
    s.bound_iface = msg.id.idiag_if;
    s.uid = msg.idiag_uid;
    s.inode = msg.idiag_inode;

    size_t attr_at = NLMSG_ALIGN(sizeof(inet_diag_msg));
    while (attr_at < payload.size()) {
      const size_t attr_left = payload.size() - attr_at;
      const size_t where = message_at + NLMSG_HDRLEN + attr_at;
      if (attr_left < sizeof(rtattr)) return Unexpected(Malformed(where, "truncated rtattr"));
      rtattr rta;
      std::memcpy(&rta, payload.data() + attr_at, sizeof(rta));
      if (rta.rta_len < sizeof(rtattr) || rta.rta_len > attr_left) {
        return Unexpected(Malformed(where, "rta_len outside the message"));
      }
      if ((rta.rta_type & NLA_TYPE_MASK) == INET_DIAG_SKV6ONLY && rta.rta_len > RTA_LENGTH(0)) {
        s.v6only = payload[attr_at + RTA_LENGTH(0)] != 0 ? 1 : 0;
      }
      attr_at += std::min<size_t>(RTA_ALIGN(rta.rta_len), attr_left);
    }

    ++chunk.sockets;
    if (visit) visit(s);
    if ((h.nlmsg_flags & NLM_F_MULTI) == 0) {  // an exact lookup: one message is the answer
      chunk.done = true;
      return chunk;
    }
  }
  return chunk;
}

int SocketMatchScore(const SockDiagSocket& socket, const IpAddress& local, uint16_t local_port,
                     const IpAddress& remote, uint16_t remote_port) {
  if (socket.local_port != local_port) return -1;
  int score = 0;
  if (SameAddress(Unmapped(socket.local), local)) {
    score = 2;
  } else if (IsAny(socket.local)) {
    if (local.family == 6 && socket.family != AF_INET6) return -1;
    if (local.family == 4 && socket.family == AF_INET6 && socket.v6only == 1) return -1;
    score = 1;
  } else {
    return -1;
  }
  if (socket.remote_port == 0 && IsAny(socket.remote)) return score;  // listener / unconnected
  if (socket.remote_port == remote_port && SameAddress(Unmapped(socket.remote), remote)) {
    return score + kConnectedMatch;
  }
  return -1;
}

// --- SockDiagProcessSource --------------------------------------------------------------------

SockDiagProcessSource::SockDiagProcessSource() : SockDiagProcessSource(Options{}) {}

SockDiagProcessSource::SockDiagProcessSource(Options options)
    : options_(std::move(options)), recv_buffer_(kRecvBufferBytes) {}

SockDiagProcessSource::~SockDiagProcessSource() = default;

SockDiagProcessSource::Stats SockDiagProcessSource::stats() const {
  std::lock_guard lock(mutex_);
  Stats out = stats_;
  out.cached_inodes = by_inode_.size();
  return out;
}

ProcessLookup SockDiagProcessSource::Find(const FlowQuestion& question) {
  std::lock_guard lock(mutex_);
  ++stats_.lookups;
  ProcessLookup out;
  const FlowTuple& t = question.tuple;
  if (t.protocol == ipproto::kIcmp || t.protocol == ipproto::kIcmpV6) {
    out.state = Attribution::kNotFound;
    out.detail = "ICMP flows are not attributed: ping sockets are not looked up";
    return out;
  }
  if (t.protocol != ipproto::kTcp && t.protocol != ipproto::kUdp) {
    out.state = Attribution::kNotFound;
    out.detail = "protocol " + ProtocolName(t.protocol) + " is not attributed (only tcp and udp)";
    return out;
  }
  if ((t.src.family != 4 && t.src.family != 6) || t.src.family != t.dst.family) {
    out.state = Attribution::kUnavailable;
    out.detail = "flow question has no consistent IPv4/IPv6 addresses";
    return out;
  }
  auto socket = FindSocket(question);
  if (!socket) {
    out.state = Attribution::kUnavailable;
    out.detail = socket.error().message + " (looking up " + DescribeFlow(question) + ")";
    return out;
  }
  if (!socket->has_value()) {
    out.state = Attribution::kNotFound;
    out.detail = "no local socket for " + DescribeFlow(question) + " in this network namespace";
    return out;
  }
  const SockDiagSocket& s = **socket;
  if (s.inode == 0) {
    out.state = Attribution::kGone;
    out.detail = "the socket for " + DescribeFlow(question) + " (state " + TcpStateName(s.state) +
                 ", uid " + std::to_string(s.uid) +
                 ") has no owner any more: its process closed it";
    return out;
  }
  out = FindByInodeLocked(s.inode);
  if (out.state != Attribution::kFound) {
    out.detail += " (" + DescribeFlow(question) + ", socket uid " + std::to_string(s.uid) + ")";
  }
  return out;
}

ProcessLookup SockDiagProcessSource::FindByInode(uint32_t inode) {
  std::lock_guard lock(mutex_);
  ++stats_.lookups;
  return FindByInodeLocked(inode);
}

Expected<std::optional<SockDiagSocket>> SockDiagProcessSource::FindSocket(
    const FlowQuestion& question) {
  const FlowTuple& t = question.tuple;
  const bool outbound = question.direction == Direction::kOutbound;
  const IpAddress& local = outbound ? t.src : t.dst;
  const IpAddress& remote = outbound ? t.dst : t.src;
  const uint16_t local_port = outbound ? t.src_port : t.dst_port;
  const uint16_t remote_port = outbound ? t.dst_port : t.src_port;
  const uint8_t family = local.family == 4 ? AF_INET : AF_INET6;

  std::optional<SockDiagSocket> best;
  int best_score = -1;
  if (t.protocol == ipproto::kUdp) {
    // UDP has no exact lookup worth trusting (an unconnected socket has no peer), so dump the
    // port and score. An IPv4 flow may be served by a dual-stack AF_INET6 socket.
    if (auto s = DumpBest(family, IPPROTO_UDP, ~0u, local, local_port, remote, remote_port, 1, best,
                          best_score);
        !s) {
      return Unexpected(s.error());
    }
    if (family == AF_INET) {
      if (auto s = DumpBest(AF_INET6, IPPROTO_UDP, ~0u, local, local_port, remote, remote_port, 1,
                            best, best_score);
          !s) {
        return Unexpected(s.error());
      }
    }
    return best;
  }

  // TCP: the exact lookup searches established (SYN_SENT included) then listening sockets, like
  // the kernel's receive path; the ifindex lets it match sockets bound to a device, and a retry
  // without it covers a device we were told wrongly.
  auto exact =
      ExactLookup(family, IPPROTO_TCP, local, local_port, remote, remote_port, question.iface);
  if (!exact) return Unexpected(exact.error());
  if (!exact->has_value() && question.iface != 0) {
    exact = ExactLookup(family, IPPROTO_TCP, local, local_port, remote, remote_port, 0);
    if (!exact) return Unexpected(exact.error());
  }
  std::optional<SockDiagSocket> connected;
  if (exact->has_value()) {
    const SockDiagSocket& s = **exact;
    int score = SocketMatchScore(s, local, local_port, remote, remote_port);
    if (score >= kConnectedMatch) {
      // Inbound with no file yet (not accepted) or none any more: the listener speaks for it.
      if (s.inode != 0 || outbound) return *exact;
      connected = s;
    } else if (score > 0 && !outbound && s.inode != 0) {
      return *exact;  // the listener
    }
  }
  if (outbound) return std::optional<SockDiagSocket>();
  const uint32_t listening = 1u << kTcpListen;
  if (auto s = DumpBest(family, IPPROTO_TCP, listening, local, local_port, remote, remote_port, 1,
                        best, best_score);
      !s) {
    return Unexpected(s.error());
  }
  if (family == AF_INET) {
    if (auto s = DumpBest(AF_INET6, IPPROTO_TCP, listening, local, local_port, remote, remote_port,
                          1, best, best_score);
        !s) {
      return Unexpected(s.error());
    }
  }
  return best ? best : connected;
}

Expected<std::optional<SockDiagSocket>> SockDiagProcessSource::ExactLookup(
    uint8_t family, uint8_t protocol, const IpAddress& local, uint16_t local_port,
    const IpAddress& remote, uint16_t remote_port, uint32_t iface) {
  std::vector<uint8_t> request =
      BuildRequest(family, protocol, ~0u, /*dump=*/false,
                   SockId(local, local_port, remote, remote_port, iface), std::nullopt);
  std::optional<SockDiagSocket> found;
  auto err = Exchange(request, [&](const SockDiagSocket& s) {
    if (!found) found = s;
  });
  if (!err) return Unexpected(err.error());
  if (*err == ENOENT) {
    // ENOENT also means "no handler for this protocol" (tcp_diag not loaded). Tell the two apart
    // once, with a dump that matches nothing: a dump without a handler fails the same way.
    if (!exact_handler_checked_) {
      std::optional<SockDiagSocket> unused;
      int unused_score = -1;
      if (auto s = DumpBest(family, protocol, 0, local, local_port, remote, remote_port, 1, unused,
                            unused_score);
          !s) {
        return Unexpected(s.error());
      }
      exact_handler_checked_ = true;
    }
    return std::optional<SockDiagSocket>();
  }
  if (*err != 0) {
    return Unexpected(
        Error::System("sock_diag exact lookup of a " + ProtocolName(protocol) + " socket", *err));
  }
  return found;
}

Status SockDiagProcessSource::DumpBest(uint8_t family, uint8_t protocol, uint32_t states,
                                       const IpAddress& local, uint16_t local_port,
                                       const IpAddress& remote, uint16_t remote_port, int min_score,
                                       std::optional<SockDiagSocket>& best, int& best_score) {
  std::vector<uint8_t> request =
      BuildRequest(family, protocol, states, /*dump=*/true, inet_diag_sockid{}, local_port);
  auto err = Exchange(request, [&](const SockDiagSocket& s) {
    int score = SocketMatchScore(s, local, local_port, remote, remote_port);
    if (score >= min_score && score > best_score) {
      best = s;
      best_score = score;
    }
  });
  if (!err) return Unexpected(err.error());
  if (*err == ENOENT) {
    // A dump never answers "no such socket"; ENOENT means the kernel has no handler.
    return Unexpected(ErrorCode::kUnavailable, "sock_diag has no " + ProtocolName(protocol) +
                                                   " handler in this kernel (load the " +
                                                   ProtocolName(protocol) + "_diag module)");
  }
  if (*err != 0) {
    return Unexpected(
        Error::System("sock_diag dump of " + ProtocolName(protocol) + " sockets", *err));
  }
  return {};
}

Status SockDiagProcessSource::EnsureNetlink() {
  if (netlink_.valid()) return {};
  UniqueFd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd.valid()) return Unexpected(Error::System("socket(AF_NETLINK, NETLINK_SOCK_DIAG)", errno));
  // A kernel that never answers must not hang the daemon.
  timeval timeout{1, 0};
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) != 0) {
    return Unexpected(Error::System("setsockopt(SO_RCVTIMEO) on the sock_diag socket", errno));
  }
  netlink_ = std::move(fd);
  return {};
}

Expected<int> SockDiagProcessSource::Exchange(std::vector<uint8_t>& request,
                                              const SockDiagVisitor& visit) {
  if (auto s = EnsureNetlink(); !s) return Unexpected(s.error());
  const uint32_t seq = ++sequence_;
  std::memcpy(request.data() + offsetof(nlmsghdr, nlmsg_seq), &seq, sizeof(seq));
  ++stats_.netlink_requests;

  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t sent;
  do {
    sent = ::sendto(netlink_.get(), request.data(), request.size(), 0,
                    reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel));
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(request.size())) {
    int e = sent < 0 ? errno : EMSGSIZE;
    netlink_.Reset();
    return Unexpected(Error::System("send to sock_diag", e));
  }

  const auto deadline = std::chrono::steady_clock::now() + kMaxAnswerTime;
  for (size_t datagram = 0; datagram < kMaxDatagramsPerAnswer; ++datagram) {
    if (std::chrono::steady_clock::now() > deadline) break;
    sockaddr_nl from{};
    iovec iov{recv_buffer_.data(), recv_buffer_.size()};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof(from);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t n = ::recvmsg(netlink_.get(), &msg, 0);
    if (n < 0) {
      int e = errno;
      if (e == EINTR) continue;
      // The socket may still receive the late answer; a fresh one starts clean.
      netlink_.Reset();
      if (e == EAGAIN || e == EWOULDBLOCK) {
        return Unexpected(ErrorCode::kTimeout, "sock_diag did not answer within 1 s");
      }
      return Unexpected(Error::System("receive from sock_diag", e));
    }
    if ((msg.msg_flags & MSG_TRUNC) != 0) {
      netlink_.Reset();
      return Unexpected(ErrorCode::kMalformed, "sock_diag reply larger than the receive buffer");
    }
    if (msg.msg_namelen < sizeof(sockaddr_nl) || from.nl_pid != 0) continue;  // not the kernel
    auto walk = WalkSockDiagReply(
        std::span<const uint8_t>(recv_buffer_.data(), static_cast<size_t>(n)), seq, visit);
    if (!walk) {
      netlink_.Reset();
      return Unexpected(walk.error());
    }
    if (walk->done) return walk->kernel_errno;
  }
  netlink_.Reset();
  return Unexpected(ErrorCode::kTooLarge, "sock_diag answer did not end within " +
                                              std::to_string(kMaxDatagramsPerAnswer) +
                                              " datagrams or 2 s");
}

Status SockDiagProcessSource::EnsureProcRoot() {
  if (proc_root_.valid()) return {};
  UniqueFd fd(::open(options_.proc_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Unexpected(Error::System("open " + options_.proc_root, errno));
  proc_root_ = std::move(fd);
  return {};
}

bool SockDiagProcessSource::StillHolds(int pid_dir, const Owner& owner, uint32_t inode) const {
  char link[64];
  std::string name = "fd/" + std::to_string(owner.fd);
  ssize_t n = ::readlinkat(pid_dir, name.c_str(), link, sizeof(link));
  if (n <= 0 || static_cast<size_t>(n) >= sizeof(link)) return false;
  auto held = SocketInodeFromLink(std::string_view(link, static_cast<size_t>(n)));
  return held && *held == inode;
}

void SockDiagProcessSource::Remember(uint32_t inode, Owner owner, uint64_t scan) {
  if (options_.inode_cache_entries == 0) return;
  auto it = by_inode_.find(inode);
  if (it != by_inode_.end()) {
    CacheEntry& e = *it->second;
    if (e.scan == scan && e.owner.pid <= owner.pid) return;  // keep the lowest pid of a scan
    e.owner = owner;
    e.scan = scan;
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (by_inode_.size() >= options_.inode_cache_entries) {
    by_inode_.erase(lru_.back().inode);
    lru_.pop_back();
  }
  lru_.push_front(CacheEntry{inode, owner, scan});
  by_inode_[inode] = lru_.begin();
}

void SockDiagProcessSource::Forget(uint32_t inode) {
  auto it = by_inode_.find(inode);
  if (it == by_inode_.end()) return;
  lru_.erase(it->second);
  by_inode_.erase(it);
}

Expected<std::optional<SockDiagProcessSource::Owner>> SockDiagProcessSource::ScanProc(
    uint32_t target) {
  const uint64_t scan = ++scan_count_;
  ++stats_.proc_scans;
  last_scan_start_ = Clock::now();
  std::optional<Owner> found;

  int root_copy = ::openat(proc_root_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root_copy < 0) return Unexpected(Error::System("open " + options_.proc_root, errno));
  DIR* root = ::fdopendir(root_copy);
  if (root == nullptr) {
    int e = errno;
    ::close(root_copy);
    return Unexpected(Error::System("list " + options_.proc_root, e));
  }
  char link[64];
  while (dirent* entry = ::readdir(root)) {
    auto pid = ParseU32(entry->d_name);
    if (!pid || *pid == 0) continue;
    std::string fd_dir_name = std::string(entry->d_name) + "/fd";
    int fd_dir =
        ::openat(proc_root_.get(), fd_dir_name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd_dir < 0) {
      if (errno == EACCES || errno == EPERM) ++stats_.unreadable_processes;
      continue;  // ENOENT: exited meanwhile
    }
    DIR* fds = ::fdopendir(fd_dir);
    if (fds == nullptr) {
      ::close(fd_dir);
      continue;
    }
    while (dirent* fd_entry = ::readdir(fds)) {
      auto fd = ParseU32(fd_entry->d_name);
      if (!fd || *fd > INT_MAX) continue;
      ssize_t n = ::readlinkat(fd_dir, fd_entry->d_name, link, sizeof(link));
      if (n <= 0 || static_cast<size_t>(n) >= sizeof(link)) continue;
      auto inode = SocketInodeFromLink(std::string_view(link, static_cast<size_t>(n)));
      if (!inode) continue;
      Owner owner{*pid, static_cast<int>(*fd)};
      Remember(*inode, owner, scan);
      if (*inode == target && (!found || owner.pid < found->pid)) found = owner;
    }
    ::closedir(fds);
  }
  ::closedir(root);
  return found;
}

std::string SockDiagProcessSource::UserName(uint32_t uid) {
  if (auto it = user_names_.find(uid); it != user_names_.end()) return it->second;
  std::string name;
  std::vector<char> buf(16384);
  while (true) {
    passwd pw{};
    passwd* result = nullptr;
    int rc = ::getpwuid_r(uid, &pw, buf.data(), buf.size(), &result);
    if (rc == ERANGE && buf.size() < kMaxPasswdBuffer) {
      buf.resize(buf.size() * 4);
      continue;
    }
    if (rc == 0 && result != nullptr && result->pw_name != nullptr) name = result->pw_name;
    break;
  }
  if (user_names_.size() >= options_.user_cache_entries) user_names_.clear();
  if (options_.user_cache_entries > 0) user_names_.emplace(uid, name);
  return name;
}

ProcessLookup SockDiagProcessSource::FindByInodeLocked(uint32_t inode) {
  ProcessLookup out;
  const std::string socket_name = "socket inode " + std::to_string(inode);
  if (auto s = EnsureProcRoot(); !s) {
    out.state = Attribution::kUnavailable;
    out.detail = s.error().message + " (mount procfs there or set proc_root)";
    return out;
  }

  std::optional<Owner> owner;
  bool from_cache = false;
  if (auto it = by_inode_.find(inode); it != by_inode_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    owner = it->second->owner;
    from_cache = true;
  }

  // At most two rounds: a cached owner that no longer holds the socket, then one scan.
  for (int round = 0; round < 2; ++round) {
    if (!owner) {
      const auto now = Clock::now();
      if (auto it = not_found_.find(inode); it != not_found_.end()) {
        if (now - it->second < options_.negative_ttl) {
          ++stats_.negative_hits;
          out.state = Attribution::kGone;
          out.detail = "no process holds " + socket_name + " (a recent /proc scan found none)";
          return out;
        }
        not_found_.erase(it);
      }
      if (last_scan_start_ && now - *last_scan_start_ < options_.min_rescan_interval) {
        // Serializes lookups for at most the interval; bounded delay beats a wrong answer.
        ++stats_.scan_waits;
        std::this_thread::sleep_for(options_.min_rescan_interval - (now - *last_scan_start_));
      }
      const uint64_t unreadable_before = stats_.unreadable_processes;
      auto scanned = ScanProc(inode);
      if (!scanned) {
        out.state = Attribution::kUnavailable;
        out.detail = scanned.error().message;
        return out;
      }
      owner = *scanned;
      if (!owner) {
        if (not_found_.size() >= options_.negative_cache_entries) not_found_.clear();
        if (options_.negative_cache_entries > 0) not_found_[inode] = *last_scan_start_;
        out.state = Attribution::kGone;
        out.detail = "no process holds " + socket_name +
                     ": it exited, passed the socket on, or is not visible to us";
        if (uint64_t unreadable = stats_.unreadable_processes - unreadable_before) {
          out.detail += " (" + std::to_string(unreadable) +
                        " processes' fd tables were unreadable: run as root or with "
                        "CAP_SYS_PTRACE)";
        }
        return out;
      }
    }

    // Every read below goes through this directory: if the pid is reused meanwhile, the reads
    // fail instead of describing the new process.
    const std::string pid_name = std::to_string(owner->pid);
    UniqueFd pid_dir(
        ::openat(proc_root_.get(), pid_name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!pid_dir.valid() || !StillHolds(pid_dir.get(), *owner, inode)) {
      Forget(inode);
      if (from_cache) {
        ++stats_.cache_stale;
        from_cache = false;
        owner.reset();
        continue;
      }
      out.state = Attribution::kGone;
      out.detail = "process " + pid_name + " let go of " + socket_name + " while we looked";
      return out;
    }
    if (from_cache) ++stats_.cache_hits;

    analysis::ProcessInfo& p = out.process;
    p.pid = owner->pid;
    auto status = ReadSmallFile(pid_dir.get(), "status", kMaxStatusBytes);
    std::optional<ProcStatus> parsed = status ? ParseProcStatus(*status) : std::nullopt;
    auto exe = ReadLinkAt(pid_dir.get(), "exe");
    auto cmdline = ReadSmallFile(pid_dir.get(), "cmdline", kMaxCmdlineBytes);
    auto cgroup = ReadSmallFile(pid_dir.get(), "cgroup", kMaxCgroupBytes);

    // Only now is it known that all of the above describe the process that holds the socket.
    if (!StillHolds(pid_dir.get(), *owner, inode)) {
      Forget(inode);
      out.process = {};
      out.state = Attribution::kGone;
      out.detail = "process " + pid_name + " exited or closed " + socket_name + " while we looked";
      return out;
    }
    if (!parsed) {
      out.process = {};
      out.state = Attribution::kUnavailable;
      out.detail =
          "cannot read the uid and parent of process " + pid_name + ": " +
          (status ? std::string("status file without PPid/Uid lines") : status.error().message);
      return out;
    }
    p.ppid = parsed->ppid;
    p.uid = parsed->uid;
    p.user = UserName(p.uid);
    if (exe) {
      p.exe = std::move(*exe);
    } else {
      out.detail = "exe of process " + pid_name + " unreadable: " + exe.error().message;
    }
    if (cmdline) p.cmdline = FormatCmdline(*cmdline);
    if (cgroup) p.unit = UnitFromProcCgroup(*cgroup);
    out.state = Attribution::kFound;
    return out;
  }
  out.state = Attribution::kGone;
  out.detail = "no process holds " + socket_name;
  return out;
}

}  // namespace tollgate::platform
