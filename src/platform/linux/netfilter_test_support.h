// Test-only helpers for the netfilter tests (iptables_test, nfqueue_test), which need root and
// must never touch the host's own rules: each privileged test body runs in a forked child inside a
// fresh network namespace (its own iptables tables, its own conntrack, its own loopback), so a
// failing test cannot leave rules behind. Without root the tests skip, unless
// TOLLGATE_REQUIRE_PRIVILEGED=1 (CI as root), where a skip would hide a broken setup and is a
// failure instead. Also: loopback sockets and a collector of queued packets.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "flow/packet.h"
#include "platform/linux/nfqueue.h"

namespace tollgate::platform::testing {

inline bool PrivilegedRequired() {
  const char* v = std::getenv("TOLLGATE_REQUIRE_PRIVILEGED");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// Exit code of the child when the namespace could not be made (no CAP_SYS_ADMIN, e.g. in an
// unprivileged container): the parent turns it into a skip or, when required, a failure.
inline constexpr int kNoNamespaceExit = 77;

}  // namespace tollgate::platform::testing

// Skips (or, under TOLLGATE_REQUIRE_PRIVILEGED=1, fails) the current test when not root.
#define TG_REQUIRE_PRIVILEGED()                                                               \
  do {                                                                                        \
    if (geteuid() != 0) {                                                                     \
      if (::tollgate::platform::testing::PrivilegedRequired()) {                              \
        FAIL() << "needs root, and TOLLGATE_REQUIRE_PRIVILEGED=1 forbids skipping";           \
      }                                                                                       \
      GTEST_SKIP() << "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for a network namespace)"; \
    }                                                                                         \
  } while (0)

namespace tollgate::platform::testing {

inline bool BringLoopbackUp() {
  const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return false;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  ok = ok && ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
  close(s);
  return ok;
}

// Runs `body` in a forked child in a new network namespace with lo up. gtest failures inside the
// child are printed by the child and turn into one failure of the calling test. Call only after
// TG_REQUIRE_PRIVILEGED().
inline void RunInNetns(const std::function<void()>& body, unsigned timeout_seconds = 60) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0) << "fork: " << std::strerror(errno);
  if (pid == 0) {
    alarm(timeout_seconds);  // a hung body dies with SIGALRM instead of hanging ctest
    if (unshare(CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "unshare(CLONE_NEWNET): %s\n", std::strerror(errno));
      std::fflush(stderr);
      _exit(kNoNamespaceExit);
    }
    if (!BringLoopbackUp()) {
      std::fprintf(stderr, "bringing lo up in the test namespace failed\n");
      std::fflush(stderr);
      _exit(1);
    }
    body();
    const bool failed = ::testing::Test::HasFailure();
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(failed ? 1 : 0);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == kNoNamespaceExit) {
    if (PrivilegedRequired()) FAIL() << "cannot create a network namespace";
    GTEST_SKIP() << "cannot create a network namespace here";
  }
  ASSERT_TRUE(WIFEXITED(status)) << "test child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the test body failed in its namespace (details above)";
}

}  // namespace tollgate::platform::testing

namespace tollgate::platform::testing {

// A queued packet copied out of the reader's buffer, with its parse.
struct Captured {
  QueuedPacket meta;  // payload span cleared: it pointed into the reader's buffer
  std::vector<uint8_t> bytes;
  FlowTuple tuple;
  uint8_t tcp_flags = 0;
  size_t payload_size = 0;
};

// Polls the queue until `want` packets arrived or `timeout_ms` passed.
inline std::vector<Captured> CollectQueued(NfQueue& q, size_t want, int timeout_ms = 2000) {
  std::vector<Captured> got;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (got.size() < want) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{q.fd(), POLLIN, 0};
    poll(&p, 1, static_cast<int>(left.count()));
    auto n = q.Receive([&](const QueuedPacket& pkt) {
      Captured c;
      c.meta = pkt;
      c.meta.payload = {};
      c.bytes.assign(pkt.payload.begin(), pkt.payload.end());
      auto parsed = flow::ParsePacket(c.bytes);
      EXPECT_TRUE(parsed.has_value()) << (parsed ? "" : parsed.error().message);
      if (parsed) {
        c.tuple = parsed->tuple;
        c.tcp_flags = parsed->tcp_flags;
        c.payload_size = parsed->payload.size();
      }
      got.push_back(std::move(c));
    });
    EXPECT_TRUE(n.has_value()) << (n ? "" : n.error().message);
    if (!n) break;
  }
  return got;
}

inline sockaddr_storage Loopback(int family, uint16_t port) {
  sockaddr_storage ss{};
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    a->sin6_addr = in6addr_loopback;
  }
  return ss;
}

inline socklen_t AddrLen(int family) {
  return family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

// A socket bound to the loopback address of `family` at `port` (0: any free port).
inline UniqueFd BoundSocket(int family, int type, uint16_t port) {
  UniqueFd fd(socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  EXPECT_TRUE(fd.valid()) << std::strerror(errno);
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  auto addr = Loopback(family, port);
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), AddrLen(family)), 0)
      << std::strerror(errno);
  if (type == SOCK_STREAM) {
    EXPECT_EQ(listen(fd.get(), 16), 0);
  }
  return fd;
}

inline uint16_t PortOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                       : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

// Waits up to timeout_ms for `events` on fd; returns the revents (0 on timeout).
inline short WaitFor(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  return poll(&p, 1, timeout_ms) > 0 ? p.revents : 0;
}

// True if a datagram arrives on fd within timeout_ms (and consumes it).
inline bool DatagramArrives(int fd, int timeout_ms) {
  if ((WaitFor(fd, POLLIN, timeout_ms) & POLLIN) == 0) return false;
  char buf[2048];
  return recv(fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0;
}

inline bool RunCommand(const std::string& command) {
  const int rc = std::system(command.c_str());
  EXPECT_EQ(rc, 0) << command;
  return rc == 0;
}

inline bool HaveTool(const char* name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    if (access((std::string(dir) + name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace tollgate::platform::testing
