// tollgate-probe: a scriptable analysis-channel client for integration tests, the demo and the
// ipc benchmark. It asks questions through the real ChannelClient (deadlines, fallback,
// reconnect) and prints one JSON object that accounts for every question it asked:
//   asked == answered + fallbacks, no question settled twice, none lost.
//
//   tollgate-probe --socket PATH [--count N] [--rate N/s] [--ports 80,23] [--deadline-ms MS]
//                  [--fallback fail_open|fail_closed] [--wait-connected-ms MS] [--print-decisions]
//                  [--daemon-uid UID] [--pause-after N --pause-ms MS] [--linger-ms MS]
//                  [--until-sessions N]
//
// Two more modes for the integration tests (tests/integration/), each printing its own JSON:
//   --send-raw garbage|oversize [--raw-skip-hello]: a hostile but authorised peer. Speaks the
//     handshake by hand, sends one unverifiable or oversized message, and reports whether the
//     daemon closed the connection (exit 0 iff it did).
//   --wait-readable-fd FD: waits until FD (an inherited listening socket) has a connection
//     waiting, without accepting it; the tests' stand-in service manager uses it to start the
//     daemon on demand again after an idle exit (exit 0 iff readable within --timeout-ms).
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-event.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/log.h"
#include "ipc/channel_client.h"
#include "ipc/codec.h"
#include "ipc/event_time.h"
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
  long daemon_uid = 0;
  long pause_after = -1;  // after asking this many questions, run the loop for pause_ms
  long pause_ms = 0;
  long until_sessions = 0;  // end the linger early once this many sessions were made
  std::string send_raw;     // "garbage" or "oversize"
  bool raw_skip_hello = false;
  long wait_readable_fd = -1;
  long timeout_ms = 5000;  // for --send-raw and --wait-readable-fd
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "tollgate-probe: %s\nusage: tollgate-probe --socket PATH [--count N] [--rate N] "
               "[--ports P,P] [--protocol tcp|udp|icmp] [--dst IP] [--deadline-ms MS] "
               "[--fallback fail_open|fail_closed] [--wait-connected-ms MS] [--linger-ms MS] "
               "[--print-decisions] [--daemon-uid UID] [--pause-after N --pause-ms MS] "
               "[--until-sessions N]\n"
               "       tollgate-probe --socket PATH --send-raw garbage|oversize [--raw-skip-hello] "
               "[--timeout-ms MS]\n"
               "       tollgate-probe --wait-readable-fd FD [--timeout-ms MS]\n",
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
    } else if (f == "--daemon-uid") {
      a.daemon_uid = Number(next(), "--daemon-uid");
    } else if (f == "--pause-after") {
      a.pause_after = Number(next(), "--pause-after");
    } else if (f == "--pause-ms") {
      a.pause_ms = Number(next(), "--pause-ms");
    } else if (f == "--until-sessions") {
      a.until_sessions = Number(next(), "--until-sessions");
    } else if (f == "--send-raw") {
      a.send_raw = next();
      if (a.send_raw != "garbage" && a.send_raw != "oversize") {
        Usage("--send-raw is garbage or oversize");
      }
    } else if (f == "--raw-skip-hello") {
      a.raw_skip_hello = true;
    } else if (f == "--wait-readable-fd") {
      a.wait_readable_fd = Number(next(), "--wait-readable-fd");
    } else if (f == "--timeout-ms") {
      a.timeout_ms = Number(next(), "--timeout-ms");
    } else {
      Usage(("unknown flag " + f).c_str());
    }
  }
  if (a.socket.empty() && a.wait_readable_fd < 0) Usage("--socket is required");
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

MonoTime Now(sd_event* loop) { return ipc::LoopNow(loop); }

std::string JsonEscape(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += (c >= 0x20 ? c : ' ');
  }
  return out;
}

int WaitReadable(const Args& a) {
  pollfd p{static_cast<int>(a.wait_readable_fd), POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(a.timeout_ms));
  } while (r < 0 && errno == EINTR);
  std::string error = r < 0                    ? Error::System("poll", errno).message
                      : (p.revents & POLLNVAL) ? "not an open file descriptor"
                      : r == 0 ? "no connection within " + std::to_string(a.timeout_ms) + " ms"
                               : "";
  bool readable = r > 0 && (p.revents & POLLIN) != 0;
  std::printf("{\"fd\":%ld,\"readable\":%s,\"last_error\":\"%s\"}\n", a.wait_readable_fd,
              readable ? "true" : "false", JsonEscape(error).c_str());
  return readable ? 0 : 1;
}

// What the daemon said during a hand-made handshake.
struct RawHandshake final : ipc::ItemVisitor {
  bool welcomed = false;
  std::string refused;
  void OnWelcome(const ipc::Welcome&) override { welcomed = true; }
  void OnRefused(const ipc::Refused& r) override { refused = r.reason; }
};

// A hostile peer that passes the daemon's peer check: the daemon must close this one connection
// (and count it) while it goes on serving everyone else. Blocking I/O with a receive timeout.
int SendRaw(const Args& a) {
  std::string error;
  bool welcomed = false, closed = false;
  size_t sent = 0, messages_after = 0;
  double close_ms = -1;
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  timeval tv{static_cast<time_t>(a.timeout_ms / 1000),
             static_cast<suseconds_t>((a.timeout_ms % 1000) * 1000)};
  std::vector<uint8_t> buf(ipc::kMaxMessageBytes);
  auto fail = [&](std::string what) {
    if (error.empty()) error = std::move(what);
  };
  if (a.socket.size() >= sizeof(addr.sun_path)) {
    fail("socket path too long");
  } else {
    std::memcpy(addr.sun_path, a.socket.data(), a.socket.size());
  }
  if (error.empty() && !fd.valid()) fail(Error::System("socket", errno).message);
  if (error.empty() && ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
    fail(Error::System("SO_RCVTIMEO", errno).message);
  }
  if (error.empty() && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    fail(Error::System("connect " + a.socket, errno).message);
  }
  if (error.empty() && !a.raw_skip_hello) {
    ipc::MessageBuilder hello;
    hello.AddHello(ipc::Hello{ipc::kProtocolMajor, ipc::kProtocolMinor, ipc::Role::kProbe,
                              "tollgate-probe " TOLLGATE_VERSION " (raw)"});
    auto bytes = hello.Finish();
    if (::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) < 0) {
      fail(Error::System("send Hello", errno).message);
    } else {
      ssize_t got = ::recv(fd.get(), buf.data(), buf.size(), 0);
      RawHandshake hs;
      if (got <= 0) {
        fail(got == 0 ? "daemon closed the connection before Welcome"
                      : Error::System("receive Welcome", errno).message);
      } else if (Status s = ipc::DecodeMessage({buf.data(), static_cast<size_t>(got)}, hs); !s) {
        fail("undecodable reply to Hello: " + s.error().message);
      } else if (!hs.refused.empty()) {
        fail("daemon refused us: " + hs.refused);
      } else if (!hs.welcomed) {
        fail("no Welcome in the reply to Hello");
      }
      welcomed = hs.welcomed;
    }
  }
  if (error.empty()) {
    std::vector<uint8_t> bad;
    if (a.send_raw == "garbage") {
      // Its first word, read as the FlatBuffers root offset, points far outside the buffer.
      const std::string_view text = "this is not a tollgate message. ";
      while (bad.size() < 512) bad.insert(bad.end(), text.begin(), text.end());
    } else {
      bad.assign(2 * ipc::kMaxMessageBytes, 0x5a);
    }
    if (::send(fd.get(), bad.data(), bad.size(), MSG_NOSIGNAL) < 0) {
      fail(Error::System("send " + a.send_raw + " message", errno).message);
    } else {
      sent = bad.size();
    }
  }
  if (error.empty()) {
    auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      ssize_t got = ::recv(fd.get(), buf.data(), buf.size(), 0);
      if (got > 0) {
        ++messages_after;  // e.g. a Goodbye; keep reading until the hang-up
        continue;
      }
      if (got == 0 || errno == ECONNRESET) {
        closed = true;
        close_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                       .count();
      } else if (errno == EINTR) {
        continue;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        fail("the daemon kept the connection open for " + std::to_string(a.timeout_ms) + " ms");
      } else {
        fail(Error::System("receive", errno).message);
      }
      break;
    }
  }
  std::printf(
      "{\"mode\":\"%s\",\"hello\":%s,\"welcomed\":%s,\"sent_bytes\":%zu,"
      "\"closed_by_daemon\":%s,\"close_ms\":%.3f,\"messages_after\":%zu,\"last_error\":\"%s\"}\n",
      a.send_raw.c_str(), a.raw_skip_hello ? "false" : "true", welcomed ? "true" : "false", sent,
      closed ? "true" : "false", close_ms, messages_after, JsonEscape(error).c_str());
  return closed && (welcomed || a.raw_skip_hello) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  SetLogProgramName("tollgate-probe");
  Args args = Parse(argc, argv);
  if (args.wait_readable_fd >= 0) return WaitReadable(args);
  if (!args.send_raw.empty()) return SendRaw(args);
  auto dst = IpAddress::Parse(args.dst);
  if (!dst) Usage("--dst is not an IP address");

  sd_event* loop = nullptr;
  if (sd_event_default(&loop) < 0) return 1;
  platform::LinuxPeerIdentity identity;
  ipc::ClientOptions opts;
  opts.socket_path = args.socket;
  opts.deadline = milliseconds(args.deadline_ms);
  opts.fallback = args.fallback;
  opts.daemon_uid = static_cast<uint32_t>(args.daemon_uid);
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
  MonoTime pace_start = start;  // --rate paces from here; moved on by a --pause
  for (long i = 0; i < args.count; ++i) {
    if (i == args.pause_after && args.pause_ms > 0) {
      client.Flush();
      MonoTime paused_at = Now(loop);
      run_until([] { return false; }, paused_at + milliseconds(args.pause_ms));
      pace_start += Now(loop) - paused_at;
    }
    if (args.rate > 0) {
      MonoTime due = pace_start + Duration{i * 1'000'000 / args.rate};
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
  // A mark in the log for tests that must act while the questions are in flight.
  TG_LOG_INFO("asked %ld questions", args.count);
  // Every question is settled by its deadline at the latest; the bound only stops a broken
  // client from hanging the probe, and what is unsettled then is reported as lost.
  run_until([&] { return t.settled == static_cast<uint64_t>(args.count); },
            Now(loop) + deadline * 4 + std::chrono::seconds(10));
  if (args.linger_ms > 0) {
    MonoTime until = Now(loop) + milliseconds(args.linger_ms);
    run_until(
        [&] {
          return args.until_sessions > 0 &&
                 client.status().sessions >= static_cast<uint64_t>(args.until_sessions) &&
                 client.status().state == ipc::ChannelState::kConnected;
        },
        until);
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
  std::string last_error = JsonEscape(s.last_error);
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
