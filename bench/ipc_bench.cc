// ./scripts/bench ipc: the analysis channel's cost, measured against its floor in the same run.
//   floor_rtt_p50_us    raw SEQPACKET echo between two processes (send + recv, blocking), the
//                       least any request/response over this transport can cost here;
//   rtt_p50_us/p99_us   one question at a time through the real ChannelClient and a real tollgated
//                       process (verification, analysis, deadlines and all);
//   batched_verdicts_per_s  questions asked 64 per batch, 8 batches in flight, answered by the
//                       same daemon.
// Prints one JSON object. Usage: ipc-bench TOLLGATED_PATH [samples]
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ipc/channel_client.h"
#include "platform/linux/peer_credentials.h"

namespace {

using namespace tollgate;  // NOLINT: a small tool
using WallClock = std::chrono::steady_clock;

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  return v[i];
}

// Floor: a forked echo process on a socketpair; 100-byte messages, about a question's size.
std::vector<double> FloorRtts(int samples) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  pid_t child = fork();
  if (child == 0) {
    close(sv[0]);
    char buf[2048];
    for (;;) {
      ssize_t n = recv(sv[1], buf, sizeof(buf), 0);
      if (n <= 0) _exit(0);
      if (send(sv[1], buf, static_cast<size_t>(n), MSG_NOSIGNAL) < 0) _exit(0);
    }
  }
  close(sv[1]);
  char msg[100] = {1};
  char buf[2048];
  std::vector<double> rtts;
  rtts.reserve(static_cast<size_t>(samples));
  for (int i = 0; i < samples + 1000; ++i) {
    auto t0 = WallClock::now();
    if (send(sv[0], msg, sizeof(msg), 0) < 0 || recv(sv[0], buf, sizeof(buf), 0) <= 0) std::abort();
    auto t1 = WallClock::now();
    if (i >= 1000) rtts.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  close(sv[0]);
  waitpid(child, nullptr, 0);
  return rtts;
}

pid_t StartDaemon(const std::string& tollgated, const std::filesystem::path& dir) {
  std::ofstream(dir / "tollgate.toml")
      << "[tollgate]\ngroup = \"root\"\nruntime_dir = \"" << (dir / "run").string()
      << "\"\n[daemon]\nrules_dir = \"" << (dir / "rules.d").string()
      << "\"\ndefault_action = \"allow\"\nlog_level = \"warning\"\n";
  std::filesystem::create_directories(dir / "rules.d");
  std::ofstream(dir / "rules.d" / "bench.toml")
      << "[[rule]]\nname = \"no-telnet\"\naction = \"deny\"\nprotocol = \"tcp\"\nport = 23\n"
         "[[rule]]\nname = \"web\"\naction = \"allow\"\nprotocol = \"tcp\"\nport = [80, 443]\n";
  pid_t pid = fork();
  if (pid == 0) {
    std::string config = (dir / "tollgate.toml").string();
    execl(tollgated.c_str(), tollgated.c_str(), "--config", config.c_str(), nullptr);
    std::perror("exec tollgated");
    _exit(127);
  }
  std::string sock = (dir / "run" / "analysis.sock").string();
  for (int i = 0; i < 500 && !std::filesystem::exists(sock); ++i) usleep(10'000);
  if (!std::filesystem::exists(sock)) {
    std::fprintf(stderr, "ipc-bench: tollgated did not create %s\n", sock.c_str());
    std::exit(1);
  }
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: ipc-bench TOLLGATED_PATH [samples]\n");
    return 2;
  }
  int samples = argc > 2 ? std::atoi(argv[2]) : 20000;
  auto dir = std::filesystem::temp_directory_path() / ("tg-ipc-bench-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  pid_t daemon = StartDaemon(argv[1], dir);

  sd_event* loop = nullptr;
  sd_event_new(&loop);
  platform::LinuxPeerIdentity identity;
  ipc::ClientOptions opts;
  opts.socket_path = (dir / "run" / "analysis.sock").string();
  opts.role = ipc::Role::kProbe;
  opts.deadline = std::chrono::seconds(5);  // measure the daemon, not the fallback
  uint64_t decided = 0, fallbacks = 0;
  ipc::ChannelClient client(loop, identity, opts, [&](const ipc::Decision& d) {
    ++decided;
    if (d.source != ipc::DecisionSource::kDaemon) ++fallbacks;
  });
  client.Start();
  for (int i = 0; i < 100 && client.status().state != ipc::ChannelState::kConnected; ++i) {
    sd_event_run(loop, 100'000);
  }
  if (client.status().state != ipc::ChannelState::kConnected) {
    std::fprintf(stderr, "ipc-bench: no session with tollgated: %s\n",
                 client.status().last_error.c_str());
    kill(daemon, SIGTERM);
    return 1;
  }

  FlowQuestion q;
  q.tuple.src = IpAddress::V4(127, 0, 0, 1);
  q.tuple.dst = IpAddress::V4(127, 0, 0, 1);
  q.tuple.src_port = 40000;
  q.tuple.dst_port = 443;
  q.tuple.protocol = ipproto::kTcp;

  // One at a time. Alternated with the floor in blocks so both see the same machine state.
  std::vector<double> rtts, floor;
  rtts.reserve(static_cast<size_t>(samples));
  const int blocks = 4;
  for (int b = 0; b < blocks; ++b) {
    auto f = FloorRtts(samples / blocks);
    floor.insert(floor.end(), f.begin(), f.end());
    for (int i = 0; i < samples / blocks + (b == 0 ? 1000 : 0); ++i) {
      uint64_t want = decided + 1;
      auto t0 = WallClock::now();
      client.Ask(q);
      client.Flush();
      while (decided < want) sd_event_run(loop, UINT64_MAX);
      auto t1 = WallClock::now();
      if (b > 0 || i >= 1000)
        rtts.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
  }

  // Batched: 64 per message, up to 8 messages in flight.
  const uint64_t total = 640'000;
  uint64_t asked = 0;
  uint64_t start_decided = decided;
  auto t0 = WallClock::now();
  while (decided - start_decided < total) {
    while (asked < total && asked - (decided - start_decided) < 64 * 8) {
      for (int i = 0; i < 64; ++i) client.Ask(q);
      client.Flush();
      asked += 64;
    }
    sd_event_run(loop, UINT64_MAX);
  }
  double secs = std::chrono::duration<double>(WallClock::now() - t0).count();

  client.Stop();
  kill(daemon, SIGTERM);
  waitpid(daemon, nullptr, 0);
  std::filesystem::remove_all(dir);
  sd_event_unref(loop);

  double p50 = Percentile(rtts, 0.50);
  double fp50 = Percentile(floor, 0.50);
  std::printf(
      "{\"rtt_p50_us\":%.2f,\"rtt_p99_us\":%.2f,\"floor_rtt_p50_us\":%.2f,"
      "\"floor_rtt_p99_us\":%.2f,\"rtt_ratio_p50\":%.3f,\"batched_verdicts_per_s\":%.0f,"
      "\"samples\":%zu,\"fallbacks\":%llu}\n",
      p50, Percentile(rtts, 0.99), fp50, Percentile(floor, 0.99), p50 / fp50,
      static_cast<double>(total) / secs, rtts.size(), static_cast<unsigned long long>(fallbacks));
  return fallbacks == 0 ? 0 : 1;
}
