// tollgate-fault-load: the load side of the fault matrix (tests/faults/). Loopback only, bounded
// in count and time; each mode prints one line of key=value pairs that accounts for everything it
// sent, so a test can check that the counts add up.
//
//   connect --ports P[,P...] --count N --parallel C [--deadline-ms D] [--src-offset K]
//           [--at N[,N...] --run COMMAND]
//       N TCP connections, C at a time, ports in turn, each from its own source address in
//       127.0.0.0/8 (so every connection is a new 5-tuple), to a server that writes one byte on
//       accept (connect-probe server). Each ends as completed (got the byte), refused (RST),
//       timeout (nothing by its deadline) or other; totals and per port, and connections/s.
//       With --at/--run, `sh -c COMMAND` starts (in the background) as the Nth connection is
//       opened, so a fault lands at a known point of the run; hooks_run and hook_failures say
//       how that went.
//   udp-send --port P --count N [--src-offset K] [--nfq-backlog Q:LIMIT]
//       N datagrams to 127.0.0.1:P, each from its own source address (IP_PKTINFO), so each is a
//       new flow; the payload is the datagram's number, K to K+N-1. With --nfq-backlog it waits
//       while NFQUEUE Q holds LIMIT packets or more (/proc/net/netfilter/nfnetlink_queue), so a
//       test can send faster than a reader could take them without overrunning its socket.
//   udp-recv --port P [--split K]
//       Counts datagrams on port P by number (distinct, duplicates, below K); prints its line on
//       SIGUSR1 and at exit (SIGTERM/SIGINT).
//   hostile --socket PATH --connections N [--churn-ms MS] [--kinds K,K...]
//       N authorised but misbehaving analysis-channel peers, the kinds in turn (default all
//       five): silent (never says Hello; reconnects after MS when the daemon hangs up), never_read
//       (handshake, then questions until the daemon stops taking them, never reads a reply),
//       slow_read (a batch of 64 questions every 2 s, one reply read every 4 s), garbage and
//       oversize (send a bad message, wait for the daemon to close, reconnect after MS). Prints
//       "ready ..." once every connection is made, its totals on SIGTERM/SIGINT after the churners
//       finish their current round.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/flow.h"
#include "common/unique_fd.h"
#include "ipc/codec.h"

namespace {

using namespace tollgate;  // NOLINT: a small tool
using Clock = std::chrono::steady_clock;

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "tollgate-fault-load: %s\n"
               "usage: tollgate-fault-load connect --ports P[,P] --count N --parallel C "
               "[--deadline-ms D] [--src-offset K] [--at N[,N] --run COMMAND]\n"
               "       tollgate-fault-load udp-send --port P --count N [--src-offset K] "
               "[--nfq-backlog Q:LIMIT]\n"
               "       tollgate-fault-load udp-recv --port P [--split K]\n"
               "       tollgate-fault-load hostile --socket PATH --connections N [--churn-ms MS] "
               "[--kinds silent,never_read,slow_read,garbage,oversize]\n",
               why.c_str());
  std::exit(2);
}

long Number(const std::string& text, const std::string& flag) {
  char* end = nullptr;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < 0) Usage(flag + " needs a non-negative number");
  return v;
}

struct Args {
  std::string mode;
  std::vector<uint16_t> ports;
  long count = 0;
  long parallel = 64;
  long deadline_ms = 3000;
  long src_offset = 0;
  std::vector<long> at;
  std::string run;
  long split = 0;
  int nfq_queue = -1;
  long nfq_limit = 0;
  std::string socket;
  long connections = 0;
  long churn_ms = 250;
  std::vector<std::string> kinds{"silent", "never_read", "slow_read", "garbage", "oversize"};
};

Args Parse(int argc, char** argv) {
  if (argc < 2) Usage("no mode");
  Args a;
  a.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string f = argv[i];
    if (i + 1 >= argc) Usage(f + " needs a value");
    std::string v = argv[++i];
    if (f == "--ports" || f == "--port") {
      for (size_t pos = 0; pos <= v.size();) {
        size_t comma = std::min(v.find(',', pos), v.size());
        long p = Number(v.substr(pos, comma - pos), f);
        if (p == 0 || p > 65535) Usage(f + " must be 1..65535");
        a.ports.push_back(static_cast<uint16_t>(p));
        pos = comma + 1;
      }
    } else if (f == "--count") {
      a.count = Number(v, f);
    } else if (f == "--parallel") {
      a.parallel = std::max(1L, Number(v, f));
    } else if (f == "--deadline-ms") {
      a.deadline_ms = Number(v, f);
    } else if (f == "--at") {
      for (size_t pos = 0; pos <= v.size();) {
        size_t comma = std::min(v.find(',', pos), v.size());
        a.at.push_back(Number(v.substr(pos, comma - pos), f));
        pos = comma + 1;
      }
    } else if (f == "--run") {
      a.run = v;
    } else if (f == "--src-offset") {
      a.src_offset = Number(v, f);
    } else if (f == "--split") {
      a.split = Number(v, f);
    } else if (f == "--nfq-backlog") {
      size_t colon = v.find(':');
      if (colon == std::string::npos) Usage("--nfq-backlog is QUEUE:LIMIT");
      a.nfq_queue = static_cast<int>(Number(v.substr(0, colon), f));
      a.nfq_limit = Number(v.substr(colon + 1), f);
    } else if (f == "--socket") {
      a.socket = v;
    } else if (f == "--connections") {
      a.connections = Number(v, f);
    } else if (f == "--kinds") {
      a.kinds.clear();
      for (size_t pos = 0; pos <= v.size();) {
        size_t comma = std::min(v.find(',', pos), v.size());
        a.kinds.push_back(v.substr(pos, comma - pos));
        pos = comma + 1;
      }
    } else if (f == "--churn-ms") {
      a.churn_ms = Number(v, f);
    } else {
      Usage("unknown flag " + f);
    }
  }
  return a;
}

// Enough descriptors for every connection at once.
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &lim);
  }
}

// The n-th source address of a run: 127.0.0.0/8 without x.y.z.0, x.y.z.255 and 127.0.0.1 (the
// servers' address), so up to ~16.5 million distinct ones.
in_addr_t SourceAddress(uint64_t n) {
  const uint64_t per_block = 254;  // last octet 1..254
  uint64_t block = n / per_block;
  uint32_t last = static_cast<uint32_t>(n % per_block) + 1;
  uint32_t host = 0x7f000000U | static_cast<uint32_t>((block + 1) << 8) | last;  // skip 127.0.0.x
  return htonl(host);
}

sockaddr_in Address(in_addr_t net_order, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = net_order;
  a.sin_port = htons(port);
  return a;
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// A signalfd for the signals that end or query a run; blocks them for the process.
UniqueFd SignalFd(std::initializer_list<int> signals) {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : signals) sigaddset(&mask, s);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  return UniqueFd(signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
}

// ---------------------------------------------------------------------------------------------
// connect

struct PortTally {
  uint64_t completed = 0, refused = 0, timeout = 0, other = 0;
};

// "ECONNRESET" and the like, for the other_reasons tally.
const char* ErrName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "unknown-errno";
}

// `sh -c command` in the background; its pid, or -1.
pid_t Hook(const std::string& command) {
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

int Connect(const Args& a) {
  if (a.ports.empty() || a.count == 0) Usage("connect needs --ports and --count");
  if (!a.at.empty() && a.run.empty()) Usage("--at needs --run");
  std::vector<pid_t> hooks;
  RaiseFileLimit();
  struct Slot {
    int fd = -1;
    uint16_t port = 0;
    bool connected = false;
    Clock::time_point deadline;
  };
  std::vector<Slot> slots(static_cast<size_t>(a.parallel));
  std::vector<size_t> free_slots;
  for (size_t i = slots.size(); i-- > 0;) free_slots.push_back(i);
  std::map<uint16_t, PortTally> by_port;
  for (uint16_t p : a.ports) by_port[p];
  std::map<std::string, uint64_t> other_reasons;
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  const auto deadline = std::chrono::milliseconds(a.deadline_ms);
  long launched = 0, active = 0;
  auto finish = [&](size_t i, uint64_t PortTally::*outcome, const char* reason) {
    Slot& s = slots[i];
    linger lg{1, 0};  // RST: no TIME_WAIT, the run leaves nothing behind
    setsockopt(s.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(s.fd);
    s.fd = -1;
    ++(by_port[s.port].*outcome);
    if (reason != nullptr) ++other_reasons[reason];
    free_slots.push_back(i);
    --active;
  };
  auto launch = [&]() {
    size_t i = free_slots.back();
    free_slots.pop_back();
    Slot& s = slots[i];
    s.port = a.ports[static_cast<size_t>(launched) % a.ports.size()];
    s.connected = false;
    s.deadline = Clock::now() + deadline;
    s.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ++active;
    sockaddr_in src = Address(SourceAddress(static_cast<uint64_t>(a.src_offset + launched)), 0);
    ++launched;
    if (s.fd < 0) return finish(i, &PortTally::other, ErrName(errno));
    if (bind(s.fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
      return finish(i, &PortTally::other, "bind");
    }
    sockaddr_in dst = Address(htonl(INADDR_LOOPBACK), s.port);
    if (connect(s.fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0 &&
        errno != EINPROGRESS) {
      return finish(i, errno == ECONNREFUSED ? &PortTally::refused : &PortTally::other,
                    errno == ECONNREFUSED ? nullptr : ErrName(errno));
    }
    epoll_event ev{EPOLLOUT | EPOLLIN, {.u64 = i}};
    epoll_ctl(ep.get(), EPOLL_CTL_ADD, s.fd, &ev);
  };

  const auto start = Clock::now();
  while (launched < a.count || active > 0) {
    while (launched < a.count && !free_slots.empty()) {
      launch();
      if (std::find(a.at.begin(), a.at.end(), launched) != a.at.end()) hooks.push_back(Hook(a.run));
    }
    epoll_event events[256];
    int n = epoll_wait(ep.get(), events, 256, 10);
    for (int k = 0; k < n; ++k) {
      size_t i = events[k].data.u64;
      Slot& s = slots[i];
      if (s.fd < 0) continue;
      if (!s.connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err == ECONNREFUSED) {
          finish(i, &PortTally::refused, nullptr);
          continue;
        }
        if (err != 0) {
          finish(i, &PortTally::other, ErrName(err));
          continue;
        }
        s.connected = true;
        epoll_event ev{EPOLLIN | EPOLLRDHUP, {.u64 = i}};
        epoll_ctl(ep.get(), EPOLL_CTL_MOD, s.fd, &ev);
        if ((events[k].events & EPOLLIN) == 0) continue;
      }
      char b;
      ssize_t r = read(s.fd, &b, 1);
      if (r == 1) {
        finish(i, &PortTally::completed, nullptr);
      } else if (r < 0 && errno == EAGAIN) {
        continue;
      } else if (r < 0 && (errno == ECONNREFUSED || errno == ECONNRESET)) {
        finish(i, &PortTally::refused, nullptr);
      } else {
        finish(i, &PortTally::other, r == 0 ? "eof" : ErrName(errno));
      }
    }
    const auto now = Clock::now();
    for (size_t i = 0; i < slots.size(); ++i) {
      if (slots[i].fd >= 0 && now >= slots[i].deadline) finish(i, &PortTally::timeout, nullptr);
    }
  }
  const double secs = Seconds(start);
  int hook_failures = 0;
  for (pid_t pid : hooks) {
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
      ++hook_failures;
    }
  }
  PortTally total;
  std::string per_port;
  for (const auto& [port, t] : by_port) {
    total.completed += t.completed;
    total.refused += t.refused;
    total.timeout += t.timeout;
    total.other += t.other;
    std::string p = std::to_string(port);
    per_port += " completed_" + p + "=" + std::to_string(t.completed) + " refused_" + p + "=" +
                std::to_string(t.refused) + " timeout_" + p + "=" + std::to_string(t.timeout) +
                " other_" + p + "=" + std::to_string(t.other);
  }
  std::string reasons;
  for (const auto& [r, c] : other_reasons) {
    reasons += (reasons.empty() ? "" : ",") + r + ":" + std::to_string(c);
  }
  std::printf(
      "count=%ld completed=%llu refused=%llu timeout=%llu other=%llu%s seconds=%.3f "
      "conn_per_s=%.0f other_reasons=%s hooks_run=%zu hook_failures=%d\n",
      a.count, static_cast<unsigned long long>(total.completed),
      static_cast<unsigned long long>(total.refused),
      static_cast<unsigned long long>(total.timeout), static_cast<unsigned long long>(total.other),
      per_port.c_str(), secs, static_cast<double>(a.count) / secs,
      reasons.empty() ? "none" : reasons.c_str(), hooks.size(), hook_failures);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// udp-send, udp-recv

// Packets held by NFQUEUE `queue` now (queue_total in /proc/net/netfilter/nfnetlink_queue), or -1.
long NfqHeld(int queue) {
  std::ifstream in("/proc/net/netfilter/nfnetlink_queue");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    long num = -1, portid = 0, total = 0;
    if (f >> num >> portid >> total && num == queue) return total;
  }
  return -1;
}

int UdpSend(const Args& a) {
  if (a.ports.size() != 1 || a.count == 0) Usage("udp-send needs --port and --count");
  UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) Usage(std::string("socket: ") + std::strerror(errno));
  // A queued datagram stays charged to this socket until its verdict: with a stalled reader the
  // default send buffer would fill after a few thousand and block us.
  int sndbuf = 256 << 20;
  setsockopt(s.get(), SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf));
  sockaddr_in dst = Address(htonl(INADDR_LOOPBACK), a.ports[0]);
  constexpr int kBatch = 256;
  uint64_t sent = 0, send_errors = 0, backlog_waits = 0;
  const auto start = Clock::now();
  std::string error;
  while (sent < static_cast<uint64_t>(a.count) && error.empty()) {
    if (a.nfq_queue >= 0) {
      // Bounded: a reader that stopped reading must not hang the sender.
      auto give_up = Clock::now() + std::chrono::seconds(20);
      long held;
      while ((held = NfqHeld(a.nfq_queue)) >= a.nfq_limit) {
        ++backlog_waits;
        if (Clock::now() > give_up) {
          error = "queue " + std::to_string(a.nfq_queue) + " stayed at " + std::to_string(held) +
                  " packets for 20 s";
          break;
        }
        timespec ts{0, 200'000};
        nanosleep(&ts, nullptr);
      }
      if (held < 0) error = "no NFQUEUE " + std::to_string(a.nfq_queue) + " in /proc";
      if (!error.empty()) break;
    }
    const int n =
        static_cast<int>(std::min<uint64_t>(kBatch, static_cast<uint64_t>(a.count) - sent));
    mmsghdr msgs[kBatch]{};
    iovec iov[kBatch];
    uint64_t ids[kBatch];
    alignas(cmsghdr) char control[kBatch][CMSG_SPACE(sizeof(in_pktinfo))];
    for (int i = 0; i < n; ++i) {
      ids[i] = static_cast<uint64_t>(a.src_offset) + sent + static_cast<uint64_t>(i);
      iov[i] = {&ids[i], sizeof(ids[i])};
      msghdr& m = msgs[i].msg_hdr;
      m.msg_name = &dst;
      m.msg_namelen = sizeof(dst);
      m.msg_iov = &iov[i];
      m.msg_iovlen = 1;
      m.msg_control = control[i];
      m.msg_controllen = sizeof(control[i]);
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
      in_pktinfo info{};
      info.ipi_spec_dst.s_addr = SourceAddress(ids[i]);
      std::memcpy(CMSG_DATA(c), &info, sizeof(info));
    }
    int done = 0;
    while (done < n) {
      int r = sendmmsg(s.get(), msgs + done, static_cast<unsigned>(n - done), MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          pollfd p{s.get(), POLLOUT, 0};
          if (poll(&p, 1, 20'000) > 0) continue;
          error = "the send buffer stayed full for 20 s";
          break;
        }
        if (errno == EPERM || errno == ENOBUFS || errno == ENOSPC) {
          // Dropped on the way out by netfilter (a full queue under fail_closed): it was sent.
          ++send_errors;
          ++done;
          continue;
        }
        error = std::string("sendmmsg: ") + std::strerror(errno);
        break;
      }
      done += r;
    }
    sent += static_cast<uint64_t>(done);
  }
  std::printf("sent=%llu send_errors=%llu backlog_waits=%llu seconds=%.3f per_s=%.0f error=%s\n",
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(send_errors),
              static_cast<unsigned long long>(backlog_waits), Seconds(start),
              static_cast<double>(sent) / Seconds(start), error.empty() ? "none" : error.c_str());
  return error.empty() ? 0 : 1;
}

int UdpRecv(const Args& a) {
  if (a.ports.size() != 1) Usage("udp-recv needs --port");
  UniqueFd sig = SignalFd({SIGUSR1, SIGTERM, SIGINT});
  UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int rcvbuf = 64 << 20;
  setsockopt(s.get(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in addr = Address(htonl(INADDR_ANY), a.ports[0]);
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Usage(std::string("bind: ") + std::strerror(errno));
  }
  std::vector<bool> seen;
  uint64_t received = 0, distinct = 0, duplicates = 0, below = 0, malformed = 0;
  uint64_t max_id = 0;
  auto report = [&](const char* what) {
    std::printf(
        "%s received=%llu distinct=%llu duplicates=%llu below_split=%llu at_or_above_split=%llu "
        "max_id=%llu malformed=%llu\n",
        what, static_cast<unsigned long long>(received), static_cast<unsigned long long>(distinct),
        static_cast<unsigned long long>(duplicates), static_cast<unsigned long long>(below),
        static_cast<unsigned long long>(distinct - below), static_cast<unsigned long long>(max_id),
        static_cast<unsigned long long>(malformed));
    std::fflush(stdout);
  };
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{EPOLLIN, {.fd = s.get()}};
  epoll_ctl(ep.get(), EPOLL_CTL_ADD, s.get(), &ev);
  epoll_event sev{EPOLLIN, {.fd = sig.get()}};
  epoll_ctl(ep.get(), EPOLL_CTL_ADD, sig.get(), &sev);
  std::printf("ready\n");
  std::fflush(stdout);
  constexpr int kBatch = 256;
  for (;;) {
    epoll_event events[2];
    int n = epoll_wait(ep.get(), events, 2, -1);
    for (int k = 0; k < n; ++k) {
      if (events[k].data.fd == sig.get()) {
        signalfd_siginfo si{};
        while (read(sig.get(), &si, sizeof(si)) == sizeof(si)) {
          if (si.ssi_signo == SIGUSR1) {
            report("now");
          } else {
            report("final");
            return 0;
          }
        }
        continue;
      }
      for (;;) {
        mmsghdr msgs[kBatch]{};
        iovec iov[kBatch];
        uint64_t ids[kBatch];
        for (int i = 0; i < kBatch; ++i) {
          iov[i] = {&ids[i], sizeof(ids[i])};
          msgs[i].msg_hdr.msg_iov = &iov[i];
          msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(s.get(), msgs, kBatch, MSG_DONTWAIT, nullptr);
        if (r <= 0) break;
        for (int i = 0; i < r; ++i) {
          ++received;
          if (msgs[i].msg_len != sizeof(uint64_t) || ids[i] > (1U << 26)) {
            ++malformed;
            continue;
          }
          uint64_t id = ids[i];
          if (id >= seen.size()) seen.resize(std::max<uint64_t>(id + 1, seen.size() * 2));
          if (seen[id]) {
            ++duplicates;
            continue;
          }
          seen[id] = true;
          ++distinct;
          if (id < static_cast<uint64_t>(a.split)) ++below;
          max_id = std::max(max_id, id);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// hostile

enum class Kind { kSilent, kNeverRead, kSlowRead, kGarbage, kOversize };
Kind ParseKind(const std::string& name) {
  if (name == "silent") return Kind::kSilent;
  if (name == "never_read") return Kind::kNeverRead;
  if (name == "slow_read") return Kind::kSlowRead;
  if (name == "garbage") return Kind::kGarbage;
  if (name == "oversize") return Kind::kOversize;
  Usage("unknown peer kind " + name);
}

struct HostileTotals {
  uint64_t connects = 0, connect_errors = 0, welcomed = 0, refused = 0;
  uint64_t questions_sent = 0, never_read_blocked = 0, slow_replies_read = 0;
  uint64_t garbage_sent = 0, garbage_closed = 0, oversize_sent = 0, oversize_closed = 0;
  uint64_t silent_closed = 0;  // silent peers the daemon hung up on (its handshake timeout)
  uint64_t closed_unexpectedly = 0;
};

class Hostile {
 public:
  explicit Hostile(const Args& a) : a_(a), ep_(epoll_create1(EPOLL_CLOEXEC)) {
    ipc::MessageBuilder b;
    b.AddHello(ipc::Hello{ipc::kProtocolMajor, ipc::kProtocolMinor, ipc::Role::kProbe,
                          "tollgate-fault-load (hostile)"});
    auto h = b.Finish();
    hello_.assign(h.begin(), h.end());
    b.Reset();
    for (uint16_t i = 0; i < 64; ++i) {
      FlowQuestion q;
      q.id = 1 + i;
      q.tuple.src = IpAddress::V4(127, 0, 0, 1);
      q.tuple.dst = IpAddress::V4(127, 0, 0, 1);
      q.tuple.src_port = static_cast<uint16_t>(20000 + i);
      q.tuple.dst_port = 80;
      q.tuple.protocol = ipproto::kTcp;
      b.AddQuestion(q);
    }
    auto q = b.Finish();
    questions_.assign(q.begin(), q.end());
    const std::string_view text = "this is not a tollgate message. ";
    while (garbage_.size() < 512) garbage_.insert(garbage_.end(), text.begin(), text.end());
    oversize_.assign(2 * ipc::kMaxMessageBytes, 0x5a);
    buf_.resize(ipc::kMaxMessageBytes);
  }

  int Run() {
    if (a_.socket.empty() || a_.connections == 0) {
      Usage("hostile needs --socket and --connections");
    }
    RaiseFileLimit();
    sig_ = SignalFd({SIGTERM, SIGINT});
    epoll_event sev{EPOLLIN, {.u64 = kSignalTag}};
    epoll_ctl(ep_.get(), EPOLL_CTL_ADD, sig_.get(), &sev);
    peers_.resize(static_cast<size_t>(a_.connections));
    for (size_t i = 0; i < peers_.size(); ++i) {
      peers_[i].kind = ParseKind(a_.kinds[i % a_.kinds.size()]);
      Open(i);
    }
    bool announced = false;
    // Once stopping, at most 10 s for the last rounds; what is still open then is reported.
    Clock::time_point give_up = Clock::time_point::max();
    while (!(stopping_ && (AllSettled() || Clock::now() > give_up))) {
      if (stopping_ && give_up == Clock::time_point::max()) {
        give_up = Clock::now() + std::chrono::seconds(10);
      }
      if (!announced && AllOpen()) {
        announced = true;
        std::printf("ready connections=%zu\n", peers_.size());
        std::fflush(stdout);
      }
      epoll_event events[256];
      int n = epoll_wait(ep_.get(), events, 256, 50);
      for (int k = 0; k < n; ++k) {
        if (events[k].data.u64 == kSignalTag) {
          signalfd_siginfo si{};
          while (read(sig_.get(), &si, sizeof(si)) == sizeof(si)) stopping_ = true;
          continue;
        }
        OnEvent(events[k].data.u64, events[k].events);
      }
      Tick();
    }
    const HostileTotals& t = totals_;
    std::printf(
        "connections=%zu connects=%llu connect_errors=%llu welcomed=%llu refused=%llu "
        "questions_sent=%llu never_read_blocked=%llu slow_replies_read=%llu garbage_sent=%llu "
        "garbage_closed=%llu oversize_sent=%llu oversize_closed=%llu silent_closed=%llu "
        "closed_unexpectedly=%llu unsettled=%zu\n",
        peers_.size(), U(t.connects), U(t.connect_errors), U(t.welcomed), U(t.refused),
        U(t.questions_sent), U(t.never_read_blocked), U(t.slow_replies_read), U(t.garbage_sent),
        U(t.garbage_closed), U(t.oversize_sent), U(t.oversize_closed), U(t.silent_closed),
        U(t.closed_unexpectedly),
        static_cast<size_t>(std::count_if(peers_.begin(), peers_.end(), [](const Peer& p) {
          return p.phase == Phase::kSentBad || p.phase == Phase::kHello;
        })));
    return 0;
  }

 private:
  static constexpr uint64_t kSignalTag = ~0ULL;
  enum class Phase { kClosed, kHello, kReady, kSentBad };
  struct Peer {
    Kind kind = Kind::kSilent;
    int fd = -1;
    Phase phase = Phase::kClosed;
    Clock::time_point next;  // slow_read: next batch; churners: next reconnect
    uint64_t ticks = 0;      // slow_read: batches sent
  };
  // slow_read: a batch of questions every kSlowPeriod, a reply read every other one.
  static constexpr std::chrono::milliseconds kSlowPeriod{2000};
  static unsigned long long U(uint64_t v) { return static_cast<unsigned long long>(v); }

  [[nodiscard]] bool AllOpen() const {
    return std::all_of(peers_.begin(), peers_.end(), [](const Peer& p) {
      return p.kind == Kind::kGarbage || p.kind == Kind::kOversize || p.fd >= 0;
    });
  }
  // Stopping: every handshake under way has finished and every churner has seen the daemon
  // close its last bad connection, so every connection made was one the daemon accepted.
  [[nodiscard]] bool AllSettled() const {
    return std::none_of(peers_.begin(), peers_.end(), [](const Peer& p) {
      return p.phase == Phase::kSentBad || p.phase == Phase::kHello;
    });
  }

  void Watch(size_t i, uint32_t events) {
    epoll_event ev{events, {.u64 = i}};
    if (epoll_ctl(ep_.get(), EPOLL_CTL_MOD, peers_[i].fd, &ev) != 0) {
      epoll_ctl(ep_.get(), EPOLL_CTL_ADD, peers_[i].fd, &ev);
    }
  }

  void Close(size_t i) {
    Peer& p = peers_[i];
    if (p.fd >= 0) close(p.fd);
    p.fd = -1;
    p.phase = Phase::kClosed;
    p.next = Clock::now() + std::chrono::milliseconds(a_.churn_ms);
  }

  void Open(size_t i) {
    Peer& p = peers_[i];
    p.fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", a_.socket.c_str());
    // A full backlog (EAGAIN) is retried at the next tick, like a refused connect.
    if (p.fd < 0 || connect(p.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (errno != EAGAIN) ++totals_.connect_errors;
      Close(i);
      return;
    }
    ++totals_.connects;
    switch (p.kind) {
      case Kind::kSilent:
        p.phase = Phase::kReady;
        Watch(i, EPOLLRDHUP);  // only to see the daemon hang up
        return;
      case Kind::kOversize:
        // Before any Hello: a message twice the limit.
        if (send(p.fd, oversize_.data(), oversize_.size(), MSG_NOSIGNAL) < 0) return Close(i);
        ++totals_.oversize_sent;
        p.phase = Phase::kSentBad;
        Watch(i, EPOLLIN);
        return;
      default:
        if (send(p.fd, hello_.data(), hello_.size(), MSG_NOSIGNAL) < 0) return Close(i);
        if (p.kind == Kind::kNeverRead) {
          p.phase = Phase::kReady;
          Flood(i);
          return;
        }
        p.phase = Phase::kHello;
        Watch(i, EPOLLIN);
        return;
    }
  }

  // never_read: questions until the daemon stops taking them (it stops reading us while our
  // replies wait), then nothing more: the connection stays open, unread.
  void Flood(size_t i) {
    Peer& p = peers_[i];
    for (int k = 0; k < 64; ++k) {
      if (send(p.fd, questions_.data(), questions_.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        if (errno == EAGAIN) {
          ++totals_.never_read_blocked;
          Watch(i, EPOLLRDHUP);
        } else {
          ++totals_.closed_unexpectedly;
          Close(i);
        }
        return;
      }
      totals_.questions_sent += 64;
    }
    Watch(i, EPOLLRDHUP);  // it took 64 batches: enough; it is still not read
  }

  void OnEvent(size_t i, uint32_t events) {
    Peer& p = peers_[i];
    if (p.fd < 0) return;
    if (p.phase == Phase::kHello) {
      ssize_t got = recv(p.fd, buf_.data(), buf_.size(), MSG_DONTWAIT);
      if (got < 0 && errno == EAGAIN) return;
      if (got <= 0) {
        ++totals_.closed_unexpectedly;
        return Close(i);
      }
      Handshake hs;
      if (!ipc::DecodeMessage({buf_.data(), static_cast<size_t>(got)}, hs) || !hs.welcomed) {
        ++totals_.refused;
        return Close(i);
      }
      ++totals_.welcomed;
      if (p.kind == Kind::kGarbage) {
        if (send(p.fd, garbage_.data(), garbage_.size(), MSG_NOSIGNAL) < 0) return Close(i);
        ++totals_.garbage_sent;
        p.phase = Phase::kSentBad;
        return;
      }
      // slow_read: batches from a time of its own within the period, so the peers do not all
      // ask at once.
      p.phase = Phase::kReady;
      p.next = Clock::now() + std::chrono::milliseconds((i * 7919) % kSlowPeriod.count());
      Watch(i, EPOLLRDHUP);
      return;
    }
    if (p.phase == Phase::kSentBad) {
      // The daemon must close: whatever it sends first (nothing, normally) is read and ignored.
      ssize_t got;
      while ((got = recv(p.fd, buf_.data(), buf_.size(), MSG_DONTWAIT)) > 0) {
      }
      if (got == 0 || (got < 0 && errno == ECONNRESET)) {
        ++(p.kind == Kind::kGarbage ? totals_.garbage_closed : totals_.oversize_closed);
        Close(i);
      }
      return;
    }
    if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
      // A silent peer is hung up on when its Hello is overdue (then reconnects after churn_ms).
      ++(p.kind == Kind::kSilent ? totals_.silent_closed : totals_.closed_unexpectedly);
      Close(i);
    }
  }

  void Tick() {
    const auto now = Clock::now();
    for (size_t i = 0; i < peers_.size(); ++i) {
      Peer& p = peers_[i];
      if (p.phase == Phase::kClosed && now >= p.next && !stopping_) {
        Open(i);
      } else if (p.kind == Kind::kSlowRead && p.phase == Phase::kReady && now >= p.next) {
        // Twice as many batches as it reads replies: the daemon's replies back up.
        if (send(p.fd, questions_.data(), questions_.size(), MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) {
          totals_.questions_sent += 64;
        }
        if (++p.ticks % 2 == 0 && recv(p.fd, buf_.data(), buf_.size(), MSG_DONTWAIT) > 0) {
          ++totals_.slow_replies_read;
        }
        p.next = now + kSlowPeriod;
      }
    }
  }

  struct Handshake final : ipc::ItemVisitor {
    bool welcomed = false;
    void OnWelcome(const ipc::Welcome& /*welcome*/) override { welcomed = true; }
  };

  const Args& a_;
  UniqueFd ep_;
  UniqueFd sig_;
  std::vector<Peer> peers_;
  std::vector<uint8_t> hello_, questions_, garbage_, oversize_, buf_;
  HostileTotals totals_;
  bool stopping_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  Args a = Parse(argc, argv);
  if (a.mode == "connect") return Connect(a);
  if (a.mode == "udp-send") return UdpSend(a);
  if (a.mode == "udp-recv") return UdpRecv(a);
  if (a.mode == "hostile") return Hostile(a).Run();
  Usage("unknown mode " + a.mode);
}
