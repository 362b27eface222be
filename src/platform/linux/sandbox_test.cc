// The sandbox cannot be left, so every test enters it in a forked child. gtest cannot run inside
// the sandbox (its failure paths may open files), so the child reports failed checks as lines on
// a pipe and the parent turns them into test failures; the child's stderr goes through another
// pipe so the parent can assert the violation log line. The parent also reads
// /proc/<child>/status, which the child itself may no longer open.
#include "platform/linux/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <linux/securebits.h>
#include <malloc.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/unique_fd.h"
#include "platform/linux/netfilter_test_support.h"
#include "platform/linux/nfqueue.h"

namespace tollgate::platform {
namespace {

constexpr uid_t kNobody = 65534;
constexpr const char* kProgram = "tollgate-filter";

// The child's side: failed checks become "FAIL ..." lines on the report pipe.
class Child {
 public:
  Child(int report_fd, int go_fd) : report_fd_(report_fd), go_fd_(go_fd) {}

  void Say(const std::string& line) {
    const std::string l = line + "\n";
    ssize_t ignored = write(report_fd_, l.data(), l.size());
    (void)ignored;
  }
  bool Check(bool ok, const std::string& what) {
    if (!ok) {
      failed_ = true;
      Say("FAIL " + what);
    }
    return ok;
  }
  // Checks that `rc` is -1 with errno `want`.
  void CheckRefused(long rc, int want, const std::string& what) {
    const int err = errno;
    Check(rc == -1 && err == want, what + ": got rc " + std::to_string(rc) + " errno " +
                                       std::strerror(err) + ", want " + std::strerror(want));
  }
  void WaitForParent() {
    char c;
    ssize_t ignored = read(go_fd_, &c, 1);
    (void)ignored;
  }
  bool failed() const { return failed_; }

 private:
  int report_fd_;
  int go_fd_;
  bool failed_ = false;
};

struct ChildOutcome {
  int status = 0;
  std::string stderr_text;
  std::string report;

  bool ExitedCleanly() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
  bool KilledBySigsys() const { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; }
  std::string Describe() const {
    std::string s = WIFEXITED(status)     ? "exit " + std::to_string(WEXITSTATUS(status))
                    : WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                          : "status " + std::to_string(status);
    return s + "\n--- child report ---\n" + report + "--- child stderr ---\n" + stderr_text;
  }
};

// Forks a child running `body`; the parent can talk to it (ReadLine, Release) before Wait().
class SandboxedChild {
 public:
  explicit SandboxedChild(const std::function<void(Child&)>& body) {
    int err[2], rep[2], go[2];
    TG_CHECK(pipe2(err, O_CLOEXEC) == 0 && pipe2(rep, O_CLOEXEC) == 0 && pipe2(go, O_CLOEXEC) == 0);
    std::fflush(stdout);
    std::fflush(stderr);
    pid_ = fork();
    TG_CHECK(pid_ >= 0);
    if (pid_ == 0) {
      alarm(30);  // a hung child dies with SIGALRM instead of hanging ctest
      rlimit no_core{0, 0};
      setrlimit(RLIMIT_CORE, &no_core);  // SIGSYS deaths would otherwise leave core files
      dup2(err[1], STDERR_FILENO);
      close(err[0]);
      close(rep[0]);
      close(go[1]);
      Child child(rep[1], go[0]);
      body(child);
      _exit(child.failed() ? 1 : 0);
    }
    close(err[1]);
    close(rep[1]);
    close(go[0]);
    stderr_.Reset(err[0]);
    report_.Reset(rep[0]);
    go_.Reset(go[1]);
  }
  ~SandboxedChild() {
    if (!reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }

  // The next report line (without "\n") other than the sandbox summary, or "" after 10 s or at
  // EOF.
  std::string ReadLine() {
    while (true) {
      std::string line;
      while (true) {
        pollfd p{report_.get(), POLLIN, 0};
        if (poll(&p, 1, 10'000) <= 0) return line;
        char c;
        if (read(report_.get(), &c, 1) != 1) return line;
        if (c == '\n') break;
        line += c;
      }
      report_text_ += line + "\n";
      if (line.rfind("summary: ", 0) != 0) return line;
    }
  }
  void Release() {
    ssize_t ignored = write(go_.get(), "g", 1);
    (void)ignored;
  }

  ChildOutcome Wait() {
    go_.Reset();
    ChildOutcome out;
    out.report = report_text_;
    std::string* sinks[] = {&out.stderr_text, &out.report};
    int fds[] = {stderr_.get(), report_.get()};
    while (fds[0] >= 0 || fds[1] >= 0) {
      pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
      if (poll(p, 2, 30'000) <= 0) break;
      for (int i = 0; i < 2; ++i) {
        if (p[i].revents == 0) continue;
        char buf[4096];
        const ssize_t n = read(fds[i], buf, sizeof(buf));
        if (n <= 0) {
          fds[i] = -1;
        } else {
          sinks[i]->append(buf, static_cast<size_t>(n));
        }
      }
    }
    waitpid(pid_, &out.status, 0);
    reaped_ = true;
    return out;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  UniqueFd stderr_, report_, go_;
  std::string report_text_;
};

ChildOutcome RunChild(const std::function<void(Child&)>& body) {
  SandboxedChild child(body);
  return child.Wait();
}

// As root, become nobody without keeping capabilities first, so the unprivileged path (no
// CAP_SETPCAP, nothing to drop) is exercised whoever runs the tests.
bool ShedRoot(Child& c) {
  if (geteuid() != 0) return true;
  return c.Check(setgroups(0, nullptr) == 0 && setresgid(kNobody, kNobody, kNobody) == 0 &&
                     setresuid(kNobody, kNobody, kNobody) == 0,
                 std::string("dropping root before the test: ") + std::strerror(errno));
}

SandboxOptions UnprivilegedOptions() {
  SandboxOptions o;
  o.keep_net_admin = false;
  o.program_name = kProgram;
  return o;
}

// What tollgate-filter does: switch to its own user, keep CAP_NET_ADMIN.
SandboxOptions FilterOptions() {
  SandboxOptions o;
  o.uid = kNobody;
  o.gid = kNobody;
  o.program_name = kProgram;
  return o;
}

bool Enter(Child& c, const SandboxOptions& options, SandboxReport* report = nullptr) {
  auto r = EnterSandbox(options);
  if (!c.Check(r.has_value(), "EnterSandbox: " + (r ? std::string() : r.error().message))) {
    return false;
  }
  c.Say("summary: " + r->summary);
  if (report != nullptr) *report = *r;
  return true;
}

std::string ViolationLine(const char* program, const char* syscall_name, long nr) {
  return std::string("<2>") + program + ": sandbox: forbidden system call " + syscall_name +
         " (nr " + std::to_string(nr) + "); exiting\n";
}

// The value of `field` in /proc/<pid>/status ("" when absent).
std::string StatusField(pid_t pid, const std::string& field) {
  std::string text;
  UniqueFd fd(open(("/proc/" + std::to_string(pid) + "/status").c_str(), O_RDONLY | O_CLOEXEC));
  char buf[4096];
  ssize_t n;
  while (fd.valid() && (n = read(fd.get(), buf, sizeof(buf))) > 0) {
    text.append(buf, static_cast<size_t>(n));
  }
  const std::string key = "\n" + field + ":";
  const size_t at = text.find(key);
  if (at == std::string::npos) return "";
  size_t begin = at + key.size();
  while (begin < text.size() && (text[begin] == '\t' || text[begin] == ' ')) ++begin;
  return text.substr(begin, text.find('\n', begin) - begin);
}

// A listening pathname socket in a fresh directory that any user may reach, like the daemon's
// channel socket in /run/tollgate.
class SocketDir {
 public:
  SocketDir() {
    char tmpl[] = "/tmp/tollgate-sandbox-test.XXXXXX";
    TG_CHECK(mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    chmod(dir_.c_str(), 0755);
  }
  ~SocketDir() {
    for (const auto& p : paths_) unlink(p.c_str());
    rmdir(dir_.c_str());
  }
  UniqueFd Listen(const std::string& name, int type) {
    const std::string path = dir_ + "/" + name;
    unlink(path.c_str());
    UniqueFd fd(socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    sockaddr_un a = Address(name);
    EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0)
        << path << ": " << std::strerror(errno);
    chmod(path.c_str(), 0666);
    if (type != SOCK_DGRAM) {
      EXPECT_EQ(listen(fd.get(), 4), 0);
    }
    paths_.push_back(path);
    return fd;
  }
  sockaddr_un Address(const std::string& name) const {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s/%s", dir_.c_str(), name.c_str());
    return a;
  }

 private:
  std::string dir_;
  std::vector<std::string> paths_;
};

// Accepts one connection within 10 s and returns its first message ("" on failure).
std::string AcceptAndReceive(int listener) {
  pollfd p{listener, POLLIN, 0};
  if (poll(&p, 1, 10'000) != 1) return "";
  UniqueFd conn(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn.valid()) return "";
  pollfd q{conn.get(), POLLIN, 0};
  if (poll(&q, 1, 10'000) != 1) return "";
  char buf[64];
  const ssize_t n = recv(conn.get(), buf, sizeof(buf), 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// ---------------------------------------------------------------------------------------------

TEST(SandboxTest, FileAccessIsRefused) {
  const bool landlock = LandlockAbiVersion() > 0;
  auto out = RunChild([&](Child& c) {
    SandboxReport report;
    if (!ShedRoot(c) || !Enter(c, UnprivilegedOptions(), &report)) return;
    c.Check(report.landlock_enforced == landlock, "landlock_enforced matches the kernel");
    c.CheckRefused(open("/etc/hostname", O_RDONLY | O_CLOEXEC), EACCES, "open /etc/hostname");
    c.CheckRefused(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC), EACCES, "open / as directory");
    c.CheckRefused(open("/tmp/tollgate-sandbox-new", O_WRONLY | O_CREAT | O_CLOEXEC, 0600), EACCES,
                   "create a file in /tmp");
    c.CheckRefused(open("/proc/self/status", O_RDONLY | O_CLOEXEC), EACCES,
                   "open /proc/self/status");
    struct stat st;
    c.CheckRefused(stat("/etc/hostname", &st), EACCES, "stat by path");
    c.Check(fstat(STDERR_FILENO, &st) == 0, "fstat on an open descriptor works");
    if (landlock) {
      // O_PATH opens are not a file access for Landlock: that this one works proves the EACCES
      // above came from Landlock (seccomp lets openat through when Landlock is enforced).
      const int fd = open("/etc", O_PATH | O_CLOEXEC);
      c.Check(fd >= 0, std::string("O_PATH open reaches Landlock: ") + std::strerror(errno));
    }
  });
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
}

// A kernel without Landlock (or with it disabled at boot), simulated by a seccomp filter of the
// test's own that fails landlock_create_ruleset: EnterSandbox says so in its report, and seccomp
// refuses every open with the same EACCES, O_PATH included.
void CheckWithoutLandlock(int landlock_errno, const std::string& reason) {
  auto out = RunChild([&](Child& c) {
    if (!ShedRoot(c)) return;
    scmp_filter_ctx hide = seccomp_init(SCMP_ACT_ALLOW);
    c.Check(hide != nullptr &&
                seccomp_rule_add(hide, SCMP_ACT_ERRNO(static_cast<uint16_t>(landlock_errno)),
                                 seccomp_syscall_resolve_name("landlock_create_ruleset"), 0) == 0 &&
                seccomp_load(hide) == 0,
            "hiding Landlock");
    seccomp_release(hide);
    c.Check(LandlockAbiVersion() == 0, "Landlock hidden");
    SandboxReport report;
    if (!Enter(c, UnprivilegedOptions(), &report)) return;
    c.Check(!report.landlock_enforced && report.landlock_abi == 0, "report says no Landlock");
    c.Check(report.summary.find(reason) != std::string::npos, "summary gives the reason");
    c.CheckRefused(open("/etc/hostname", O_RDONLY | O_CLOEXEC), EACCES, "open /etc/hostname");
    c.CheckRefused(open("/etc", O_PATH | O_CLOEXEC), EACCES, "O_PATH open");
    c.CheckRefused(socket(AF_INET, SOCK_STREAM, 0), EAFNOSUPPORT, "socket(AF_INET)");
  });
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
}

TEST(SandboxTest, WithoutLandlockInTheKernelFilesAreStillRefused) {
  CheckWithoutLandlock(ENOSYS, "the kernel has no Landlock");
}

TEST(SandboxTest, WithLandlockDisabledAtBootFilesAreStillRefused) {
  CheckWithoutLandlock(EOPNOTSUPP, "Landlock is disabled at boot");
}

// systemd-nspawn's own seccomp filter answers the Landlock calls with EPERM.
TEST(SandboxTest, WithLandlockBlockedByAContainerFilesAreStillRefused) {
  CheckWithoutLandlock(EPERM, "Landlock is blocked by a seccomp filter of the container");
}

TEST(SandboxTest, OnlyUnixAndNetlinkSocketsCanBeCreated) {
  auto out = RunChild([&](Child& c) {
    if (!ShedRoot(c) || !Enter(c, UnprivilegedOptions())) return;
    c.CheckRefused(socket(AF_INET, SOCK_STREAM, 0), EAFNOSUPPORT, "socket(AF_INET, STREAM)");
    c.CheckRefused(socket(AF_INET, SOCK_DGRAM, 0), EAFNOSUPPORT, "socket(AF_INET, DGRAM)");
    c.CheckRefused(socket(AF_INET6, SOCK_STREAM, 0), EAFNOSUPPORT, "socket(AF_INET6)");
    c.CheckRefused(socket(AF_PACKET, SOCK_RAW, 0), EAFNOSUPPORT, "socket(AF_PACKET)");
    c.CheckRefused(socket(AF_VSOCK, SOCK_STREAM, 0), EAFNOSUPPORT, "socket(AF_VSOCK)");
    c.CheckRefused(socket(AF_UNSPEC, SOCK_STREAM, 0), EAFNOSUPPORT, "socket(AF_UNSPEC)");
    int pair[2];
    c.CheckRefused(socketpair(AF_INET, SOCK_STREAM, 0, pair), EAFNOSUPPORT, "socketpair(AF_INET)");
    c.CheckRefused(socketpair(AF_NETLINK, SOCK_RAW, 0, pair), EAFNOSUPPORT,
                   "socketpair(AF_NETLINK)");
    for (int type : {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET}) {
      c.Check(socket(AF_UNIX, type | SOCK_CLOEXEC, 0) >= 0,
              "socket(AF_UNIX, " + std::to_string(type) + "): " + std::strerror(errno));
    }
    c.Check(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == 0,
            std::string("socketpair(AF_UNIX): ") + std::strerror(errno));
    c.Check(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER) >= 0,
            std::string("socket(AF_NETLINK, NETLINK_NETFILTER): ") + std::strerror(errno));
    c.Check(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE) >= 0,
            std::string("socket(AF_NETLINK, NETLINK_ROUTE): ") + std::strerror(errno));
  });
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
}

// The filter's channel to the daemon: connect to a pathname SEQPACKET socket, and connect again
// after the daemon came back at the same path; plus an sd_notify-style datagram to a path.
void CheckDaemonConnection(const SandboxOptions& options, bool shed_root) {
  SocketDir dir;
  UniqueFd listener = dir.Listen("channel.sock", SOCK_SEQPACKET);
  UniqueFd notify = dir.Listen("notify.sock", SOCK_DGRAM);
  const sockaddr_un channel = dir.Address("channel.sock");
  const sockaddr_un notify_addr = dir.Address("notify.sock");

  SandboxedChild child([&](Child& c) {
    if ((shed_root && !ShedRoot(c)) || !Enter(c, options)) return;
    for (const char* message : {"hello", "again"}) {
      UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
      const int rc =
          connect(fd.get(), reinterpret_cast<const sockaddr*>(&channel), sizeof(channel));
      c.Check(rc == 0, std::string("connect to the daemon socket: ") + std::strerror(errno));
      c.Check(send(fd.get(), message, std::strlen(message), MSG_NOSIGNAL) > 0, "send");
      c.Say("connected");
      c.WaitForParent();  // the daemon restarts in between
    }
    UniqueFd dgram(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    c.Check(sendto(dgram.get(), "READY=1", 7, MSG_NOSIGNAL,
                   reinterpret_cast<const sockaddr*>(&notify_addr), sizeof(notify_addr)) == 7,
            std::string("sendto a pathname datagram socket: ") + std::strerror(errno));
  });
  ASSERT_EQ(child.ReadLine(), "connected") << child.Wait().Describe();
  EXPECT_EQ(AcceptAndReceive(listener.get()), "hello");
  // The daemon goes away and socket activation brings its socket back at the same path.
  listener.Reset();
  listener = dir.Listen("channel.sock", SOCK_SEQPACKET);
  child.Release();
  ASSERT_EQ(child.ReadLine(), "connected") << child.Wait().Describe();
  EXPECT_EQ(AcceptAndReceive(listener.get()), "again");
  child.Release();
  auto out = child.Wait();
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
  char buf[16];
  const ssize_t n = recv(notify.get(), buf, sizeof(buf), MSG_DONTWAIT);
  EXPECT_EQ(n > 0 ? std::string(buf, static_cast<size_t>(n)) : "", "READY=1");
}

TEST(SandboxTest, ConnectsToTheDaemonSocketUnprivileged) {
  CheckDaemonConnection(UnprivilegedOptions(), /*shed_root=*/true);
}

TEST(SandboxTest, ConnectsToTheDaemonSocketAsTheFilterUser) {
  TG_REQUIRE_PRIVILEGED();
  CheckDaemonConnection(FilterOptions(), /*shed_root=*/false);
}

TEST(SandboxTest, AbstractUnixSocketsOutsideTheSandboxAreOutOfReach) {
  if (LandlockAbiVersion() < 6) GTEST_SKIP() << "Landlock scoping needs ABI 6 (Linux 6.12)";
  UniqueFd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::string name = "tollgate-sandbox-test-" + std::to_string(getpid());
  std::memcpy(a.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  ASSERT_EQ(bind(listener.get(), reinterpret_cast<sockaddr*>(&a), len), 0);
  ASSERT_EQ(listen(listener.get(), 1), 0);
  auto out = RunChild([&](Child& c) {
    if (!ShedRoot(c) || !Enter(c, UnprivilegedOptions())) return;
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    c.CheckRefused(connect(fd.get(), reinterpret_cast<sockaddr*>(&a), len), EPERM,
                   "connect to an abstract socket of the parent");
  });
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
}

// A forbidden call kills the child with SIGSYS after exactly one log line naming the call.
void ExpectKilledFor(const std::function<void()>& forbidden, const char* name, long nr,
                     const SandboxOptions& options = UnprivilegedOptions()) {
  auto out = RunChild([&](Child& c) {
    if (!ShedRoot(c) || !Enter(c, options)) return;
    forbidden();
    c.Check(false, std::string(name) + " returned instead of killing the process");
  });
  EXPECT_TRUE(out.KilledBySigsys()) << out.Describe();
  const char* program =
      options.program_name.empty() ? program_invocation_short_name : options.program_name.c_str();
  EXPECT_EQ(out.stderr_text, ViolationLine(program, name, nr)) << out.Describe();
}

TEST(SandboxTest, ExecveKillsWithOneLogLine) {
  ExpectKilledFor(
      [] {
        char arg0[] = "true";
        char* argv[] = {arg0, nullptr};
        execve("/bin/true", argv, environ);
      },
      "execve", SYS_execve);
}

TEST(SandboxTest, PtraceKillsWithOneLogLine) {
  ExpectKilledFor([] { ptrace(PTRACE_TRACEME, 0, nullptr, nullptr); }, "ptrace", SYS_ptrace);
}

TEST(SandboxTest, ViolationLineNamesTheExecutableByDefault) {
  SandboxOptions options = UnprivilegedOptions();
  options.program_name.clear();
  ExpectKilledFor([] { syscall(SYS_unshare, CLONE_NEWUSER); }, "unshare", SYS_unshare, options);
}

TEST(SandboxTest, ExecutableMemoryKills) {
  ExpectKilledFor(
      [] {
        void* page =
            mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        mprotect(page, 4096, PROT_READ | PROT_EXEC);
      },
      "mprotect", SYS_mprotect);
}

TEST(SandboxTest, SignalsToOtherProcessesKill) {
  const pid_t parent = getpid();
  ExpectKilledFor([parent] { kill(parent, 0); }, "kill", SYS_kill);
}

TEST(SandboxTest, ExtraSyscallsAreAllowedByName) {
  SandboxOptions options = UnprivilegedOptions();
  options.extra_syscalls = {"uname"};
  auto out = RunChild([&](Child& c) {
    if (!ShedRoot(c) || !Enter(c, options)) return;
    utsname u;
    c.Check(uname(&u) == 0, "uname allowed through extra_syscalls");
  });
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
  ExpectKilledFor(
      [] {
        utsname u;
        uname(&u);
      },
      "uname", SYS_uname);
}

TEST(SandboxTest, BadOptionsAreRefusedBeforeAnythingChanges) {
  auto out = RunChild([&](Child& c) {
    const uid_t uid = getuid();
    auto check_refused = [&](const SandboxOptions& options, const std::string& needle) {
      auto r = EnterSandbox(options);
      if (!c.Check(!r.has_value(), "EnterSandbox accepted options with " + needle)) return;
      c.Check(r.error().code == ErrorCode::kInvalidArgument &&
                  r.error().message.find(needle) != std::string::npos,
              "error names " + needle + ": " + r.error().message);
    };
    SandboxOptions unknown = UnprivilegedOptions();
    unknown.extra_syscalls = {"read", "no_such_syscall"};
    check_refused(unknown, "no_such_syscall");
    SandboxOptions widening = UnprivilegedOptions();
    widening.extra_syscalls = {"socket"};
    check_refused(widening, "socket");
    SandboxOptions uid_only = UnprivilegedOptions();
    uid_only.uid = kNobody;
    check_refused(uid_only, "gid");
    c.Check(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0, "no_new_privs still unset");
    c.Check(prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 0, "no seccomp filter loaded");
    c.Check(getuid() == uid, "uid unchanged");
    c.Check(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC) >= 0, "files still open");
  });
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
}

// Started by systemd with User=, Group= and AmbientCapabilities=, the filter already is its user:
// naming that same user must work without CAP_SETUID.
TEST(SandboxTest, SwitchingToTheCurrentUserNeedsNoPrivilege) {
  auto out = RunChild([&](Child& c) {
    if (!ShedRoot(c)) return;
    SandboxOptions options = UnprivilegedOptions();
    options.uid = getuid();
    options.gid = getgid();
    const int n = getgroups(0, nullptr);
    options.supplementary_groups.resize(static_cast<size_t>(n));
    getgroups(n, options.supplementary_groups.data());
    Enter(c, options);
  });
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
}

TEST(SandboxTest, UnprivilegedStatusShowsNoCapabilitiesSeccompAndNoNewPrivs) {
  SandboxedChild child([&](Child& c) {
    if (!ShedRoot(c) || !Enter(c, UnprivilegedOptions())) return;
    c.Say("ready");
    c.WaitForParent();
  });
  ASSERT_EQ(child.ReadLine(), "ready") << child.Wait().Describe();
  EXPECT_EQ(StatusField(child.pid(), "NoNewPrivs"), "1");
  EXPECT_EQ(StatusField(child.pid(), "Seccomp"), "2");
  EXPECT_EQ(StatusField(child.pid(), "CapEff"), "0000000000000000");
  EXPECT_EQ(StatusField(child.pid(), "CapPrm"), "0000000000000000");
  EXPECT_EQ(StatusField(child.pid(), "CapInh"), "0000000000000000");
  EXPECT_EQ(StatusField(child.pid(), "CapAmb"), "0000000000000000");
  child.Release();
  auto out = child.Wait();
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
}

// tollgate-filter's configuration: nobody, CAP_NET_ADMIN only, and that capability still works
// (binding an NFQUEUE queue and SO_RCVBUFFORCE need it) in a network namespace of the child's own.
void CheckFilterUser(bool keep_net_admin) {
  const int abi = LandlockAbiVersion();
  SandboxOptions options = FilterOptions();
  options.keep_net_admin = keep_net_admin;
  SandboxedChild child([&](Child& c) {
    if (!c.Check(unshare(CLONE_NEWNET) == 0, std::string("unshare: ") + std::strerror(errno))) {
      return;
    }
    SandboxReport report;
    if (!Enter(c, options, &report)) return;
    c.Check(report.capabilities_locked, "capabilities_locked");
    c.Check(report.landlock_enforced == (abi > 0), "landlock_enforced");
    c.Check(report.landlock_net_enforced == (abi >= 4), "landlock_net_enforced");
    c.Check(report.landlock_scoped == (abi >= 6), "landlock_scoped");
    const long bits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
    c.Check(bits >= 0 && (bits & SECBIT_NOROOT) && (bits & SECBIT_NOROOT_LOCKED) &&
                (bits & SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) && (bits & SECBIT_KEEP_CAPS) == 0,
            "securebits " + std::to_string(bits));
    c.Say("ready");
    c.WaitForParent();
    NfQueueOptions q;
    q.socket_buffer_bytes = 1u << 20;
    auto queue = NfQueue::Open(7, q);
    if (keep_net_admin) {
      c.Check(queue.has_value(), "NFQUEUE bind with CAP_NET_ADMIN: " +
                                     (queue ? std::string() : queue.error().message));
    } else {
      c.Check(!queue.has_value(), "NFQUEUE bind succeeded without CAP_NET_ADMIN");
    }
  });
  ASSERT_EQ(child.ReadLine(), "ready") << child.Wait().Describe();
  const std::string caps = keep_net_admin ? "0000000000001000" : "0000000000000000";
  EXPECT_EQ(StatusField(child.pid(), "Uid"), "65534\t65534\t65534\t65534");
  EXPECT_EQ(StatusField(child.pid(), "Gid"), "65534\t65534\t65534\t65534");
  EXPECT_EQ(StatusField(child.pid(), "Groups"), "");
  EXPECT_EQ(StatusField(child.pid(), "CapEff"), caps);
  EXPECT_EQ(StatusField(child.pid(), "CapPrm"), caps);
  EXPECT_EQ(StatusField(child.pid(), "CapBnd"), caps);
  EXPECT_EQ(StatusField(child.pid(), "CapInh"), "0000000000000000");
  EXPECT_EQ(StatusField(child.pid(), "CapAmb"), "0000000000000000");
  EXPECT_EQ(StatusField(child.pid(), "NoNewPrivs"), "1");
  EXPECT_EQ(StatusField(child.pid(), "Seccomp"), "2");
  child.Release();
  auto out = child.Wait();
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
}

TEST(SandboxTest, FilterUserKeepsOnlyNetAdminAndCanBindAQueue) {
  TG_REQUIRE_PRIVILEGED();
  CheckFilterUser(/*keep_net_admin=*/true);
}

TEST(SandboxTest, WithoutNetAdminBindingAQueueIsRefused) {
  TG_REQUIRE_PRIVILEGED();
  CheckFilterUser(/*keep_net_admin=*/false);
}

// What tollgate-filter's main loop does after start-up, on a loop made before the sandbox and on
// one made inside it: a missing system call in the allowlist kills the child with its name.
struct LoopProbe {
  bool monotonic = false, boottime = false, io = false, deferred = false, signal = false;
  bool all() const { return monotonic && boottime && io && deferred && signal; }
};

bool RunLoop(Child& c, sd_event* loop, const char* which) {
  LoopProbe probe;
  auto flag = [](sd_event_source*, uint64_t, void* p) {
    *static_cast<bool*>(p) = true;
    return 0;
  };
  int pair[2];
  if (!c.Check(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) == 0,
               "socketpair")) {
    return false;
  }
  std::vector<sd_event_source*> sources(5, nullptr);
  int r = sd_event_add_time_relative(loop, &sources[0], CLOCK_MONOTONIC, 1000, 0, flag,
                                     &probe.monotonic);
  c.Check(r >= 0, std::string(which) + ": monotonic timer: " + std::strerror(-r));
  r = sd_event_add_time_relative(loop, &sources[1], CLOCK_BOOTTIME, 2000, 0, flag, &probe.boottime);
  c.Check(r >= 0, std::string(which) + ": boottime timer: " + std::strerror(-r));
  r = sd_event_add_io(
      loop, &sources[2], pair[1], EPOLLIN,
      [](sd_event_source*, int fd, uint32_t, void* p) {
        char buf[16];
        *static_cast<bool*>(p) = recv(fd, buf, sizeof(buf), 0) == 4;
        return 0;
      },
      &probe.io);
  c.Check(r >= 0, std::string(which) + ": io source: " + std::strerror(-r));
  r = sd_event_add_defer(
      loop, &sources[3],
      [](sd_event_source*, void* p) {
        *static_cast<bool*>(p) = true;
        return 0;
      },
      &probe.deferred);
  c.Check(r >= 0, std::string(which) + ": defer source: " + std::strerror(-r));
  r = sd_event_add_signal(
      loop, &sources[4], SIGUSR1,
      [](sd_event_source*, const signalfd_siginfo*, void* p) {
        *static_cast<bool*>(p) = true;
        return 0;
      },
      &probe.signal);
  c.Check(r >= 0, std::string(which) + ": signal source: " + std::strerror(-r));
  c.Check(send(pair[0], "ping", 4, MSG_NOSIGNAL) == 4, "send on the socketpair");
  c.Check(kill(getpid(), SIGUSR1) == 0, "kill(self, SIGUSR1)");
  for (int i = 0; i < 50 && !probe.all(); ++i) {
    r = sd_event_run(loop, 100'000);
    if (!c.Check(r >= 0, std::string(which) + ": sd_event_run: " + std::strerror(-r))) break;
  }
  c.Check(probe.all(), std::string(which) + ": every source fired");
  for (auto* s : sources) sd_event_source_disable_unref(s);
  close(pair[0]);
  close(pair[1]);
  return probe.all();
}

TEST(SandboxTest, EventLoopMallocAndLoggingWorkInside) {
  auto out = RunChild([&](Child& c) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, nullptr);  // sd-event's signal sources need it blocked
    sd_event* before = nullptr;
    c.Check(sd_event_new(&before) >= 0, "sd_event_new before the sandbox");
    if (!ShedRoot(c) || !Enter(c, UnprivilegedOptions())) return;
    SetLogProgramName(kProgram);
    RunLoop(c, before, "loop made before the sandbox");
    sd_event* inside = nullptr;
    const int r = sd_event_new(&inside);
    if (c.Check(r >= 0, std::string("sd_event_new inside: ") + std::strerror(-r))) {
      RunLoop(c, inside, "loop made inside the sandbox");
      uint64_t now = 0;
      c.Check(sd_event_now(inside, CLOCK_MONOTONIC, &now) >= 0 && now > 0, "sd_event_now");
      sd_event_unref(inside);
    }
    sd_event_unref(before);

    // Small blocks from the heap (brk), big ones from mmap, growth by mremap.
    std::vector<void*> blocks;
    for (size_t size : {16ul, 4096ul, 200ul << 10, 1ul << 20, 64ul << 20}) {
      void* p = std::malloc(size);
      c.Check(p != nullptr, "malloc " + std::to_string(size));
      if (p != nullptr) std::memset(p, 0xa5, size);
      blocks.push_back(p);
    }
    void* grown = std::realloc(blocks.back(), 256ul << 20);
    c.Check(grown != nullptr, "realloc to 256 MiB");
    if (grown != nullptr) blocks.back() = grown;
    for (void* p : blocks) std::free(p);
    std::vector<std::string> strings(10000, std::string(100, 'x'));
    strings.clear();
    strings.shrink_to_fit();
    malloc_trim(0);

    TG_LOG_INFO("sandboxed event loop ran");
  });
  EXPECT_TRUE(out.ExitedCleanly()) << out.Describe();
  EXPECT_NE(out.stderr_text.find("<6>tollgate-filter: sandboxed event loop ran\n"),
            std::string::npos)
      << out.Describe();
}

}  // namespace
}  // namespace tollgate::platform
