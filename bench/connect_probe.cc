// connect-probe: the load generator and server of `scripts/bench connect`.
//   connect-probe server  --port P                 accept, send one byte, close (epoll, forever)
//   connect-probe latency --port P --count N [--first F]
//                                                  N connections one after another; time from
//                                                  connect() to the first byte; JSON p50/p99
//                                                  (F: where the source rotation starts, so
//                                                  that rounds of one run use other sources)
//   connect-probe rate    --port P --seconds S --parallel K
//                                                  K connections in flight for S seconds; JSON
//                                                  completed flows per second
// Clients close with SO_LINGER 0 (RST) and rotate source addresses over 127.0.0.0/8, so neither
// TIME_WAIT nor port exhaustion limits the run. Loopback only.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using WallClock = std::chrono::steady_clock;

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "connect-probe: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

sockaddr_in Loopback(uint32_t host_order, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(host_order);
  a.sin_port = htons(port);
  return a;
}

int Server(uint16_t port) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a = Loopback(INADDR_ANY, port);
  if (bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) Die("bind");
  if (listen(l, 4096) != 0) Die("listen");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{EPOLLIN, {.fd = l}};
  epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) {
    epoll_event events[16];
    int n = epoll_wait(ep, events, 16, -1);
    for (int i = 0; i < n; ++i) {
      for (;;) {
        int c = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) break;
        (void)!write(c, "x", 1);
        close(c);
      }
    }
  }
}

// One connection from a rotating 127.x.y.z source; returns microseconds to first byte, or -1.
double OneConnection(uint16_t port, uint32_t n) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  linger lg{1, 0};
  setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  sockaddr_in src = Loopback(0x7f000000u | (1 + n % 0xfffffe), 0);
  bind(s, reinterpret_cast<sockaddr*>(&src), sizeof(src));
  sockaddr_in dst = Loopback(0x7f000001u, port);
  auto t0 = WallClock::now();
  char b;
  double us = -1;
  if (connect(s, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) == 0 && read(s, &b, 1) == 1) {
    us = std::chrono::duration<double, std::micro>(WallClock::now() - t0).count();
  }
  close(s);
  return us;
}

int Latency(uint16_t port, int count, int first) {
  std::vector<double> v;
  int failed = 0;
  for (int i = first; i < first + count; ++i) {
    double us = OneConnection(port, static_cast<uint32_t>(i) * 7919u);
    if (us < 0) {
      ++failed;
    } else {
      v.push_back(us);
    }
  }
  if (v.empty()) {
    std::printf("{\"p50_us\":null,\"p99_us\":null,\"ok\":0,\"failed\":%d}\n", failed);
    return 1;
  }
  std::sort(v.begin(), v.end());
  std::printf("{\"p50_us\":%.1f,\"p99_us\":%.1f,\"ok\":%zu,\"failed\":%d}\n", v[v.size() / 2],
              v[v.size() * 99 / 100], v.size(), failed);
  return failed == 0 ? 0 : 1;
}

int Rate(uint16_t port, double seconds, int parallel) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  uint32_t n = 0;
  uint64_t done = 0, failed = 0;
  auto open_one = [&]() {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    linger lg{1, 0};
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    ++n;
    sockaddr_in src = Loopback(0x7f000000u | (1 + (n * 7919u) % 0xfffffe), 0);
    bind(s, reinterpret_cast<sockaddr*>(&src), sizeof(src));
    sockaddr_in dst = Loopback(0x7f000001u, port);
    if (connect(s, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0 && errno != EINPROGRESS) {
      ++failed;
      close(s);
      return;
    }
    epoll_event ev{EPOLLIN | EPOLLRDHUP, {.fd = s}};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
  };
  for (int i = 0; i < parallel; ++i) open_one();
  auto start = WallClock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  while (WallClock::now() < end) {
    epoll_event events[256];
    int k = epoll_wait(ep, events, 256, 100);
    for (int i = 0; i < k; ++i) {
      int s = events[i].data.fd;
      char b;
      if (read(s, &b, 1) == 1) {
        ++done;
      } else {
        ++failed;
      }
      close(s);
      open_one();
    }
  }
  double secs = std::chrono::duration<double>(WallClock::now() - start).count();
  std::printf("{\"flows_per_s\":%.0f,\"completed\":%llu,\"failed\":%llu}\n",
              static_cast<double>(done) / secs, static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(failed));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: connect-probe server|latency|rate --port P [...]\n");
    return 2;
  }
  std::string mode = argv[1];
  uint16_t port = 8080;
  int count = 2000, parallel = 64, first = 0;
  double seconds = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string f = argv[i];
    if (f == "--port")
      port = static_cast<uint16_t>(std::atoi(argv[i + 1]));
    else if (f == "--count")
      count = std::atoi(argv[i + 1]);
    else if (f == "--first")
      first = std::atoi(argv[i + 1]);
    else if (f == "--parallel")
      parallel = std::atoi(argv[i + 1]);
    else if (f == "--seconds")
      seconds = std::atof(argv[i + 1]);
  }
  if (mode == "server") return Server(port);
  if (mode == "latency") return Latency(port, count, first);
  if (mode == "rate") return Rate(port, seconds, parallel);
  std::fprintf(stderr, "connect-probe: unknown mode %s\n", mode.c_str());
  return 2;
}
