#include "platform/linux/attribution.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"

namespace tollgate::platform {
namespace {

using analysis::Attribution;
using analysis::ProcessLookup;

// --- Pure pieces ---------------------------------------------------------------------------------

TEST(UnitFromCgroupPath, SystemService) {
  EXPECT_EQ(UnitFromCgroupPath("/system.slice/sshd.service"), "sshd.service");
  EXPECT_EQ(UnitFromCgroupPath("/system.slice/system-getty.slice/getty@tty1.service"),
            "getty@tty1.service");
  EXPECT_EQ(UnitFromCgroupPath("/init.scope"), "init.scope");
}

// The outermost unit: what is below it may be named by the unit's own user.
TEST(UnitFromCgroupPath, OutermostServiceOrScope) {
  EXPECT_EQ(
      UnitFromCgroupPath("/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope"),
      "user@1000.service");
  EXPECT_EQ(
      UnitFromCgroupPath("/user.slice/user-1000.slice/user@1000.service/app.slice/sshd.service"),
      "user@1000.service")
      << "a user naming a cgroup sshd.service in their own subtree must not pass as sshd";
  EXPECT_EQ(UnitFromCgroupPath("/user.slice/user-1000.slice/session-3.scope"), "session-3.scope");
  // A service with its own sub-cgroups (delegation): the sub-cgroups are not units.
  EXPECT_EQ(UnitFromCgroupPath("/system.slice/containerd.service/payload/worker"),
            "containerd.service");
  EXPECT_EQ(UnitFromCgroupPath("/system.slice/docker.service/inner.service"), "docker.service");
}

TEST(UnitFromCgroupPath, NoUnit) {
  EXPECT_EQ(UnitFromCgroupPath(""), "");
  EXPECT_EQ(UnitFromCgroupPath("/"), "");
  EXPECT_EQ(UnitFromCgroupPath("/user.slice/user-1000.slice"), "");
  EXPECT_EQ(UnitFromCgroupPath("/.service"), "");  // nothing before the suffix
  EXPECT_EQ(UnitFromCgroupPath("/system.slice/foo.services"), "");
  EXPECT_EQ(UnitFromCgroupPath("/../.."), "");  // outside our cgroup namespace
}

TEST(UnitFromCgroupPath, SystemdEscapingIsUndone) {
  // systemd writes a unit named like a kernel file ("cpu.service" would clash with the cpu
  // controller's files) with a leading '_'.
  EXPECT_EQ(UnitFromCgroupPath("/system.slice/_cpu.service"), "cpu.service");
}

TEST(UnitFromProcCgroup, PrefersTheV2Line) {
  EXPECT_EQ(UnitFromProcCgroup("0::/system.slice/nginx.service\n"), "nginx.service");
  // Hybrid hierarchy: v1 lines, then the unified one.
  EXPECT_EQ(UnitFromProcCgroup("12:cpu,cpuacct:/\n"
                               "1:name=systemd:/system.slice/old.service\n"
                               "0::/system.slice/new.service\n"),
            "new.service");
}

TEST(UnitFromProcCgroup, FallsBackToTheV1SystemdHierarchy) {
  EXPECT_EQ(UnitFromProcCgroup("11:memory:/system.slice/x.service\n"
                               "1:name=systemd:/system.slice/cron.service\n"
                               "0::/\n"),
            "cron.service");
  EXPECT_EQ(UnitFromProcCgroup("1:foo,name=systemd:/system.slice/a.service"), "a.service");
}

TEST(UnitFromProcCgroup, NothingUsable) {
  EXPECT_EQ(UnitFromProcCgroup(""), "");
  EXPECT_EQ(UnitFromProcCgroup("0::/\n"), "");
  EXPECT_EQ(UnitFromProcCgroup("garbage\nno colons here\n"), "");
  // The path may itself contain ':'.
  EXPECT_EQ(UnitFromProcCgroup("0::/system.slice/a:b.service\n"), "a:b.service");
}

TEST(FormatCmdline, JoinsArguments) {
  EXPECT_EQ(FormatCmdline(std::string_view("curl\0-s\0https://example.org\0", 29)),
            "curl -s https://example.org");
  EXPECT_EQ(FormatCmdline(std::string_view("a\0\0b\0", 5)), "a  b");  // an empty argument
  EXPECT_EQ(FormatCmdline(std::string_view("x\0\0\0", 4)), "x");
  EXPECT_EQ(FormatCmdline(""), "");                                            // kernel thread
  EXPECT_EQ(FormatCmdline("nginx: worker process"), "nginx: worker process");  // setproctitle
}

TEST(FormatCmdline, CapsAtFourKiB) {
  std::string raw(5000, 'a');
  raw[10] = '\0';
  std::string out = FormatCmdline(raw);
  EXPECT_EQ(out.size(), kMaxCmdlineBytes);
  EXPECT_EQ(out[10], ' ');
}

TEST(ParseProcStatus, ReadsParentAndRealUid) {
  auto s = ParseProcStatus(
      "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nNgid:\t0\nPid:\t42\n"
      "PPid:\t7\nTracerPid:\t0\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->ppid, 7u);
  EXPECT_EQ(s->uid, 1000u);  // real, not effective
  EXPECT_FALSE(ParseProcStatus("Name:\tx\nPPid:\t1\n").has_value());
  EXPECT_FALSE(ParseProcStatus("PPid:\tx\nUid:\t1\t1\t1\t1\n").has_value());
  EXPECT_FALSE(ParseProcStatus("PPid:\t1\nUid:\t99999999999\n").has_value());
}

TEST(SocketInodeFromLink, OnlySocketLinks) {
  EXPECT_EQ(SocketInodeFromLink("socket:[12345]"), 12345u);
  EXPECT_EQ(SocketInodeFromLink("socket:[4294967295]"), 4294967295u);
  EXPECT_FALSE(SocketInodeFromLink("socket:[4294967296]"));
  EXPECT_FALSE(SocketInodeFromLink("socket:[]"));
  EXPECT_FALSE(SocketInodeFromLink("socket:[12a]"));
  EXPECT_FALSE(SocketInodeFromLink("pipe:[12345]"));
  EXPECT_FALSE(SocketInodeFromLink("/dev/null"));
  EXPECT_FALSE(SocketInodeFromLink("anon_inode:[eventfd]"));
}

IpAddress Ip(const char* text) {
  auto ip = IpAddress::Parse(text);
  TG_CHECK(ip.has_value());
  return *ip;
}

SockDiagSocket Sock(uint8_t family, const char* local, uint16_t lport, const char* remote,
                    uint16_t rport, int8_t v6only = -1) {
  SockDiagSocket s;
  s.family = family;
  s.local = Ip(local);
  s.local_port = lport;
  s.remote = Ip(remote);
  s.remote_port = rport;
  s.v6only = v6only;
  return s;
}

TEST(SocketMatchScore, PrefersConnectedThenExactThenWildcard) {
  IpAddress l = Ip("10.0.0.1"), r = Ip("10.0.0.2");
  int connected = SocketMatchScore(Sock(AF_INET, "10.0.0.1", 5000, "10.0.0.2", 53), l, 5000, r, 53);
  int bound = SocketMatchScore(Sock(AF_INET, "10.0.0.1", 5000, "0.0.0.0", 0), l, 5000, r, 53);
  int wildcard = SocketMatchScore(Sock(AF_INET, "0.0.0.0", 5000, "0.0.0.0", 0), l, 5000, r, 53);
  EXPECT_GE(connected, kConnectedMatch);
  EXPECT_GT(connected, bound);
  EXPECT_GT(bound, wildcard);
  EXPECT_GT(wildcard, 0);
  EXPECT_LT(bound, kConnectedMatch);
}

TEST(SocketMatchScore, RejectsOtherPortsPeersAndAddresses) {
  IpAddress l = Ip("10.0.0.1"), r = Ip("10.0.0.2");
  EXPECT_EQ(SocketMatchScore(Sock(AF_INET, "10.0.0.1", 5001, "10.0.0.2", 53), l, 5000, r, 53), -1);
  EXPECT_EQ(SocketMatchScore(Sock(AF_INET, "10.0.0.1", 5000, "10.0.0.3", 53), l, 5000, r, 53), -1);
  EXPECT_EQ(SocketMatchScore(Sock(AF_INET, "10.0.0.1", 5000, "10.0.0.2", 54), l, 5000, r, 53), -1);
  EXPECT_EQ(SocketMatchScore(Sock(AF_INET, "10.0.0.9", 5000, "0.0.0.0", 0), l, 5000, r, 53), -1);
}

TEST(SocketMatchScore, DualStack) {
  IpAddress l4 = Ip("127.0.0.1"), r4 = Ip("127.0.0.2");
  // An AF_INET6 socket serving IPv4 keeps ::ffff:a.b.c.d.
  EXPECT_GE(SocketMatchScore(Sock(AF_INET6, "::ffff:127.0.0.1", 80, "::ffff:127.0.0.2", 999), l4,
                             80, r4, 999),
            kConnectedMatch);
  EXPECT_GT(SocketMatchScore(Sock(AF_INET6, "::", 80, "::", 0, 0), l4, 80, r4, 999), 0);
  EXPECT_EQ(SocketMatchScore(Sock(AF_INET6, "::", 80, "::", 0, 1), l4, 80, r4, 999), -1);
  EXPECT_EQ(SocketMatchScore(Sock(AF_INET6, "::1", 80, "::", 0, 0), l4, 80, r4, 999), -1);
  // An AF_INET socket never serves IPv6.
  EXPECT_EQ(
      SocketMatchScore(Sock(AF_INET, "0.0.0.0", 80, "0.0.0.0", 0), Ip("::1"), 80, Ip("::1"), 999),
      -1);
  EXPECT_GT(SocketMatchScore(Sock(AF_INET6, "::", 80, "::", 0, 1), Ip("::1"), 80, Ip("::1"), 999),
            0);
}

// --- The netlink reply walker on crafted bytes -----------------------------------------------

struct Craft {
  std::vector<uint8_t> bytes;

  void Message(uint16_t type, uint16_t flags, uint32_t seq, const std::vector<uint8_t>& payload,
               int32_t len_delta = 0) {
    nlmsghdr h{};
    h.nlmsg_len = static_cast<uint32_t>(NLMSG_HDRLEN + payload.size() + len_delta);
    h.nlmsg_type = type;
    h.nlmsg_flags = flags;
    h.nlmsg_seq = seq;
    size_t at = bytes.size();
    bytes.resize(at + NLMSG_ALIGN(NLMSG_HDRLEN + payload.size()), 0);
    std::memcpy(bytes.data() + at, &h, sizeof(h));
    std::memcpy(bytes.data() + at + NLMSG_HDRLEN, payload.data(), payload.size());
  }
  void Socket(uint16_t flags, uint32_t seq, uint32_t inode, std::vector<uint8_t> attrs = {}) {
    inet_diag_msg m{};
    m.idiag_family = AF_INET;
    m.idiag_state = 2;  // SYN_SENT
    m.id.idiag_sport = htons(40000);
    m.id.idiag_dport = htons(443);
    m.id.idiag_src[0] = htonl(0x7f000001);
    m.id.idiag_dst[0] = htonl(0x0a000002);
    m.idiag_uid = 1000;
    m.idiag_inode = inode;
    std::vector<uint8_t> payload(sizeof(m));
    std::memcpy(payload.data(), &m, sizeof(m));
    payload.insert(payload.end(), attrs.begin(), attrs.end());
    Message(SOCK_DIAG_BY_FAMILY, flags, seq, payload);
  }
  void Status(uint16_t type, uint32_t seq, int32_t status) {
    std::vector<uint8_t> payload(sizeof(nlmsgerr), 0);
    std::memcpy(payload.data(), &status, sizeof(status));
    Message(type, 0, seq, payload);
  }
};

std::vector<uint8_t> Attr(uint16_t type, std::vector<uint8_t> value, int len_delta = 0) {
  rtattr rta{};
  rta.rta_type = type;
  rta.rta_len = static_cast<unsigned short>(RTA_LENGTH(value.size()) + len_delta);
  std::vector<uint8_t> out(RTA_ALIGN(RTA_LENGTH(value.size())), 0);
  std::memcpy(out.data(), &rta, sizeof(rta));
  std::memcpy(out.data() + RTA_LENGTH(0), value.data(), value.size());
  return out;
}

TEST(WalkSockDiagReply, ParsesAnExactAnswer) {
  Craft c;
  c.Socket(0, 7, 555, Attr(INET_DIAG_SKV6ONLY, {1}));
  std::vector<SockDiagSocket> seen;
  auto walk = WalkSockDiagReply(c.bytes, 7, [&](const SockDiagSocket& s) { seen.push_back(s); });
  ASSERT_TRUE(walk) << walk.error().message;
  EXPECT_TRUE(walk->done);
  EXPECT_EQ(walk->kernel_errno, 0);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].family, AF_INET);
  EXPECT_EQ(seen[0].state, 2);
  EXPECT_EQ(seen[0].local, IpAddress::V4(127, 0, 0, 1));
  EXPECT_EQ(seen[0].remote, IpAddress::V4(10, 0, 0, 2));
  EXPECT_EQ(seen[0].local_port, 40000);
  EXPECT_EQ(seen[0].remote_port, 443);
  EXPECT_EQ(seen[0].uid, 1000u);
  EXPECT_EQ(seen[0].inode, 555u);
  EXPECT_EQ(seen[0].v6only, 1);
}

TEST(WalkSockDiagReply, DumpEndsAtDoneAndSkipsStaleSequences) {
  Craft c;
  c.Socket(NLM_F_MULTI, 6, 1);  // late answer to an earlier request
  c.Socket(NLM_F_MULTI, 7, 2);
  c.Socket(NLM_F_MULTI, 7, 3);
  std::vector<uint32_t> inodes;
  auto visit = [&](const SockDiagSocket& s) { inodes.push_back(s.inode); };
  auto first = WalkSockDiagReply(c.bytes, 7, visit);
  ASSERT_TRUE(first);
  EXPECT_FALSE(first->done);  // more datagrams follow
  EXPECT_EQ(first->skipped, 1u);
  EXPECT_EQ(inodes, (std::vector<uint32_t>{2, 3}));

  Craft end;
  end.Status(NLMSG_DONE, 7, 0);
  auto second = WalkSockDiagReply(end.bytes, 7, visit);
  ASSERT_TRUE(second);
  EXPECT_TRUE(second->done);
  EXPECT_EQ(second->kernel_errno, 0);
}

TEST(WalkSockDiagReply, ReportsKernelErrors) {
  Craft c;
  c.Status(NLMSG_ERROR, 9, -ENOENT);
  auto walk = WalkSockDiagReply(c.bytes, 9, nullptr);
  ASSERT_TRUE(walk);
  EXPECT_TRUE(walk->done);
  EXPECT_EQ(walk->kernel_errno, ENOENT);
}

void ExpectMalformed(const std::vector<uint8_t>& bytes, uint32_t seq) {
  auto walk = WalkSockDiagReply(bytes, seq, nullptr);
  ASSERT_FALSE(walk);
  EXPECT_EQ(walk.error().code, ErrorCode::kMalformed);
  EXPECT_NE(walk.error().message.find("at byte"), std::string::npos) << walk.error().message;
}

TEST(WalkSockDiagReply, RejectsBadLengths) {
  Craft c;
  c.Socket(NLM_F_MULTI, 1, 1);
  std::vector<uint8_t> cut(c.bytes.begin(), c.bytes.end() - 8);  // nlmsg_len beyond the end
  ExpectMalformed(cut, 1);
  ExpectMalformed(std::vector<uint8_t>(c.bytes.begin(), c.bytes.begin() + 10), 1);

  Craft tiny;  // nlmsg_len smaller than the header: would loop forever if trusted
  tiny.Message(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, 1, {0, 0, 0, 0}, -12);
  ExpectMalformed(tiny.bytes, 1);

  Craft short_msg;
  short_msg.Message(SOCK_DIAG_BY_FAMILY, 0, 1, std::vector<uint8_t>(20, 0));
  ExpectMalformed(short_msg.bytes, 1);

  Craft bad_attr;
  bad_attr.Socket(0, 1, 1, Attr(INET_DIAG_SKV6ONLY, {1}, 40));
  ExpectMalformed(bad_attr.bytes, 1);

  Craft tiny_attr;
  tiny_attr.Socket(0, 1, 1, Attr(INET_DIAG_SKV6ONLY, {1}, -3));  // rta_len 2 < sizeof(rtattr)
  ExpectMalformed(tiny_attr.bytes, 1);

  Craft bad_error;
  bad_error.Status(NLMSG_ERROR, 1, INT_MIN);
  ExpectMalformed(bad_error.bytes, 1);
}

// --- Real sockets ----------------------------------------------------------------------------

std::string SelfExe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf));
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

bool Ipv6Loopback() {
  UniqueFd fd(::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
}

#define REQUIRE_IPV6()                                                       \
  do {                                                                       \
    if (!Ipv6Loopback()) GTEST_SKIP() << "no IPv6 loopback in this sandbox"; \
  } while (0)

sockaddr_storage Addr(const char* ip, uint16_t port) {
  sockaddr_storage ss{};
  if (std::strchr(ip, ':') != nullptr) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    TG_CHECK(::inet_pton(AF_INET6, ip, &a->sin6_addr) == 1);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    TG_CHECK(::inet_pton(AF_INET, ip, &a->sin_addr) == 1);
  }
  return ss;
}

socklen_t Len(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

// An endpoint as a packet would show it: a v4-mapped IPv6 address is the IPv4 address.
struct Endpoint {
  IpAddress ip;
  uint16_t port = 0;
};

Endpoint FromSockaddr(const sockaddr_storage& ss) {
  Endpoint e;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    e.ip.family = 4;
    std::memcpy(e.ip.bytes.data(), &a->sin_addr, 4);
    e.port = ntohs(a->sin_port);
  } else {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      e.ip.family = 4;
      std::memcpy(e.ip.bytes.data(), a->sin6_addr.s6_addr + 12, 4);
    } else {
      e.ip.family = 6;
      std::memcpy(e.ip.bytes.data(), &a->sin6_addr, 16);
    }
    e.port = ntohs(a->sin6_port);
  }
  return e;
}

Endpoint LocalOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  TG_CHECK(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
  return FromSockaddr(ss);
}

Endpoint At(const char* ip, uint16_t port) { return Endpoint{Ip(ip), port}; }

FlowQuestion Question(uint8_t protocol, Direction direction, Endpoint src, Endpoint dst) {
  FlowQuestion q;
  q.id = 1;
  q.tuple.protocol = protocol;
  q.tuple.src = src.ip;
  q.tuple.src_port = src.port;
  q.tuple.dst = dst.ip;
  q.tuple.dst_port = dst.port;
  q.direction = direction;
  return q;
}

FlowQuestion Outbound(uint8_t protocol, Endpoint local, Endpoint remote) {
  return Question(protocol, Direction::kOutbound, local, remote);
}

FlowQuestion Inbound(uint8_t protocol, Endpoint remote, Endpoint local) {
  return Question(protocol, Direction::kInbound, remote, local);
}

UniqueFd Bound(int type, const char* ip, int v6only = -1, uint16_t port = 0) {
  sockaddr_storage a = Addr(ip, port);
  UniqueFd fd(::socket(a.ss_family, type | SOCK_CLOEXEC, 0));
  TG_CHECK(fd.valid());
  if (v6only >= 0) {
    TG_CHECK(::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) == 0);
  }
  TG_CHECK(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), Len(a)) == 0);
  return fd;
}

UniqueFd Listener(const char* ip, int v6only = -1, int backlog = 16) {
  UniqueFd fd = Bound(SOCK_STREAM, ip, v6only);
  TG_CHECK(::listen(fd.get(), backlog) == 0);
  return fd;
}

UniqueFd Connected(int type, const char* to_ip, uint16_t port) {
  sockaddr_storage a = Addr(to_ip, port);
  UniqueFd fd(::socket(a.ss_family, type | SOCK_CLOEXEC, 0));
  TG_CHECK(fd.valid());
  TG_CHECK(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), Len(a)) == 0);
  return fd;
}

// A port nobody on loopback uses right now.
uint16_t FreePort(int type) {
  UniqueFd fd = Bound(type, "127.0.0.1");
  return LocalOf(fd.get()).port;
}

void ExpectSelf(const ProcessLookup& r) {
  ASSERT_EQ(r.state, Attribution::kFound) << r.detail;
  EXPECT_EQ(r.process.pid, static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(r.process.ppid, static_cast<uint32_t>(::getppid()));
  EXPECT_EQ(r.process.uid, ::getuid());
  EXPECT_EQ(r.process.exe, SelfExe());
  EXPECT_NE(r.process.cmdline.find("platform_attribution_test"), std::string::npos)
      << r.process.cmdline;
  passwd* pw = ::getpwuid(::getuid());
  EXPECT_EQ(r.process.user, pw != nullptr ? pw->pw_name : "");
}

TEST(SockDiagProcessSource, TcpClientAndListener) {
  SockDiagProcessSource source;
  UniqueFd listener = Listener("127.0.0.1");
  Endpoint server = LocalOf(listener.get());
  UniqueFd client = Connected(SOCK_STREAM, "127.0.0.1", server.port);

  ExpectSelf(source.Find(Outbound(ipproto::kTcp, LocalOf(client.get()), server)));
  // A new inbound connection (the SYN held in NFQUEUE): the listener.
  ExpectSelf(source.Find(Inbound(ipproto::kTcp, At("127.0.0.1", 1), server)));
  // The inbound side of the connection made above: not accepted yet, so it has no file of its
  // own; the listener's process is the one that will get it.
  ExpectSelf(source.Find(Inbound(ipproto::kTcp, LocalOf(client.get()), server)));
}

TEST(SockDiagProcessSource, ListenerOnTheWildcardAddress) {
  SockDiagProcessSource source;
  UniqueFd listener = Listener("0.0.0.0");
  uint16_t port = LocalOf(listener.get()).port;
  ExpectSelf(source.Find(Inbound(ipproto::kTcp, At("127.0.0.1", 1), At("127.0.0.1", port))));
  ExpectSelf(source.Find(Inbound(ipproto::kTcp, At("127.0.0.9", 2), At("127.0.0.5", port))));
}

TEST(SockDiagProcessSource, TcpClientInSynSent) {
  // A listener with a full accept queue drops further SYNs, so the next client stays in SYN_SENT
  // like a client whose SYN sits in NFQUEUE.
  SockDiagProcessSource source;
  UniqueFd listener = Listener("127.0.0.1", -1, /*backlog=*/0);
  Endpoint server = LocalOf(listener.get());
  UniqueFd filler = Connected(SOCK_STREAM, "127.0.0.1", server.port);
  sockaddr_storage a = Addr("127.0.0.1", server.port);
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(client.valid());
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&a), Len(a)), -1);
  ASSERT_EQ(errno, EINPROGRESS);
  tcp_info info{};
  socklen_t len = sizeof(info);
  ASSERT_EQ(::getsockopt(client.get(), IPPROTO_TCP, TCP_INFO, &info, &len), 0);
  ASSERT_EQ(info.tcpi_state, TCP_SYN_SENT) << "test setup did not produce a SYN_SENT client";
  ExpectSelf(source.Find(Outbound(ipproto::kTcp, LocalOf(client.get()), server)));
}

TEST(SockDiagProcessSource, UdpConnectedUnconnectedAndInbound) {
  SockDiagProcessSource source;
  UniqueFd server = Bound(SOCK_DGRAM, "127.0.0.1");
  Endpoint server_end = LocalOf(server.get());

  UniqueFd connected = Connected(SOCK_DGRAM, "127.0.0.1", server_end.port);
  ExpectSelf(source.Find(Outbound(ipproto::kUdp, LocalOf(connected.get()), server_end)));

  // sendto() from a socket bound to 0.0.0.0: the packet says 127.0.0.1, the socket says 0.0.0.0.
  UniqueFd unconnected = Bound(SOCK_DGRAM, "0.0.0.0");
  sockaddr_storage to = Addr("127.0.0.1", server_end.port);
  ASSERT_EQ(::sendto(unconnected.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&to), Len(to)), 1);
  uint16_t port = LocalOf(unconnected.get()).port;
  ExpectSelf(source.Find(Outbound(ipproto::kUdp, At("127.0.0.1", port), server_end)));
  ExpectSelf(source.Find(Outbound(ipproto::kUdp, At("127.0.0.1", port), At("127.0.0.3", 53))));

  // A datagram arriving for the bound server socket, from anyone.
  ExpectSelf(source.Find(Inbound(ipproto::kUdp, At("127.0.0.7", 5353), server_end)));
}

TEST(SockDiagProcessSource, Ipv6Loopback) {
  REQUIRE_IPV6();
  SockDiagProcessSource source;
  UniqueFd listener = Listener("::1");
  Endpoint server = LocalOf(listener.get());
  UniqueFd client = Connected(SOCK_STREAM, "::1", server.port);
  ExpectSelf(source.Find(Outbound(ipproto::kTcp, LocalOf(client.get()), server)));
  ExpectSelf(source.Find(Inbound(ipproto::kTcp, At("::1", 1), server)));

  UniqueFd udp_server = Bound(SOCK_DGRAM, "::1");
  Endpoint udp_end = LocalOf(udp_server.get());
  UniqueFd udp_client = Connected(SOCK_DGRAM, "::1", udp_end.port);
  ExpectSelf(source.Find(Outbound(ipproto::kUdp, LocalOf(udp_client.get()), udp_end)));
  ExpectSelf(source.Find(Inbound(ipproto::kUdp, At("::1", 7), udp_end)));
}

TEST(SockDiagProcessSource, DualStackSocketsServeIpv4) {
  REQUIRE_IPV6();
  SockDiagProcessSource source;
  // A :: listener that also takes IPv4, and an IPv4 connection to it from an AF_INET6 client.
  UniqueFd listener = Listener("::", /*v6only=*/0);
  uint16_t port = LocalOf(listener.get()).port;
  ExpectSelf(source.Find(Inbound(ipproto::kTcp, At("127.0.0.1", 1), At("127.0.0.1", port))));
  UniqueFd client = Connected(SOCK_STREAM, "::ffff:127.0.0.1", port);
  Endpoint client_end = LocalOf(client.get());
  ASSERT_EQ(client_end.ip.family, 4);  // the packets are IPv4
  ExpectSelf(source.Find(Outbound(ipproto::kTcp, client_end, At("127.0.0.1", port))));

  UniqueFd udp = Bound(SOCK_DGRAM, "::", /*v6only=*/0);
  uint16_t udp_port = LocalOf(udp.get()).port;
  ExpectSelf(source.Find(Inbound(ipproto::kUdp, At("127.0.0.1", 9), At("127.0.0.1", udp_port))));
}

TEST(SockDiagProcessSource, V6OnlySocketsDoNotServeIpv4) {
  REQUIRE_IPV6();
  SockDiagProcessSource source;
  UniqueFd listener = Listener("::", /*v6only=*/1);
  uint16_t port = LocalOf(listener.get()).port;
  ProcessLookup v4 = source.Find(Inbound(ipproto::kTcp, At("127.0.0.1", 1), At("127.0.0.1", port)));
  EXPECT_EQ(v4.state, Attribution::kNotFound) << v4.detail;
  ExpectSelf(source.Find(Inbound(ipproto::kTcp, At("::1", 1), At("::1", port))));

  UniqueFd udp = Bound(SOCK_DGRAM, "::", /*v6only=*/1);
  uint16_t udp_port = LocalOf(udp.get()).port;
  ProcessLookup v4_udp =
      source.Find(Inbound(ipproto::kUdp, At("127.0.0.1", 9), At("127.0.0.1", udp_port)));
  EXPECT_EQ(v4_udp.state, Attribution::kNotFound) << v4_udp.detail;
  ExpectSelf(source.Find(Inbound(ipproto::kUdp, At("::1", 9), At("::1", udp_port))));
}

TEST(SockDiagProcessSource, NoSocketIsNotFound) {
  SockDiagProcessSource source;
  for (uint8_t protocol : {ipproto::kTcp, ipproto::kUdp}) {
    uint16_t port = FreePort(protocol == ipproto::kTcp ? SOCK_STREAM : SOCK_DGRAM);
    ProcessLookup out = source.Find(Outbound(protocol, At("127.0.0.1", port), At("127.0.0.1", 9)));
    EXPECT_EQ(out.state, Attribution::kNotFound) << out.detail;
    EXPECT_NE(out.detail.find(std::to_string(port)), std::string::npos) << out.detail;
    ProcessLookup in = source.Find(Inbound(protocol, At("127.0.0.1", 9), At("127.0.0.1", port)));
    EXPECT_EQ(in.state, Attribution::kNotFound) << in.detail;
  }
}

TEST(SockDiagProcessSource, IcmpAndOddQuestions) {
  SockDiagProcessSource source;
  ProcessLookup icmp =
      source.Find(Outbound(ipproto::kIcmp, At("127.0.0.1", 8), At("127.0.0.1", 0)));
  EXPECT_EQ(icmp.state, Attribution::kNotFound);
  EXPECT_NE(icmp.detail.find("ICMP"), std::string::npos) << icmp.detail;
  ProcessLookup sctp = source.Find(Outbound(132, At("127.0.0.1", 8), At("127.0.0.1", 9)));
  EXPECT_EQ(sctp.state, Attribution::kNotFound);
  EXPECT_FALSE(sctp.detail.empty());
  ProcessLookup mixed = source.Find(Outbound(ipproto::kTcp, At("127.0.0.1", 8), At("::1", 9)));
  EXPECT_EQ(mixed.state, Attribution::kUnavailable);
  EXPECT_EQ(source.stats().netlink_requests, 0u);  // none of these asked the kernel
}

TEST(SockDiagProcessSource, BurstCostsOneScan) {
  SockDiagProcessSource source;
  UniqueFd listener = Listener("127.0.0.1");
  Endpoint server = LocalOf(listener.get());
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 5; ++i) clients.push_back(Connected(SOCK_STREAM, "127.0.0.1", server.port));
  for (const UniqueFd& c : clients) {
    ExpectSelf(source.Find(Outbound(ipproto::kTcp, LocalOf(c.get()), server)));
  }
  SockDiagProcessSource::Stats stats = source.stats();
  EXPECT_EQ(stats.proc_scans, 1u);
  EXPECT_EQ(stats.cache_hits, 4u);
}

TEST(SockDiagProcessSource, CachedOwnerIsCheckedBeforeUse) {
  SockDiagProcessSource source;
  UniqueFd listener = Listener("127.0.0.1");
  Endpoint server = LocalOf(listener.get());
  UniqueFd client = Connected(SOCK_STREAM, "127.0.0.1", server.port);
  FlowQuestion q = Outbound(ipproto::kTcp, LocalOf(client.get()), server);
  ExpectSelf(source.Find(q));
  // Same socket, another fd: the cached (pid, fd) no longer names it.
  UniqueFd moved(::fcntl(client.get(), F_DUPFD_CLOEXEC, 100));
  ASSERT_TRUE(moved.valid());
  client.Reset();
  ExpectSelf(source.Find(q));
  SockDiagProcessSource::Stats stats = source.stats();
  EXPECT_EQ(stats.cache_stale, 1u);
  EXPECT_EQ(stats.proc_scans, 2u);
}

// --- Other processes -----------------------------------------------------------------------------

struct Pipe {
  UniqueFd read, write;
  Pipe() {
    int fds[2];
    TG_CHECK(::pipe2(fds, O_CLOEXEC) == 0);
    read.Reset(fds[0]);
    write.Reset(fds[1]);
  }
};

template <typename T>
void WriteAll(int fd, const T& value) {
  TG_CHECK(::write(fd, &value, sizeof(value)) == static_cast<ssize_t>(sizeof(value)));
}

template <typename T>
bool ReadAll(int fd, T& value) {
  return ::read(fd, &value, sizeof(value)) == static_cast<ssize_t>(sizeof(value));
}

struct ChildReport {
  pid_t holder = 0;  // the process left holding the socket
  uint16_t port = 0;
};

enum class ChildPlan { kHold, kHandToGrandchild, kExitWithReset, kExitWithClose };

// Forks a child that connects to 127.0.0.1:`port` and follows `plan`. Holders block until
// `release` is closed.
pid_t StartChild(ChildPlan plan, uint16_t port, Pipe& report, Pipe& release) {
  pid_t pid = ::fork();
  TG_CHECK(pid >= 0);
  if (pid != 0) return pid;
  // Child: only async-signal-safe-enough work, then _exit.
  release.write.Reset();
  sockaddr_storage a = Addr("127.0.0.1", port);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), Len(a)) != 0) ::_exit(2);
  ChildReport r;
  r.holder = ::getpid();
  r.port = LocalOf(fd).port;
  char byte;
  switch (plan) {
    case ChildPlan::kHold:
      WriteAll(report.write.get(), r);
      (void)::read(release.read.get(), &byte, 1);
      ::_exit(0);
    case ChildPlan::kHandToGrandchild: {
      pid_t grandchild = ::fork();
      if (grandchild < 0) ::_exit(3);
      if (grandchild == 0) {
        (void)::read(release.read.get(), &byte, 1);
        ::_exit(0);
      }
      r.holder = grandchild;
      WriteAll(report.write.get(), r);
      ::_exit(0);  // the grandchild keeps the socket
    }
    case ChildPlan::kExitWithReset: {
      linger l{1, 0};  // close() sends RST and frees the socket at once
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
      WriteAll(report.write.get(), r);
      ::_exit(0);
    }
    case ChildPlan::kExitWithClose:
      WriteAll(report.write.get(), r);
      ::_exit(0);  // FIN: the socket lingers in FIN_WAIT without a file
  }
  ::_exit(4);
}

void Reap(pid_t pid) {
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
}

TEST(SockDiagProcessSource, ChildProcess) {
  SockDiagProcessSource source;
  UniqueFd listener = Listener("127.0.0.1");
  Endpoint server = LocalOf(listener.get());
  Pipe report, release;
  pid_t child = StartChild(ChildPlan::kHold, server.port, report, release);
  report.write.Reset();
  ChildReport r;
  ASSERT_TRUE(ReadAll(report.read.get(), r));

  ProcessLookup out = source.Find(Outbound(ipproto::kTcp, At("127.0.0.1", r.port), server));
  ASSERT_EQ(out.state, Attribution::kFound) << out.detail;
  EXPECT_EQ(out.process.pid, static_cast<uint32_t>(child));
  EXPECT_EQ(out.process.ppid, static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(out.process.exe, SelfExe());  // fork keeps the executable

  release.write.Reset();
  Reap(child);
}

TEST(SockDiagProcessSource, SocketLeftWithAGrandchild) {
  SockDiagProcessSource source;
  UniqueFd listener = Listener("127.0.0.1");
  Endpoint server = LocalOf(listener.get());
  Pipe report, release;
  pid_t child = StartChild(ChildPlan::kHandToGrandchild, server.port, report, release);
  report.write.Reset();
  ChildReport r;
  ASSERT_TRUE(ReadAll(report.read.get(), r));
  Reap(child);  // only the grandchild holds the socket now

  ProcessLookup out = source.Find(Outbound(ipproto::kTcp, At("127.0.0.1", r.port), server));
  ASSERT_EQ(out.state, Attribution::kFound) << out.detail;
  EXPECT_EQ(out.process.pid, static_cast<uint32_t>(r.holder));
  EXPECT_NE(out.process.pid, static_cast<uint32_t>(child));
  release.write.Reset();  // the grandchild exits (it is not ours to reap)
}

TEST(SockDiagProcessSource, ChildThatExitedWithReset) {
  SockDiagProcessSource source;
  UniqueFd listener = Listener("127.0.0.1");
  Endpoint server = LocalOf(listener.get());
  Pipe report, release;
  pid_t child = StartChild(ChildPlan::kExitWithReset, server.port, report, release);
  report.write.Reset();
  ChildReport r;
  ASSERT_TRUE(ReadAll(report.read.get(), r));
  Reap(child);
  ProcessLookup out = source.Find(Outbound(ipproto::kTcp, At("127.0.0.1", r.port), server));
  EXPECT_EQ(out.state, Attribution::kNotFound) << out.detail;
}

TEST(SockDiagProcessSource, ChildThatExitedLeavesAnOrphanSocket) {
  SockDiagProcessSource source;
  UniqueFd listener = Listener("127.0.0.1");
  Endpoint server = LocalOf(listener.get());
  Pipe report, release;
  pid_t child = StartChild(ChildPlan::kExitWithClose, server.port, report, release);
  report.write.Reset();
  ChildReport r;
  ASSERT_TRUE(ReadAll(report.read.get(), r));
  Reap(child);
  // The connection still exists (FIN_WAIT, the server has not closed) but no process has it.
  ProcessLookup out = source.Find(Outbound(ipproto::kTcp, At("127.0.0.1", r.port), server));
  EXPECT_EQ(out.state, Attribution::kGone) << out.detail;
  EXPECT_EQ(out.process.pid, 0u);
}

// --- A fake /proc
// ---------------------------------------------------------------------------------

class FakeProc : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "attribution_proc_XXXXXX";
    ASSERT_NE(::mkdtemp(templ.data()), nullptr) << std::strerror(errno);
    root_ = templ;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Process(uint32_t pid, uint32_t ppid, uint32_t uid, const std::string& exe,
               const std::string& cmdline, const std::string& cgroup, bool with_status = true) {
    std::filesystem::path dir = root_ / std::to_string(pid);
    std::filesystem::create_directories(dir / "fd");
    std::filesystem::create_directory_symlink(exe, dir / "exe");
    std::ofstream(dir / "cmdline", std::ios::binary) << cmdline;
    std::ofstream(dir / "cgroup") << cgroup;
    if (with_status) {
      std::ofstream(dir / "status")
          << "Name:\tfake\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t" << pid << "\nPPid:\t" << ppid
          << "\nUid:\t" << uid << "\t" << uid << "\t" << uid << "\t" << uid << "\n";
    }
  }
  void Fd(uint32_t pid, int fd, const std::string& target) {
    std::filesystem::create_symlink(target,
                                    root_ / std::to_string(pid) / "fd" / std::to_string(fd));
  }
  void RemoveFd(uint32_t pid, int fd) {
    std::filesystem::remove(root_ / std::to_string(pid) / "fd" / std::to_string(fd));
  }
  SockDiagProcessSource::Options Options() {
    SockDiagProcessSource::Options o;
    o.proc_root = root_.string();
    o.min_rescan_interval = std::chrono::milliseconds(0);
    return o;
  }

  std::filesystem::path root_;
};

TEST_F(FakeProc, ReadsTheProcessThatHoldsTheInode) {
  Process(100, 1, 4321, "/usr/sbin/fake-daemon", std::string("fake-daemon\0--listen\0a b\0", 25),
          "0::/system.slice/fake.service\n");
  Fd(100, 0, "/dev/null");
  Fd(100, 3, "pipe:[77]");
  Fd(100, 4, "socket:[4242]");
  std::filesystem::create_directory(root_ / "sys");  // not a pid
  SockDiagProcessSource source(Options());
  ProcessLookup out = source.FindByInode(4242);
  ASSERT_EQ(out.state, Attribution::kFound) << out.detail;
  EXPECT_EQ(out.process.pid, 100u);
  EXPECT_EQ(out.process.ppid, 1u);
  EXPECT_EQ(out.process.uid, 4321u);
  EXPECT_EQ(out.process.exe, "/usr/sbin/fake-daemon");
  EXPECT_EQ(out.process.cmdline, "fake-daemon --listen a b");
  EXPECT_EQ(out.process.unit, "fake.service");
  passwd* pw = ::getpwuid(4321);
  EXPECT_EQ(out.process.user, pw != nullptr ? pw->pw_name : "");
}

TEST_F(FakeProc, SharedSocketGoesToTheLowestPidThenToTheNextHolder) {
  Process(300, 1, 0, "/bin/parent", std::string("parent\0", 7), "0::/system.slice/p.service\n");
  Process(20, 1, 0, "/bin/other", std::string("other\0", 6), "0::/\n");
  Process(301, 300, 0, "/bin/worker", std::string("worker\0", 7), "0::/system.slice/p.service\n");
  Fd(301, 5, "socket:[9000]");
  Fd(300, 5, "socket:[9000]");
  Fd(20, 1, "socket:[1]");
  SockDiagProcessSource source(Options());
  ProcessLookup first = source.FindByInode(9000);
  ASSERT_EQ(first.state, Attribution::kFound) << first.detail;
  EXPECT_EQ(first.process.pid, 300u);
  EXPECT_EQ(first.process.unit, "p.service");
  // The scan recorded the other socket too: no second scan for it.
  ProcessLookup other = source.FindByInode(1);
  ASSERT_EQ(other.state, Attribution::kFound) << other.detail;
  EXPECT_EQ(other.process.pid, 20u);
  EXPECT_EQ(other.process.unit, "");
  EXPECT_EQ(source.stats().proc_scans, 1u);

  RemoveFd(300, 5);  // the parent closed its copy
  ProcessLookup second = source.FindByInode(9000);
  ASSERT_EQ(second.state, Attribution::kFound) << second.detail;
  EXPECT_EQ(second.process.pid, 301u);
  EXPECT_EQ(second.process.ppid, 300u);
  EXPECT_EQ(source.stats().cache_stale, 1u);

  RemoveFd(301, 5);  // and now nobody holds it
  ProcessLookup gone = source.FindByInode(9000);
  EXPECT_EQ(gone.state, Attribution::kGone) << gone.detail;
  EXPECT_EQ(gone.process.pid, 0u);
  const uint64_t scans = source.stats().proc_scans;
  // Asked again at once: the negative cache answers without another scan.
  EXPECT_EQ(source.FindByInode(9000).state, Attribution::kGone);
  EXPECT_EQ(source.stats().proc_scans, scans);
  EXPECT_EQ(source.stats().negative_hits, 1u);
}

TEST_F(FakeProc, NegativeAnswersExpire) {
  SockDiagProcessSource::Options o = Options();
  o.negative_ttl = std::chrono::milliseconds(0);
  SockDiagProcessSource source(o);
  EXPECT_EQ(source.FindByInode(55).state, Attribution::kGone);
  Process(7, 1, 0, "/bin/late", std::string("late\0", 5), "");
  Fd(7, 9, "socket:[55]");  // e.g. received over SCM_RIGHTS after the first scan
  ProcessLookup out = source.FindByInode(55);
  ASSERT_EQ(out.state, Attribution::kFound) << out.detail;
  EXPECT_EQ(out.process.pid, 7u);
}

TEST_F(FakeProc, CacheIsBounded) {
  SockDiagProcessSource::Options o = Options();
  o.inode_cache_entries = 2;
  Process(10, 1, 0, "/bin/x", "", "");
  for (int i = 0; i < 5; ++i) Fd(10, 10 + i, "socket:[" + std::to_string(500 + i) + "]");
  SockDiagProcessSource source(o);
  for (uint32_t inode = 500; inode < 505; ++inode) {
    ProcessLookup out = source.FindByInode(inode);
    ASSERT_EQ(out.state, Attribution::kFound) << out.detail;
    EXPECT_EQ(out.process.cmdline, "");
  }
  // Two entries cannot serve five sockets: more scans, never a wrong answer, never more entries.
  EXPECT_GE(source.stats().proc_scans, 2u);
  EXPECT_LE(source.stats().cached_inodes, 2u);
}

TEST_F(FakeProc, MissingStatusIsUnavailableNotAGuess) {
  Process(11, 1, 0, "/bin/x", "", "", /*with_status=*/false);
  Fd(11, 3, "socket:[31]");
  SockDiagProcessSource source(Options());
  ProcessLookup out = source.FindByInode(31);
  EXPECT_EQ(out.state, Attribution::kUnavailable) << out.detail;
  EXPECT_EQ(out.process.pid, 0u);
  EXPECT_NE(out.detail.find("11"), std::string::npos) << out.detail;
}

TEST(SockDiagProcessSourceProcRoot, MissingProcIsUnavailable) {
  SockDiagProcessSource::Options o;
  o.proc_root = "/nonexistent-proc-for-tollgate-test";
  SockDiagProcessSource source(o);
  ProcessLookup out = source.FindByInode(1);
  EXPECT_EQ(out.state, Attribution::kUnavailable);
  EXPECT_NE(out.detail.find(o.proc_root), std::string::npos) << out.detail;
}

}  // namespace
}  // namespace tollgate::platform
