// tollgated's control API server: accepts operator clients (the `tollgate` CLI, varlinkctl, socat)
// on control.sock, admits root and members of the admin group only (kernel credentials taken at
// connect time, the same PeerIdentity as the analysis channel), reads NUL-terminated varlink
// requests, answers them one at a time through the dispatcher and a ControlBackend, and streams
// decisions to Subscribe callers. Single-threaded on the daemon's sd-event loop; tollgated's main
// wires it up and feeds Publish() from the engine's decision observer.
//
// A client can only cost itself: a request over 64 KiB is answered RequestTooLarge and the
// connection closed; malformed JSON, unknown methods and wrong parameters get an error reply; a
// client that does not read its replies is not read from; a subscriber that falls more than
// `subscriber_queue_limit` decisions behind is dropped (counted) rather than buffered without
// bound, and Publish never waits for any socket, so the verdict path is never slowed.
#pragma once

#include <systemd/sd-event.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

#include "analysis/engine.h"
#include "common/error.h"
#include "common/unique_fd.h"
#include "control/control_backend.h"
#include "control/dispatch.h"
#include "control/varlink.h"
#include "ipc/peer.h"

namespace tollgate::control {

struct ControlServerOptions {
  // Who may connect: uid 0, or a member (primary or supplementary) of policy.group_gid. The
  // executable allowlist of the analysis channel does not apply here.
  ipc::PeerPolicy policy;
  size_t max_request_bytes = kMaxRequestBytes;
  size_t max_connections = 64;
  // Decisions waiting for one subscriber; past this it is dropped.
  size_t subscriber_queue_limit = 4096;
};

struct ControlCounters {
  uint64_t accepted = 0;
  uint64_t peers_refused = 0;
  uint64_t connections_over_limit = 0;
  uint64_t calls = 0;
  uint64_t errors = 0;               // error replies of any kind
  uint64_t invalid_requests = 0;     // not JSON, not a call
  uint64_t oversize_requests = 0;    // over max_request_bytes: answered, then closed
  uint64_t subscribers_dropped = 0;  // fell behind by more than the queue limit
  uint64_t decisions_streamed = 0;
  uint64_t connections_closed = 0;
  uint64_t send_errors = 0;
};

class ControlServer {
 public:
  ControlServer(sd_event* loop, UniqueFd listen_fd, ipc::PeerIdentity& identity,
                ControlBackend& backend, ControlServerOptions options);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  Status Start();
  // Stops accepting and closes every connection (varlink has no goodbye message).
  void Shutdown();

  // One decision for every subscriber whose filter it passes. Only queues and asks the loop to
  // write when the socket is writable; a subscriber over its queue limit is dropped.
  void Publish(const analysis::DecisionRecord& record);

  const ControlCounters& counters() const { return counters_; }
  size_t connection_count() const { return connections_.size(); }
  size_t subscriber_count() const { return subscribers_; }
  // A client is connected or waiting to be accepted: the daemon must not exit for idleness.
  bool busy() const;

 private:
  struct Connection;

  static int OnListenReady(sd_event_source* s, int fd, uint32_t revents, void* self);
  static int OnConnectionReady(sd_event_source* s, int fd, uint32_t revents, void* conn);

  void AcceptAll();
  void Admit(UniqueFd fd);
  void Read(Connection& c);
  void ServeRequests(Connection& c);
  void Handle(Connection& c, const std::string& text);
  void Queue(Connection& c, const Reply& reply);
  void Flush(Connection& c);
  void UpdateEvents(Connection& c);
  void Close(Connection& c);

  sd_event* loop_;
  UniqueFd listen_fd_;
  ipc::PeerIdentity& identity_;
  ControlBackend& backend_;
  ControlServerOptions options_;
  sd_event_source* listen_source_ = nullptr;
  std::unordered_map<int, std::unique_ptr<Connection>> connections_;
  size_t subscribers_ = 0;
  ControlCounters counters_;
  uint32_t refusal_logs_ = 0;  // refused peers logged; past a few, only counted
};

}  // namespace tollgate::control
