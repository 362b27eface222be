// The filter's side of the analysis channel (also used by the probe tool, tests and benchmarks).
// Asks tollgated about flows without ever letting the packet path wait without a deadline:
//   - every question has a deadline (default 200 ms); past it, the question gets the configured
//     FallbackPolicy, and a verdict that arrives later is ignored and counted as late;
//   - a question asked while the daemon is unreachable gets the fallback at once;
//   - a lost connection is re-made at once, then with capped exponential backoff, each time with a
//     fresh handshake; questions still inside their deadline are sent again on the new session;
//   - after the daemon's Goodbye (idle exit) the client reconnects only when it next has a
//   question,
//     which is what lets socket activation start the daemon again on demand.
// Every question is settled exactly once (PendingQuestions). One sd-event loop, no threads.
#pragma once

#include <systemd/sd-event.h>

#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/flow.h"
#include "common/unique_fd.h"
#include "ipc/codec.h"
#include "ipc/datagram_reader.h"
#include "ipc/peer.h"
#include "ipc/pending_questions.h"

namespace tollgate::ipc {

struct ClientOptions {
  std::string socket_path;
  Duration deadline{std::chrono::milliseconds(200)};
  FallbackPolicy fallback = FallbackPolicy::kFailOpen;
  uint32_t daemon_uid = 0;  // besides root, the uid we accept as the daemon
  Role role = Role::kFilter;
  std::string build = "tollgate " TOLLGATE_VERSION;
  Backoff::Options backoff;
  // A connected daemon that has not welcomed us by then is treated as unreachable.
  Duration handshake_timeout{std::chrono::seconds(2)};
  size_t max_pending = 65536;  // beyond: the fallback at once, counted as overload
  size_t max_batch = 64;       // items per message before it is sent without waiting
  size_t max_outbox_messages = 256;
  // Decided notices are for the daemon's log: they wait up to this long (or until max_batch of
  // them, or a question, is going anyway) so that reused verdicts do not wake the daemon per flow.
  Duration decided_delay{std::chrono::milliseconds(20)};
};

enum class ChannelState : uint8_t {
  kIdle,        // not connected, nothing to ask (initially, or after the daemon's Goodbye)
  kConnecting,  // connected, waiting for Welcome; questions wait for their deadline
  kConnected,
  kBackoff,  // the daemon is unreachable; questions get the fallback at once
  kStopped,
};
const char* ChannelStateName(ChannelState state);

enum class DecisionSource : uint8_t {
  kDaemon,
  kFallbackDeadline,     // the daemon did not answer in time
  kFallbackUnavailable,  // the daemon could not be reached
  kFallbackOverload,     // max_pending questions were already waiting
};
const char* DecisionSourceName(DecisionSource source);

struct Decision {
  uint64_t id = 0;
  Action action = Action::kAllow;
  uint32_t inspect_bytes = 0;
  CacheScope cache = CacheScope::kFlow;
  std::string_view reason;  // valid during the handler call only
  DecisionSource source = DecisionSource::kDaemon;
  uint32_t cache_ttl_ms = 0;               // with CacheScope::kDestination
  const FlowQuestion* question = nullptr;  // what was asked; valid during the handler call only
  bool cache_until_dns = false;            // with kDestination: until DNS names the address
};

struct ClientStatus {
  ChannelState state = ChannelState::kIdle;
  size_t pending = 0;
  uint64_t asked = 0;
  uint64_t answered = 0;  // by the daemon
  uint64_t fallbacks_deadline = 0;
  uint64_t fallbacks_unavailable = 0;
  uint64_t fallbacks_overload = 0;
  uint64_t late_verdicts = 0;  // for questions already settled, or never asked
  uint64_t dns_sent = 0;
  uint64_t dns_dropped = 0;       // observations are never held: dropped while disconnected
  uint64_t messages_dropped = 0;  // daemon not reading; their questions fall back at deadline
  uint64_t sessions = 0;          // successful handshakes
  uint64_t disconnects = 0;
  uint64_t connect_failures = 0;
  uint64_t protocol_errors = 0;
  uint64_t reports_sent = 0;
  uint64_t reports_skipped = 0;  // not connected, a 1.0 daemon, or the daemon not reading
  uint64_t decided_sent = 0;     // Decided notices sent
  uint64_t decided_dropped = 0;  // Decided notices the daemon could not be given
  uint32_t reconnect_attempt = 0;
  std::string last_error;
  std::string daemon_build;
  uint16_t daemon_minor = 0;
  ChannelSettings daemon_settings;
  uint64_t fallbacks() const {
    return fallbacks_deadline + fallbacks_unavailable + fallbacks_overload;
  }
};

class ChannelClient {
 public:
  // Called once per question. May run inside Ask() (immediate fallback) or from the event loop.
  using DecisionHandler = std::function<void(const Decision&)>;
  using ForgetHandler = std::function<void(const ForgetSelector&)>;

  ChannelClient(sd_event* loop, PeerIdentity& identity, ClientOptions options,
                DecisionHandler on_decision);
  ~ChannelClient();
  ChannelClient(const ChannelClient&) = delete;
  ChannelClient& operator=(const ChannelClient&) = delete;

  // Connects at once. Optional: a client that never calls it connects at its first question
  // (the filter does so by default, so that the daemon is started on demand, not at boot).
  void Start();
  // Settles every pending question with the fallback and closes the connection.
  void Stop();

  // Returns the question's id: the caller's (non-zero, unique for this client's life), or one
  // assigned here when question.id is 0. A caller uses one scheme or the other, never both.
  // The decision comes through the handler.
  uint64_t Ask(FlowQuestion question);
  // A DNS reply for the daemon's name map. Never held: dropped (counted) when not connected.
  void Observe(std::span<const uint8_t> dns_reply);
  // The filter's counters for the daemon's status (FilterReport). Never held and never queued
  // behind anything: sent with the next batch only when connected to a daemon that knows the
  // item (protocol minor >= 1) and is taking our messages; otherwise skipped (counted) and the
  // next report carries the newer totals anyway. Returns whether it was sent.
  bool Report(const FilterReport& report);
  // A flow the caller decided itself from a destination-scoped verdict, for the daemon's log.
  // Up to kMaxUnsentDecided wait: for decided_delay, max_batch of them or the next question
  // while connected to a daemon of protocol 1.2 or later; for the next Welcome while connecting
  // or idle after a Goodbye (a client that is idle connects for a new notice, as a question
  // would); dropped (counted in decided_dropped) when the daemon is unreachable, older, or not
  // reading. Stop sends what waits if connected, and counts it dropped if not.
  void Decided(const FlowQuestion& question, Action action);
  static constexpr size_t kMaxUnsentDecided = 4096;
  // Sends what is batched now instead of at the end of this loop iteration.
  void Flush();
  // Reads the daemon's answers without sleeping, for at most `budget` or until nothing is
  // pending. A verdict usually comes back within tens of microseconds, sooner than a sleeping
  // process is woken for it; the packet path trades that much CPU for latency (0 = never spin).
  void AwaitReplies(Duration budget);

  // The daemon's Forget, and Forget{all} when a session ends (Goodbye or a lost connection).
  void OnForget(ForgetHandler handler) { on_forget_ = std::move(handler); }
  // Called after each batch of messages from the daemon has been handled, so a caller that
  // collects work from many decisions (NFQUEUE verdicts) can send it at once, in the same loop
  // turn, instead of waiting for another one.
  void OnReceiveDone(std::function<void()> handler) { on_receive_done_ = std::move(handler); }
  // Called after every successful handshake (Welcome), so a caller can report at once.
  void OnConnected(std::function<void()> handler) { on_connected_ = std::move(handler); }
  const ClientStatus& status() const { return status_; }
  const ClientOptions& options() const { return options_; }

 private:
  class Receiver;

  void Connect();
  void ConnectFailed(std::string why);
  void Disconnected(std::string why);
  void CloseSocket();
  void ScheduleReconnect();
  void OnWelcome(const Welcome& welcome);
  void OnVerdict(const Verdict& verdict);
  void Settle(const FlowQuestion& q, Action action, std::string_view reason, DecisionSource source);
  void Fallback(const FlowQuestion& q, DecisionSource source);
  void FallbackAllPending(DecisionSource source);
  void QueueQuestion(const FlowQuestion& q);
  void SendDecided();  // every waiting Decided notice into the batch (connected only)
  // One item into the batch being built (`add` puts it in): the batch is sent first if an item of
  // about `bytes` would not fit, and right after once it holds max_batch items; otherwise it goes
  // at the end of this loop turn.
  template <typename Add>
  void AddToBatch(size_t bytes, Add&& add) {
    if (!batch_.WouldFit(bytes)) SendBatch();
    add(batch_);
    if (batch_.item_count() >= options_.max_batch) SendBatch();
    ArmFlush();
  }
  void SendBatch();
  void SendBytes(std::span<const uint8_t> bytes);
  void ArmDeadlineTimer();
  void ArmFlush();
  void ReadMessages();
  bool HandleMessage(size_t index);  // false: the session ended
  void FlushOutbox();
  void UpdateIoEvents();
  MonoTime Now() const;

  static int OnIo(sd_event_source* s, int fd, uint32_t revents, void* self);
  static int OnDeadline(sd_event_source* s, uint64_t usec, void* self);
  static int OnReconnectTimer(sd_event_source* s, uint64_t usec, void* self);
  static int OnHandshakeTimeout(sd_event_source* s, uint64_t usec, void* self);
  static int OnFlush(sd_event_source* s, void* self);
  static int OnDecidedTimer(sd_event_source* s, uint64_t usec, void* self);

  sd_event* loop_;
  PeerIdentity& identity_;
  ClientOptions options_;
  DecisionHandler on_decision_;
  ForgetHandler on_forget_;
  std::function<void()> on_receive_done_;
  std::function<void()> on_connected_;
  ClientStatus status_;
  PendingQuestions pending_;
  std::deque<std::pair<FlowQuestion, Action>> unsent_decided_;  // waiting (see Decided)
  Backoff backoff_;
  UniqueFd fd_;
  sd_event_source* io_source_ = nullptr;
  sd_event_source* deadline_source_ = nullptr;
  sd_event_source* reconnect_source_ = nullptr;
  sd_event_source* handshake_source_ = nullptr;
  sd_event_source* flush_source_ = nullptr;
  sd_event_source* decided_source_ = nullptr;
  uint32_t io_events_ = 0;
  uint64_t session_ = 0;  // incremented on every connect; 0 = none yet
  uint64_t next_id_ = 1;
  MonoTime last_deadline_{};
  bool goodbye_ = false;
  MessageBuilder batch_;
  std::deque<std::vector<uint8_t>> outbox_;
  static constexpr size_t kReadBatch = 8;
  DatagramReader reader_;
};

}  // namespace tollgate::ipc
