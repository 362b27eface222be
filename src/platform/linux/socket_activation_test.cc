#include "platform/linux/socket_activation.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

namespace tollgate::platform {
namespace {

// How the simulated service manager prepares fd 3, 4, ...
enum class Passed { kSeqpacketListening, kStreamListening, kSeqpacketNotListening };

int MakeSocket(Passed kind) {
  int type = kind == Passed::kStreamListening ? SOCK_STREAM : SOCK_SEQPACKET;
  int s = ::socket(AF_UNIX, type, 0);  // no flags: systemd passes blocking fds
  if (s < 0) return -1;
  // Autobind (an abstract address) is enough to listen without touching the file system.
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(sa_family_t)) != 0) return -1;
  if (kind != Passed::kSeqpacketNotListening && ::listen(s, 4) != 0) return -1;
  return s;
}

struct Scenario {
  std::vector<Passed> fds;
  const char* fdnames = nullptr;  // LISTEN_FDNAMES, unset when null
  bool pid_is_ours = true;
};

// Runs TakeActivatedSockets() in a child, where overwriting fd 3/4 and the environment cannot
// disturb the test binary, and returns what it saw as one line of text (or "child died ...").
std::string RunInChild(const Scenario& s) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    auto report = [&](const std::string& line, int code) {
      (void)!::write(out[1], line.data(), line.size());
      ::_exit(code);
    };
    // Build the sockets high up first, so dup2 onto 3, 4, ... cannot clobber one of them, and
    // keep the report pipe out of the way too.
    int report_fd = ::fcntl(out[1], F_DUPFD_CLOEXEC, 200);
    out[1] = report_fd;
    std::vector<int> high;
    for (Passed kind : s.fds) {
      int fd = MakeSocket(kind);
      if (fd < 0) report("setup: socket failed", 2);
      high.push_back(::fcntl(fd, F_DUPFD, 100));
      ::close(fd);
    }
    for (size_t i = 0; i < high.size(); ++i) {
      if (::dup2(high[i], 3 + static_cast<int>(i)) < 0) report("setup: dup2 failed", 2);
      ::close(high[i]);
    }
    // No fds means no activation at all: the variables are absent (LISTEN_FDS=0 is malformed).
    if (s.fds.empty()) {
      ::unsetenv("LISTEN_PID");
      ::unsetenv("LISTEN_FDS");
    } else {
      ::setenv("LISTEN_PID", std::to_string(s.pid_is_ours ? ::getpid() : ::getppid()).c_str(), 1);
      ::setenv("LISTEN_FDS", std::to_string(s.fds.size()).c_str(), 1);
    }
    if (s.fdnames != nullptr) {
      ::setenv("LISTEN_FDNAMES", s.fdnames, 1);
    } else {
      ::unsetenv("LISTEN_FDNAMES");
    }

    Expected<ActivatedSockets> got = TakeActivatedSockets();
    std::string env_left = std::getenv("LISTEN_FDS") != nullptr ? " env-left" : "";
    if (!got) report("error: " + got.error().message + env_left, 0);
    auto describe = [](const UniqueFd& fd) -> std::string {
      if (!fd.valid()) return "none";
      int type = 0;
      socklen_t len = sizeof(type);
      ::getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &len);
      std::string d = type == SOCK_SEQPACKET ? "seqpacket" : type == SOCK_STREAM ? "stream" : "?";
      if (::fcntl(fd.get(), F_GETFL) & O_NONBLOCK) d += "+nonblock";
      if (::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC) d += "+cloexec";
      return d;
    };
    report("analysis=" + describe(got->analysis) + " control=" + describe(got->control) +
               " from_systemd=" + (got->from_systemd ? "1" : "0") + env_left,
           0);
  }
  ::close(out[1]);
  std::string text;
  char buf[1024];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) text.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return "child died (status " + std::to_string(status) + "): " + text;
  }
  return text;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(SocketActivationTest, TakesNamedAnalysisAndControl) {
  EXPECT_EQ(
      RunInChild({{Passed::kSeqpacketListening, Passed::kStreamListening}, "analysis:control"}),
      "analysis=seqpacket+nonblock+cloexec control=stream+nonblock+cloexec from_systemd=1");
}

TEST(SocketActivationTest, NamesMayComeInAnyOrder) {
  EXPECT_EQ(
      RunInChild({{Passed::kStreamListening, Passed::kSeqpacketListening}, "control:analysis"}),
      "analysis=seqpacket+nonblock+cloexec control=stream+nonblock+cloexec from_systemd=1");
}

// `systemd-socket-activate -l PATH --seqpacket` without --fdname sets no LISTEN_FDNAMES.
TEST(SocketActivationTest, SingleUnnamedFdIsAnalysis) {
  EXPECT_EQ(RunInChild({{Passed::kSeqpacketListening}, nullptr}),
            "analysis=seqpacket+nonblock+cloexec control=none from_systemd=1");
}

TEST(SocketActivationTest, NoActivationIsNotAnError) {
  EXPECT_EQ(RunInChild({{}, nullptr}), "analysis=none control=none from_systemd=0");
}

TEST(SocketActivationTest, FdsMeantForAnotherProcessAreIgnored) {
  Scenario s{{Passed::kSeqpacketListening}, "analysis", /*pid_is_ours=*/false};
  EXPECT_EQ(RunInChild(s), "analysis=none control=none from_systemd=0");
}

TEST(SocketActivationTest, UnknownNameListsWhatWasReceived) {
  std::string got =
      RunInChild({{Passed::kStreamListening, Passed::kSeqpacketListening}, "metrics:analysis"});
  EXPECT_TRUE(Contains(got,
                       "error: unexpected socket passed by the service manager: received fd "
                       "3 named \"metrics\", fd 4 named \"analysis\""))
      << got;
  EXPECT_TRUE(Contains(got, "FileDescriptorName=analysis")) << got;
  EXPECT_FALSE(Contains(got, "env-left")) << got;
}

TEST(SocketActivationTest, TwoUnnamedFdsAreRefused) {
  std::string got = RunInChild({{Passed::kSeqpacketListening, Passed::kStreamListening}, nullptr});
  EXPECT_TRUE(Contains(got, "error: unexpected socket")) << got;
  EXPECT_TRUE(Contains(got, "named \"unknown\"")) << got;
}

TEST(SocketActivationTest, RepeatedNameIsRefused) {
  std::string got =
      RunInChild({{Passed::kSeqpacketListening, Passed::kSeqpacketListening}, "analysis:analysis"});
  EXPECT_TRUE(Contains(got, "error: socket name \"analysis\" passed more than once")) << got;
}

TEST(SocketActivationTest, WrongSocketTypeIsRefused) {
  std::string got = RunInChild({{Passed::kStreamListening}, "analysis"});
  EXPECT_TRUE(Contains(got,
                       "error: passed fd 3 (\"analysis\") is an AF_UNIX SOCK_STREAM socket, "
                       "listening; expected a listening AF_UNIX SOCK_SEQPACKET socket"))
      << got;
  got = RunInChild({{Passed::kSeqpacketListening}, "control"});
  EXPECT_TRUE(Contains(got, "expected a listening AF_UNIX SOCK_STREAM socket")) << got;
}

TEST(SocketActivationTest, NonListeningSocketIsRefused) {
  std::string got = RunInChild({{Passed::kSeqpacketNotListening}, "analysis"});
  EXPECT_TRUE(Contains(got, "SOCK_SEQPACKET socket, not listening; expected a listening")) << got;
}

}  // namespace
}  // namespace tollgate::platform
