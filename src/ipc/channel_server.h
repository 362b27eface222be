// The daemon's side of the analysis channel: accepts filter (and probe) connections on a listening
// SEQPACKET socket, admits only peers the PeerPolicy allows (from kernel facts taken at connect
// time), runs the Hello/Welcome handshake, and answers every FlowQuestion through the Analyzer.
// Single-threaded on an sd-event loop; tollgated's main wires it up.
//
// Hostile or broken peers cost only themselves: an oversize, unverifiable or out-of-order message
// closes that one connection and is counted; a peer that does not read its replies is not read
// from either (backpressure), so it cannot make the daemon buffer without bound.
#pragma once

#include <systemd/sd-event.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "analysis/analyzer.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/unique_fd.h"
#include "ipc/codec.h"
#include "ipc/datagram_reader.h"
#include "ipc/peer.h"

namespace tollgate::ipc {

struct ServerOptions {
  PeerPolicy policy;
  ChannelSettings settings;  // sent to every client in Welcome
  std::string build = "tollgated " TOLLGATE_VERSION;
  // Exit after this long without any question or new connection (0 = never). Only meaningful
  // when a service manager holds the listening socket and restarts us on the next connect.
  Duration idle_exit{0};
  size_t max_connections = 4096;
  // Messages read from one filter connection per wake-up, so one busy peer cannot starve the
  // others. Other roles (probes, agents) get one read batch per wake-up and a lower sd-event
  // priority than filters, timers and signals: the packet path's questions never queue behind
  // another peer's burst.
  int max_messages_per_wakeup = 64;
  // A connection that has not sent its Hello by then is closed: it would hold one of
  // max_connections for nothing.
  Duration handshake_timeout{std::chrono::seconds(5)};
};

struct ServerCounters {
  uint64_t accepted = 0;
  uint64_t peers_refused = 0;
  uint64_t handshakes = 0;
  uint64_t version_refused = 0;
  uint64_t malformed_messages = 0;  // failed verification or our bounds
  uint64_t oversize_messages = 0;
  uint64_t protocol_errors = 0;  // wrong item for the state or direction
  uint64_t questions = 0;
  uint64_t verdicts = 0;
  uint64_t dns_observations = 0;
  uint64_t dns_ignored = 0;      // DNS observations from a peer whose Hello did not say filter
  uint64_t filter_reports = 0;   // kept: the last one per connection
  uint64_t reports_ignored = 0;  // from a peer whose Hello did not say role filter
  uint64_t connections_closed = 0;
  uint64_t connections_over_limit = 0;
  uint64_t handshake_timeouts = 0;  // closed for sending no Hello within handshake_timeout
  uint64_t decided_by_filters = 0;  // flows filters decided from destination-scoped verdicts
  uint64_t forgets_sent = 0;        // Forget{all} to filters, one per filter per rule change
  uint64_t send_errors = 0;
};

// Time from a question's arrival (the loop wake-up that read it) to its verdict being handed to
// the socket, in fixed buckets for the Prometheus histogram tollgate_question_seconds.
struct LatencyHistogram {
  // Upper bounds in seconds; a last, implicit bucket is +Inf.
  static constexpr std::array<double, 12> kBounds = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25};
  std::array<uint64_t, kBounds.size() + 1> counts{};  // per bucket, not cumulative
  uint64_t count = 0;
  double sum_seconds = 0;

  void Observe(Duration elapsed, uint64_t times = 1);
};

// One connected client, for `tollgate status` (the control API's GetStatus).
struct ConnectionInfo {
  Role role = Role::kUnknown;  // kUnknown until its Hello
  uint32_t uid = kUnknownId;
  pid_t pid = 0;
  std::string exe;  // "" when the kernel could not tell
  std::chrono::system_clock::time_point connected_since;
  uint64_t questions = 0;
  uint64_t verdicts = 0;
  // The filter's own account (FilterReport), the last one it sent; none from other roles, or
  // before a filter's first report.
  std::optional<FilterReport> report;
  std::chrono::system_clock::time_point reported_at;
  Duration report_age{0};  // how long ago, on the monotonic clock
};

class ChannelServer {
 public:
  ChannelServer(sd_event* loop, UniqueFd listen_fd, PeerIdentity& identity,
                analysis::Analyzer& analyzer, ServerOptions options);
  ~ChannelServer();
  ChannelServer(const ChannelServer&) = delete;
  ChannelServer& operator=(const ChannelServer&) = delete;

  Status Start();

  // Stop accepting, say Goodbye to every client, close. The service manager keeps the listening
  // socket, so a client that connects after this waits in its backlog for our successor.
  void Shutdown(std::string_view reason);

  // After a rule change: every filter connection (1.2 or later) is told to forget the verdicts
  // it keeps for destinations (Forget{all}); they were decided by rules no longer in force.
  void ForgetAll();
  // Called once when idle_exit has passed with nothing to do; the owner then exits its loop.
  void OnIdle(std::function<void()> callback) { on_idle_ = std::move(callback); }

  // Asked when the idle timer fires: true postpones idle exit (an operator client is connected
  // to the control socket, say).
  void SetBusyCheck(std::function<bool()> busy) { busy_ = std::move(busy); }

  const ServerCounters& counters() const { return counters_; }
  size_t connection_count() const { return connections_.size(); }
  std::vector<ConnectionInfo> Connections() const;
  const LatencyHistogram& question_latency() const { return latency_; }

 private:
  struct Connection;
  class Dispatcher;

  static int OnListenReady(sd_event_source* s, int fd, uint32_t revents, void* self);
  static int OnConnectionReady(sd_event_source* s, int fd, uint32_t revents, void* conn);
  static int OnHelloTimeout(sd_event_source* s, uint64_t usec, void* conn);
  static int OnIdleTimer(sd_event_source* s, uint64_t usec, void* self);

  void AcceptAll();
  void Admit(UniqueFd fd);
  void ReadMessages(Connection& c);
  bool HandleMessage(Connection& c, size_t index);  // false: the connection was closed
  void FlushOutbox(Connection& c);
  bool Send(Connection& c, std::span<const uint8_t> bytes);
  void UpdateEvents(Connection& c);
  void Close(Connection& c, const char* why);
  bool ListenBacklogHasClient() const;
  void ArmIdleTimer();
  MonoTime Now() const;
  void ObserveLatency(uint64_t verdicts);

  sd_event* loop_;
  UniqueFd listen_fd_;
  PeerIdentity& identity_;
  analysis::Analyzer& analyzer_;
  ServerOptions options_;
  bool want_exe_hash_ = false;
  PeerPolicy group_only_policy_;  // the policy without its allowlist: the cheap first check
  sd_event_source* listen_source_ = nullptr;
  sd_event_source* idle_source_ = nullptr;
  std::unordered_map<int, std::unique_ptr<Connection>> connections_;
  static constexpr int kReadBatch = 8;
  DatagramReader reader_;
  MessageBuilder reply_;
  ServerCounters counters_;
  MonoTime last_activity_{};
  bool shutting_down_ = false;
  std::function<void()> on_idle_;
  std::function<bool()> busy_;
  LatencyHistogram latency_;
  // At most 20 log lines a minute for one kind of event; the rest are only counted.
  struct LogBudget {
    MonoTime minute_start{};
    uint32_t used = 0;
    bool Take(MonoTime now) {
      if (now - minute_start >= std::chrono::minutes(1)) {
        minute_start = now;
        used = 0;
      }
      return used++ < 20;
    }
  };
  // Refused peers are logged once each, within budget (a loop of refused connects must not flood
  // the journal), and so are over-limit connects (a full table is an attack or a leak).
  LogBudget refusal_logs_;
  LogBudget over_limit_logs_;
};

}  // namespace tollgate::ipc
