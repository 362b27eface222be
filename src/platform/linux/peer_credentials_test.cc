#include "platform/linux/peer_credentials.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/unique_fd.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

namespace tollgate::platform {
namespace {

std::string ReadLinkOrDie(const char* path) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink(path, buf, sizeof(buf) - 1);
  if (n < 0) return {};
  return std::string(buf, static_cast<size_t>(n));
}

// The hash computed by a tool that shares no code with ours.
std::string Sha256sum(const std::string& path) {
  std::string cmd = "sha256sum '" + path + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return {};
  char buf[65] = {};
  size_t n = std::fread(buf, 1, 64, p);
  ::pclose(p);
  return n == 64 ? std::string(buf, 64) : std::string();
}

struct SocketPair {
  UniqueFd a, b;
};

SocketPair MakeSocketPair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) return {};
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

bool KernelHasSoPeerPidfd() {
  SocketPair sp = MakeSocketPair();
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (::getsockopt(sp.a.get(), SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) return false;
  ::close(pidfd);
  return true;
}

// A listening SEQPACKET socket in the abstract namespace (nothing to clean up on disk), so that a
// child can connect with its own credentials: a socketpair's peer is whoever created it.
struct Listener {
  UniqueFd fd;
  sockaddr_un addr{};
  socklen_t addr_len = 0;
};

Listener Listen() {
  static std::atomic<int> counter{0};
  Listener l;
  l.fd.Reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  l.addr.sun_family = AF_UNIX;
  std::string name = "tollgate-peer-test-" + std::to_string(::getpid()) + "-" +
                     std::to_string(counter.fetch_add(1));
  std::memcpy(l.addr.sun_path + 1, name.data(), name.size());
  l.addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(l.fd.get(), reinterpret_cast<sockaddr*>(&l.addr), l.addr_len) != 0 ||
      ::listen(l.fd.get(), 8) != 0) {
    l.fd.Reset();
  }
  return l;
}

// Forks a child that connects to `l` and then runs `then` (which must not return normally when it
// wants to stay alive). Returns the child's pid.
template <typename Then>
pid_t ForkConnectingChild(const Listener& l, Then then) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);  // no CLOEXEC: survives an exec in `then`
    if (s < 0 || ::connect(s, reinterpret_cast<const sockaddr*>(&l.addr), l.addr_len) != 0) {
      ::_exit(90);
    }
    then(s);
    ::_exit(0);
  }
  return pid;
}

void Reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

class LinuxPeerIdentityTest : public ::testing::Test {
 protected:
  LinuxPeerIdentity identity_;
};

TEST_F(LinuxPeerIdentityTest, ReportsOwnCredentialsOverSocketpair) {
  SocketPair sp = MakeSocketPair();
  ASSERT_TRUE(sp.a.valid());
  Expected<ipc::PeerFacts> facts = identity_.Identify(sp.a.get(), /*want_exe_hash=*/false);
  ASSERT_TRUE(facts) << facts.error().message;
  // SO_PEERCRED reports the effective ids of the socket's creator.
  EXPECT_EQ(facts->uid, ::geteuid());
  EXPECT_EQ(facts->gid, ::getegid());
  EXPECT_EQ(facts->pid, ::getpid());
}

TEST_F(LinuxPeerIdentityTest, GroupsMatchGetgroups) {
  SocketPair sp = MakeSocketPair();
  Expected<ipc::PeerFacts> facts = identity_.Identify(sp.a.get(), false);
  ASSERT_TRUE(facts) << facts.error().message;
  ASSERT_TRUE(facts->groups_known);
  int n = ::getgroups(0, nullptr);
  ASSERT_GE(n, 0);
  std::vector<gid_t> own(static_cast<size_t>(n));
  ASSERT_EQ(::getgroups(n, own.data()), n);
  std::vector<uint32_t> expected(own.begin(), own.end());
  std::vector<uint32_t> got = facts->groups;
  std::sort(expected.begin(), expected.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, expected);
}

TEST_F(LinuxPeerIdentityTest, ExecutableComesFromPidfd) {
  if (!KernelHasSoPeerPidfd()) GTEST_SKIP() << "kernel lacks SO_PEERPIDFD (needs Linux >= 6.5)";
  SocketPair sp = MakeSocketPair();
  Expected<ipc::PeerFacts> facts = identity_.Identify(sp.a.get(), false);
  ASSERT_TRUE(facts) << facts.error().message;
  EXPECT_TRUE(facts->exe_known) << facts->exe_unknown_reason;
  EXPECT_TRUE(facts->exe_from_pidfd);
  EXPECT_EQ(facts->exe_path, ReadLinkOrDie("/proc/self/exe"));
  EXPECT_TRUE(facts->exe_sha256.empty()) << "hash computed although not asked for";
}

TEST_F(LinuxPeerIdentityTest, Sha256MatchesSha256sumAndIsCached) {
  SocketPair sp = MakeSocketPair();
  std::string expected = Sha256sum(ReadLinkOrDie("/proc/self/exe"));
  ASSERT_EQ(expected.size(), 64u);
  Expected<ipc::PeerFacts> first = identity_.Identify(sp.a.get(), /*want_exe_hash=*/true);
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_TRUE(first->exe_known) << first->exe_unknown_reason;
  EXPECT_EQ(first->exe_sha256, expected) << first->exe_sha256_unavailable_reason;
  EXPECT_EQ(identity_.CachedHashCount(), 1u);
  Expected<ipc::PeerFacts> second = identity_.Identify(sp.a.get(), true);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->exe_sha256, expected);
  EXPECT_EQ(identity_.CachedHashCount(), 1u);
}

TEST_F(LinuxPeerIdentityTest, OversizedExecutableIsNotHashed) {
  LinuxPeerIdentity::Options options;
  options.max_hash_bytes = 1;
  LinuxPeerIdentity identity(options);
  SocketPair sp = MakeSocketPair();
  Expected<ipc::PeerFacts> facts = identity.Identify(sp.a.get(), true);
  ASSERT_TRUE(facts);
  EXPECT_TRUE(facts->exe_known);
  EXPECT_TRUE(facts->exe_sha256.empty());
  EXPECT_NE(facts->exe_sha256_unavailable_reason.find("hashing limit"), std::string::npos)
      << facts->exe_sha256_unavailable_reason;
}

TEST_F(LinuxPeerIdentityTest, FallbackWithoutSoPeerPidfdIsMarkedRacy) {
  LinuxPeerIdentity::Options options;
  options.use_so_peerpidfd = false;
  LinuxPeerIdentity identity(options);
  SocketPair sp = MakeSocketPair();
  Expected<ipc::PeerFacts> facts = identity.Identify(sp.a.get(), true);
  ASSERT_TRUE(facts) << facts.error().message;
  EXPECT_TRUE(facts->exe_known) << facts->exe_unknown_reason;
  EXPECT_FALSE(facts->exe_from_pidfd);
  EXPECT_EQ(facts->exe_path, ReadLinkOrDie("/proc/self/exe"));
  EXPECT_EQ(facts->exe_sha256, Sha256sum(facts->exe_path));
}

// The peer is another process that replaced itself with /bin/sleep after connecting: the identity
// is the executable the peer runs now, not ours.
TEST_F(LinuxPeerIdentityTest, IdentifiesAnotherProcessByItsExecutable) {
  Listener l = Listen();
  ASSERT_TRUE(l.fd.valid());
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t child = ForkConnectingChild(l, [&](int) {
    ::close(ready[0]);
    // ready[1] is close-on-exec: the parent's read returns 0 exactly when exec succeeded.
    ::execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    ::_exit(91);
  });
  ASSERT_GT(child, 0);
  ::close(ready[1]);
  char byte;
  while (::read(ready[0], &byte, 1) < 0 && errno == EINTR) {
  }
  ::close(ready[0]);
  UniqueFd conn(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn.valid());

  Expected<ipc::PeerFacts> facts = identity_.Identify(conn.get(), true);
  ::kill(child, SIGKILL);
  Reap(child);
  ASSERT_TRUE(facts) << facts.error().message;
  EXPECT_EQ(facts->pid, child);
  ASSERT_TRUE(facts->exe_known) << facts->exe_unknown_reason;
  char* real = ::realpath("/bin/sleep", nullptr);
  ASSERT_NE(real, nullptr);
  std::string sleep_path = real;
  std::free(real);
  EXPECT_EQ(facts->exe_path, sleep_path);
  EXPECT_EQ(facts->exe_sha256, Sha256sum(sleep_path));
}

// What the daemon sees of a client under another uid with more supplementary groups than the
// first SO_PEERGROUPS buffer holds.
TEST_F(LinuxPeerIdentityTest, IdentifiesUnprivilegedPeerWithManyGroupsAsRoot) {
  if (::geteuid() != 0) {
    const char* require = std::getenv("TOLLGATE_REQUIRE_PRIVILEGED");
    if (require != nullptr && std::string(require) == "1") FAIL() << "needs root";
    GTEST_SKIP() << "switching uid needs root";
  }
  std::vector<gid_t> groups;
  for (gid_t g = 20000; g < 20100; ++g) groups.push_back(g);
  Listener l = Listen();
  ASSERT_TRUE(l.fd.valid());
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(ready[0]);
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0) {
      ::_exit(92);
    }
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (s < 0 || ::connect(s, reinterpret_cast<const sockaddr*>(&l.addr), l.addr_len) != 0) {
      ::_exit(90);
    }
    ::execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    ::_exit(91);
  }
  ASSERT_GT(child, 0);
  ::close(ready[1]);
  char byte;
  while (::read(ready[0], &byte, 1) < 0 && errno == EINTR) {
  }
  ::close(ready[0]);
  UniqueFd conn(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
  Expected<ipc::PeerFacts> facts = conn.valid() ? identity_.Identify(conn.get(), true)
                                                : Unexpected(ErrorCode::kSystem, "accept");
  ::kill(child, SIGKILL);
  Reap(child);
  ASSERT_TRUE(facts) << facts.error().message;
  EXPECT_EQ(facts->uid, 65534u);
  EXPECT_EQ(facts->gid, 65534u);
  EXPECT_TRUE(facts->groups_known);
  EXPECT_EQ(facts->groups, std::vector<uint32_t>(groups.begin(), groups.end()));
  EXPECT_TRUE(facts->exe_known) << facts->exe_unknown_reason;
  EXPECT_FALSE(facts->exe_sha256.empty()) << facts->exe_sha256_unavailable_reason;
}

// A peer that connected and was gone (and reaped) before we looked. Its pid may already belong to
// someone else, so nothing about an executable may be claimed. On Linux >= 6.16 SO_PEERPIDFD still
// hands out a pidfd whose fdinfo says "Pid: -1"; on 6.5-6.15 it fails with EINVAL; the fallback's
// pidfd_open(pid) fails with ESRCH (unless the pid was reused already, the race it admits to).
TEST_F(LinuxPeerIdentityTest, ReapedPeerIsNotAttributed) {
  for (bool use_so_peerpidfd : {true, false}) {
    SCOPED_TRACE(use_so_peerpidfd ? "SO_PEERPIDFD" : "pidfd_open fallback");
    LinuxPeerIdentity::Options options;
    options.use_so_peerpidfd = use_so_peerpidfd;
    LinuxPeerIdentity identity(options);
    Listener l = Listen();
    ASSERT_TRUE(l.fd.valid());
    pid_t child = ForkConnectingChild(l, [](int) {});
    ASSERT_GT(child, 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child could not connect";
    UniqueFd conn(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(conn.valid());

    Expected<ipc::PeerFacts> facts = identity.Identify(conn.get(), true);
    ASSERT_TRUE(facts) << facts.error().message;
    EXPECT_EQ(facts->pid, child);
    EXPECT_FALSE(facts->exe_known) << "claimed " << facts->exe_path;
    EXPECT_TRUE(facts->exe_path.empty());
    EXPECT_TRUE(facts->exe_sha256.empty());
    EXPECT_NE(facts->exe_unknown_reason.find("exited"), std::string::npos)
        << facts->exe_unknown_reason;
  }
}

// Exited but not yet reaped: the pid still names the (zombie) process, which has no executable.
TEST_F(LinuxPeerIdentityTest, ZombiePeerIsNotAttributed) {
  Listener l = Listen();
  ASSERT_TRUE(l.fd.valid());
  pid_t child = ForkConnectingChild(l, [](int) {});
  ASSERT_GT(child, 0);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT), 0);
  UniqueFd conn(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn.valid());
  Expected<ipc::PeerFacts> facts = identity_.Identify(conn.get(), true);
  Reap(child);
  ASSERT_TRUE(facts) << facts.error().message;
  EXPECT_EQ(facts->pid, child);
  EXPECT_FALSE(facts->exe_known) << "claimed " << facts->exe_path;
  EXPECT_NE(facts->exe_unknown_reason.find("exited"), std::string::npos)
      << facts->exe_unknown_reason;
}

TEST_F(LinuxPeerIdentityTest, HashCacheIsBounded) {
  LinuxPeerIdentity::Options options;
  options.hash_cache_entries = 1;
  LinuxPeerIdentity identity(options);
  SocketPair sp = MakeSocketPair();
  ASSERT_TRUE(identity.Identify(sp.a.get(), true));
  EXPECT_EQ(identity.CachedHashCount(), 1u);

  Listener l = Listen();
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t child = ForkConnectingChild(l, [&](int) {
    ::close(ready[0]);
    ::execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    ::_exit(91);
  });
  ::close(ready[1]);
  char byte;
  while (::read(ready[0], &byte, 1) < 0 && errno == EINTR) {
  }
  ::close(ready[0]);
  UniqueFd conn(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
  Expected<ipc::PeerFacts> facts = identity.Identify(conn.get(), true);
  ::kill(child, SIGKILL);
  Reap(child);
  ASSERT_TRUE(facts);
  EXPECT_FALSE(facts->exe_sha256.empty());
  EXPECT_EQ(identity.CachedHashCount(), 1u);
}

TEST_F(LinuxPeerIdentityTest, RefusesNonUnixSocket) {
  UniqueFd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(udp.valid());
  Expected<ipc::PeerFacts> facts = identity_.Identify(udp.get(), false);
  ASSERT_FALSE(facts);
  EXPECT_EQ(facts.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(facts.error().message.find("not an AF_UNIX socket"), std::string::npos);
}

TEST_F(LinuxPeerIdentityTest, RefusesUnconnectedSocket) {
  UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s.valid());
  Expected<ipc::PeerFacts> facts = identity_.Identify(s.get(), false);
  ASSERT_FALSE(facts);
  EXPECT_NE(facts.error().message.find("no peer credentials"), std::string::npos)
      << facts.error().message;
}

TEST_F(LinuxPeerIdentityTest, RefusesNonSocket) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  Expected<ipc::PeerFacts> facts = identity_.Identify(r.get(), false);
  ASSERT_FALSE(facts);
  EXPECT_NE(facts.error().message.find("SO_DOMAIN"), std::string::npos) << facts.error().message;
}

}  // namespace
}  // namespace tollgate::platform
