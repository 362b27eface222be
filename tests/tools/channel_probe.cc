// tollgate-probe: a scriptable analysis-channel client for integration tests, the demo and the
// ipc benchmark. It asks questions through the real ChannelClient (deadlines, fallback,
// reconnect) and prints one JSON object that accounts for every question it asked:
//   asked == answered + fallbacks, no question settled twice, none lost.
//
//   tollgate-probe --socket PATH [--count N] [--rate N/s] [--ports 80,23] [--deadline-ms MS]
//                  [--fallback fail_open|fail_closed] [--wait-connected-ms MS] [--print-decisions]
#include <systemd/sd-event.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/log.h"
#include "ipc/channel_client.h"
#include "platform/linux/peer_credentials.h"

namespace {

using namespace tollgate;  // NOLINT: a small tool
using std::chrono::milliseconds;

struct Args {
  std::string socket;
  long count = 1;
  long rate = 0;  // questions per second; 0 = as fast as the loop goes
  std::vector<uint16_t> ports{80};
  long deadline_ms = 200;
  FallbackPolicy fallback = FallbackPolicy::kFailOpen;
  long wait_connected_ms = 0;
  long linger_ms = 0;  // keep running after the last decision (to watch reconnects)
  bool print_decisions = false;
  uint8_t protocol = ipproto::kTcp;
  std::string dst = "127.0.0.1";
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "tollgate-probe: %s\nusage: tollgate-probe --socket PATH [--count N] [--rate N] "
               "[--ports P,P] [--protocol tcp|udp|icmp] [--dst IP] [--deadline-ms MS] "
               "[--fallback fail_open|fail_closed] [--wait-connected-ms MS] [--linger-ms MS] "
               "[--print-decisions]\n",
               why);
  std::exit(2);
}

long Number(const char* text, const char* flag) {
  char* end = nullptr;
  long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < 0) {
    Usage((std::string(flag) + " needs a non-negative number").c_str());
  }
  return v;
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) Usage((f + " needs a value").c_str());
      return argv[++i];
    };
    if (f == "--socket") {
      a.socket = next();
    } else if (f == "--count") {
      a.count = Number(next(), "--count");
    } else if (f == "--rate") {
      a.rate = Number(next(), "--rate");
    } else if (f == "--ports") {
      a.ports.clear();
      std::string list = next();
      for (size_t pos = 0; pos <= list.size();) {
        size_t comma = list.find(',', pos);
        if (comma == std::string::npos) comma = list.size();
        a.ports.push_back(
            static_cast<uint16_t>(Number(list.substr(pos, comma - pos).c_str(), "--ports")));
        pos = comma + 1;
      }
    } else if (f == "--protocol") {
      std::string p = next();
      a.protocol = p == "udp" ? ipproto::kUdp : p == "icmp" ? ipproto::kIcmp : ipproto::kTcp;
    } else if (f == "--dst") {
      a.dst = next();
    } else if (f == "--deadline-ms") {
      a.deadline_ms = Number(next(), "--deadline-ms");
    } else if (f == "--fallback") {
      auto p = ParseFallbackPolicy(next());
      if (!p) Usage("--fallback is fail_open or fail_closed");
      a.fallback = *p;
    } else if (f == "--wait-connected-ms") {
      a.wait_connected_ms = Number(next(), "--wait-connected-ms");
    } else if (f == "--linger-ms") {
      a.linger_ms = Number(next(), "--linger-ms");
    } else if (f == "--print-decisions") {
      a.print_decisions = true;
    } else {
      Usage(("unknown flag " + f).c_str());
    }
  }
  if (a.socket.empty()) Usage("--socket is required");
  return a;
}

struct Tally {
  std::map<uint64_t, MonoTime> asked_at;
  std::map<std::string, uint64_t> by_action;
  std::map<std::string, uint64_t> by_source;
  uint64_t settled = 0;
  uint64_t duplicates = 0;
  uint64_t unknown = 0;
  int64_t max_settle_us = 0;
  int64_t max_over_deadline_us = 0;
};

MonoTime Now(sd_event* loop) {
  uint64_t us = 0;
  sd_event_now(loop, CLOCK_MONOTONIC, &us);
  return FromUsec(us);
}

}  // namespace

int main(int argc, char** argv) {
  SetLogProgramName("tollgate-probe");
  Args args = Parse(argc, argv);
  auto dst = IpAddress::Parse(args.dst);
  if (!dst) Usage("--dst is not an IP address");

  sd_event* loop = nullptr;
  if (sd_event_default(&loop) < 0) return 1;
  platform::LinuxPeerIdentity identity;
  ipc::ClientOptions opts;
  opts.socket_path = args.socket;
  opts.deadline = milliseconds(args.deadline_ms);
  opts.fallback = args.fallback;
  opts.role = ipc::Role::kProbe;
  opts.build = "tollgate-probe " TOLLGATE_VERSION;

  Tally t;
  const Duration deadline = milliseconds(args.deadline_ms);
  ipc::ChannelClient client(loop, identity, opts, [&](const ipc::Decision& d) {
    auto it = t.asked_at.find(d.id);
    if (it == t.asked_at.end()) {
      ++t.unknown;
      return;
    }
    if (it->second == MonoTime{}) {
      ++t.duplicates;
      return;
    }
    int64_t took = (Now(loop) - it->second).count();
    t.max_settle_us = std::max(t.max_settle_us, took);
    t.max_over_deadline_us = std::max(t.max_over_deadline_us, took - deadline.count());
    it->second = MonoTime{};  // settled
    ++t.settled;
    ++t.by_action[ActionName(d.action)];
    ++t.by_source[ipc::DecisionSourceName(d.source)];
    if (args.print_decisions) {
      std::printf("decision id=%llu action=%s source=%s reason=%.*s\n",
                  static_cast<unsigned long long>(d.id), ActionName(d.action),
                  ipc::DecisionSourceName(d.source), static_cast<int>(d.reason.size()),
                  d.reason.data());
    }
  });
  client.Start();

  auto run_until = [&](auto pred, MonoTime until) {
    while (!pred() && Now(loop) < until) sd_event_run(loop, 10'000);
  };
  if (args.wait_connected_ms > 0) {
    run_until([&] { return client.status().state == ipc::ChannelState::kConnected; },
              Now(loop) + milliseconds(args.wait_connected_ms));
  }

  MonoTime start = Now(loop);
  for (long i = 0; i < args.count; ++i) {
    if (args.rate > 0) {
      MonoTime due = start + Duration{i * 1'000'000 / args.rate};
      while (Now(loop) < due) sd_event_run(loop, static_cast<uint64_t>((due - Now(loop)).count()));
    } else if (i % 64 == 0) {
      sd_event_run(loop, 0);  // let verdicts in so the pending table stays small
    }
    FlowQuestion q;
    q.tuple.src = *dst;
    q.tuple.dst = *dst;
    q.tuple.src_port = static_cast<uint16_t>(10000 + i % 50000);
    q.tuple.dst_port = args.ports[static_cast<size_t>(i) % args.ports.size()];
    q.tuple.protocol = args.protocol;
    // Record before asking: the decision may come from inside Ask (immediate fallback).
    uint64_t expected_id = client.status().asked + 1;
    t.asked_at[expected_id] = Now(loop);
    uint64_t id = client.Ask(std::move(q));
    if (id != expected_id) {
      std::fprintf(stderr, "tollgate-probe: client ids are not sequential (%llu)\n",
                   static_cast<unsigned long long>(id));
      return 1;
    }
  }
  client.Flush();
  // Every question is settled by its deadline at the latest; the bound only stops a broken
  // client from hanging the probe, and what is unsettled then is reported as lost.
  run_until([&] { return t.settled == static_cast<uint64_t>(args.count); },
            Now(loop) + deadline * 4 + std::chrono::seconds(10));
  if (args.linger_ms > 0) {
    MonoTime until = Now(loop) + milliseconds(args.linger_ms);
    run_until([] { return false; }, until);
  }
  double seconds = std::chrono::duration<double>(Now(loop) - start).count();

  const ipc::ClientStatus& s = client.status();
  std::string actions, sources;
  for (const auto& [k, v] : t.by_action) {
    actions += (actions.empty() ? "" : ",") + ("\"" + k + "\":" + std::to_string(v));
  }
  for (const auto& [k, v] : t.by_source) {
    sources += (sources.empty() ? "" : ",") + ("\"" + k + "\":" + std::to_string(v));
  }
  std::string last_error;
  for (char c : s.last_error) {
    if (c == '"' || c == '\\') last_error += '\\';
    last_error += (c >= 0x20 ? c : ' ');
  }
  std::printf(
      "{\"asked\":%llu,\"settled\":%llu,\"lost\":%llu,\"duplicates\":%llu,\"unknown\":%llu,"
      "\"answered\":%llu,\"fallbacks\":%llu,\"late_verdicts\":%llu,\"actions\":{%s},"
      "\"sources\":{%s},\"sessions\":%llu,\"disconnects\":%llu,\"state\":\"%s\","
      "\"max_settle_us\":%lld,\"max_over_deadline_us\":%lld,\"seconds\":%.3f,"
      "\"last_error\":\"%s\"}\n",
      static_cast<unsigned long long>(s.asked), static_cast<unsigned long long>(t.settled),
      static_cast<unsigned long long>(static_cast<uint64_t>(args.count) - t.settled),
      static_cast<unsigned long long>(t.duplicates), static_cast<unsigned long long>(t.unknown),
      static_cast<unsigned long long>(s.answered), static_cast<unsigned long long>(s.fallbacks()),
      static_cast<unsigned long long>(s.late_verdicts), actions.c_str(), sources.c_str(),
      static_cast<unsigned long long>(s.sessions), static_cast<unsigned long long>(s.disconnects),
      ipc::ChannelStateName(s.state), static_cast<long long>(t.max_settle_us),
      static_cast<long long>(t.max_over_deadline_us), seconds, last_error.c_str());
  client.Stop();
  sd_event_unref(loop);
  return t.settled == static_cast<uint64_t>(args.count) && t.duplicates == 0 ? 0 : 1;
}
