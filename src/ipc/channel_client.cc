#include "ipc/channel_client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "common/log.h"
#include "ipc/event_time.h"

namespace tollgate::ipc {

const char* ChannelStateName(ChannelState state) {
  switch (state) {
    case ChannelState::kIdle:
      return "idle";
    case ChannelState::kConnecting:
      return "connecting";
    case ChannelState::kConnected:
      return "connected";
    case ChannelState::kBackoff:
      return "reconnecting";
    case ChannelState::kStopped:
      return "stopped";
  }
  return "?";
}

const char* DecisionSourceName(DecisionSource source) {
  switch (source) {
    case DecisionSource::kDaemon:
      return "daemon";
    case DecisionSource::kFallbackDeadline:
      return "fallback-deadline";
    case DecisionSource::kFallbackUnavailable:
      return "fallback-unavailable";
    case DecisionSource::kFallbackOverload:
      return "fallback-overload";
  }
  return "?";
}

namespace {
double Random01() {
  thread_local std::minstd_rand rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}
}  // namespace

// Applies the daemon's items. Anything a daemon may not send ends the session.
class ChannelClient::Receiver final : public ItemVisitor {
 public:
  explicit Receiver(ChannelClient& c) : c_(c) {}
  std::string error;

  void OnWelcome(const Welcome& w) override {
    if (c_.status_.state != ChannelState::kConnecting) return Fail("unexpected Welcome");
    c_.OnWelcome(w);
  }
  void OnRefused(const Refused& r) override {
    Fail("daemon refused us: " + (r.reason.empty() ? std::string("no reason given") : r.reason));
  }
  void OnGoodbye(const Goodbye&) override { c_.goodbye_ = true; }
  void OnVerdict(const Verdict& v) override {
    if (c_.status_.state != ChannelState::kConnected) return Fail("Verdict before Welcome");
    c_.OnVerdict(v);
  }
  void OnForget(const ForgetSelector& f) override {
    if (c_.status_.state != ChannelState::kConnected) return Fail("Forget before Welcome");
    if (c_.on_forget_) c_.on_forget_(f);
  }
  void OnPing(uint64_t token) override {
    if (c_.status_.state != ChannelState::kConnected) return Fail("Ping before Welcome");
    if (!c_.batch_.WouldFit(32)) c_.SendBatch();
    c_.batch_.AddPong(token);
    c_.ArmFlush();
  }
  void OnPong(uint64_t) override {}
  void OnHello(const Hello&) override { Fail("a daemon may not send Hello"); }
  void OnQuestion(const FlowQuestion&) override { Fail("a daemon may not send FlowQuestion"); }
  void OnDnsObservation(std::span<const uint8_t>) override {
    Fail("a daemon may not send DnsObservation");
  }
  void OnFilterReport(const FilterReport&) override { Fail("a daemon may not send FilterReport"); }
  void OnDecided(const FlowQuestion&, Action) override { Fail("a daemon may not send Decided"); }

 private:
  void Fail(std::string why) {
    if (error.empty()) error = std::move(why);
  }
  ChannelClient& c_;
};

ChannelClient::ChannelClient(sd_event* loop, PeerIdentity& identity, ClientOptions options,
                             DecisionHandler on_decision)
    : loop_(sd_event_ref(loop)),
      identity_(identity),
      options_(std::move(options)),
      on_decision_(std::move(on_decision)),
      backoff_(options_.backoff, Random01),
      reader_(kReadBatch, kMaxMessageBytes) {}

ChannelClient::~ChannelClient() {
  CloseSocket();
  sd_event_source_disable_unref(deadline_source_);
  sd_event_source_disable_unref(reconnect_source_);
  sd_event_source_disable_unref(handshake_source_);
  sd_event_source_disable_unref(flush_source_);
  sd_event_source_disable_unref(decided_source_);
  sd_event_unref(loop_);
}

MonoTime ChannelClient::Now() const { return LoopNow(loop_); }

void ChannelClient::Start() {
  if (status_.state == ChannelState::kIdle) Connect();
}

void ChannelClient::Stop() {
  if (status_.state == ChannelState::kConnected) {
    SendDecided();  // the daemon logs what we decided, even as we go
    SendBatch();
    status_.messages_dropped += outbox_.size();  // the daemon was not reading: they go unsent
  } else {
    status_.decided_dropped += unsent_decided_.size();  // no daemon to tell
    unsent_decided_.clear();
  }
  FallbackAllPending(DecisionSource::kFallbackUnavailable);
  CloseSocket();
  status_.state = ChannelState::kStopped;
}

void ChannelClient::Connect() {
  sd_event_source_set_enabled(reconnect_source_, SD_EVENT_OFF);
  goodbye_ = false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options_.socket_path.size() >= sizeof(addr.sun_path)) {
    return ConnectFailed("socket path too long: " + options_.socket_path);
  }
  std::memcpy(addr.sun_path, options_.socket_path.data(), options_.socket_path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ConnectFailed(Error::System("socket", errno).message);
  // AF_UNIX connect completes at once or fails (EAGAIN: the daemon's backlog is full).
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ConnectFailed(Error::System("connect " + options_.socket_path, errno).message);
  }
  Expected<PeerFacts> daemon = identity_.Identify(fd.get(), /*want_exe_hash=*/false);
  if (!daemon) return ConnectFailed("cannot identify daemon: " + daemon.error().message);
  PeerDecision verdict = DecideDaemon(options_.daemon_uid, *daemon);
  if (!verdict.allowed) return ConnectFailed("not our daemon: " + verdict.reason);

  fd_ = std::move(fd);
  ++session_;
  io_events_ = EPOLLIN;
  int r = sd_event_add_io(loop_, &io_source_, fd_.get(), io_events_, OnIo, this);
  if (r < 0) {
    CloseSocket();
    return ConnectFailed(Error::System("watch channel socket", -r).message);
  }
  status_.state = ChannelState::kConnecting;
  // The Hello goes first and alone; questions wait in pending_ until Welcome.
  MessageBuilder hello;
  hello.AddHello(Hello{kProtocolMajor, kProtocolMinor, options_.role, options_.build});
  SendBytes(hello.Finish());
  ArmOneShot(loop_, &handshake_source_, Now() + options_.handshake_timeout, 1000,
             OnHandshakeTimeout, this);
}

void ChannelClient::OnWelcome(const Welcome& w) {
  Status version = CheckPeerVersion(w.major, w.minor);
  if (!version) {
    ConnectFailed(version.error().message);
    return;
  }
  sd_event_source_set_enabled(handshake_source_, SD_EVENT_OFF);
  status_.state = ChannelState::kConnected;
  status_.daemon_build = w.build;
  status_.daemon_minor = w.minor;
  status_.daemon_settings = w.settings;
  ++status_.sessions;
  backoff_.Reset();
  status_.reconnect_attempt = 0;
  TG_LOG_INFO("connected to %s (%s), session %llu, %zu questions to send",
              options_.socket_path.c_str(), w.build.c_str(),
              static_cast<unsigned long long>(status_.sessions), pending_.size());
  SendDecided();  // flows decided while connecting
  // Questions asked while connecting, or in flight on a lost connection, go (again) now.
  pending_.ForEachUnsent(session_, [this](const FlowQuestion& q) { QueueQuestion(q); });
  SendBatch();
  if (on_connected_) on_connected_();
}

void ChannelClient::ConnectFailed(std::string why) {
  ++status_.connect_failures;
  if (why != status_.last_error) TG_LOG_WARNING("analysis channel: %s", why.c_str());
  status_.last_error = std::move(why);
  CloseSocket();
  // The daemon cannot be reached: nothing waiting for it should wait any longer.
  FallbackAllPending(DecisionSource::kFallbackUnavailable);
  status_.decided_dropped += unsent_decided_.size();
  unsent_decided_.clear();
  status_.state = ChannelState::kBackoff;
  // The immediate retry is for a lost session; after a failed attempt, wait at least `initial`.
  if (backoff_.attempt() == 0) (void)backoff_.Next();
  ScheduleReconnect();
}

void ChannelClient::Disconnected(std::string why) {
  ++status_.disconnects;
  // Verdicts a daemon let us keep were made by its rules; whoever answers next (the same daemon
  // after a lost connection, or a new one that may have loaded other rules) decides afresh.
  if (on_forget_) {
    ForgetSelector all;
    all.all = true;
    on_forget_(all);
  }
  bool said_goodbye = goodbye_;
  if (!said_goodbye) {
    TG_LOG_WARNING("analysis channel lost: %s; reconnecting", why.c_str());
    status_.last_error = std::move(why);
  }
  CloseSocket();
  if (said_goodbye && pending_.empty()) {
    // Reconnect when there is something to ask. Decided notices still waiting go with the next
    // session: they are for the log, not worth starting a daemon that is going idle.
    status_.state = ChannelState::kIdle;
    return;
  }
  // Reconnect at once (a restarted daemon is usually there already, or socket activation holds
  // our connect in its backlog). Questions in flight keep their deadlines and are sent again on
  // the new session; only if this connect fails do they get the fallback.
  (void)backoff_.Next();
  status_.reconnect_attempt = backoff_.attempt();
  Connect();
}

void ChannelClient::CloseSocket() {
  sd_event_source_disable_unref(io_source_);
  io_source_ = nullptr;
  sd_event_source_set_enabled(handshake_source_, SD_EVENT_OFF);
  sd_event_source_set_enabled(decided_source_, SD_EVENT_OFF);  // notices wait for a Welcome
  fd_.Reset();
  outbox_.clear();
  batch_.Reset();
}

void ChannelClient::ScheduleReconnect() {
  Duration delay = backoff_.Next();
  status_.reconnect_attempt = backoff_.attempt();
  ArmOneShot(loop_, &reconnect_source_, Now() + delay, 1000, OnReconnectTimer, this);
}

int ChannelClient::OnReconnectTimer(sd_event_source*, uint64_t, void* self) {
  auto* c = static_cast<ChannelClient*>(self);
  if (c->status_.state == ChannelState::kBackoff) c->Connect();
  return 0;
}

int ChannelClient::OnHandshakeTimeout(sd_event_source*, uint64_t, void* self) {
  auto* c = static_cast<ChannelClient*>(self);
  if (c->status_.state == ChannelState::kConnecting) {
    c->ConnectFailed("daemon did not answer the handshake in time");
  }
  return 0;
}

uint64_t ChannelClient::Ask(FlowQuestion question) {
  if (question.id == 0) question.id = next_id_++;
  uint64_t id = question.id;
  ++status_.asked;
  switch (status_.state) {
    case ChannelState::kBackoff:
    case ChannelState::kStopped:
      Fallback(question, DecisionSource::kFallbackUnavailable);
      return id;
    case ChannelState::kIdle:
    case ChannelState::kConnecting:
    case ChannelState::kConnected:
      break;
  }
  if (pending_.size() >= options_.max_pending) {
    Fallback(question, DecisionSource::kFallbackOverload);
    return id;
  }
  // Deadlines stay in ask order even if the clock source were to step.
  MonoTime deadline = std::max(Now() + options_.deadline, last_deadline_);
  last_deadline_ = deadline;
  bool send_now = status_.state == ChannelState::kConnected;
  if (send_now) QueueQuestion(question);
  pending_.Add(std::move(question), deadline);
  if (send_now) pending_.MarkSent(id, session_);
  ArmDeadlineTimer();
  if (status_.state == ChannelState::kIdle) Connect();  // may settle it at once if it fails
  return id;
}

void ChannelClient::Observe(std::span<const uint8_t> dns_reply) {
  if (status_.state != ChannelState::kConnected || dns_reply.size() > kMaxPayloadBytes) {
    ++status_.dns_dropped;
    return;
  }
  AddToBatch(dns_reply.size() + 32, [&](MessageBuilder& b) { b.AddDnsObservation(dns_reply); });
  ++status_.dns_sent;
}

bool ChannelClient::Report(const FilterReport& report) {
  // A backlog means the daemon is not reading: a report must not take the place of a question.
  if (status_.state != ChannelState::kConnected || status_.daemon_minor < kFilterReportMinor ||
      !outbox_.empty()) {
    ++status_.reports_skipped;
    return false;
  }
  AddToBatch(MessageBuilder::kFilterReportBytes,
             [&](MessageBuilder& b) { b.AddFilterReport(report); });
  ++status_.reports_sent;
  return true;
}

void ChannelClient::Decided(const FlowQuestion& question, Action action) {
  switch (status_.state) {
    case ChannelState::kConnected:
      if (status_.daemon_minor < kDestinationCacheMinor || !outbox_.empty()) break;
      if (unsent_decided_.size() >= kMaxUnsentDecided) break;
      unsent_decided_.emplace_back(question, action);
      if (unsent_decided_.size() >= options_.max_batch) {
        SendDecided();
      } else if (unsent_decided_.size() == 1) {
        ArmOneShot(loop_, &decided_source_, Now() + options_.decided_delay, 1000, OnDecidedTimer,
                   this);
      }
      return;
    case ChannelState::kIdle:
    case ChannelState::kConnecting:
      if (unsent_decided_.size() >= kMaxUnsentDecided) break;
      unsent_decided_.emplace_back(question, action);
      if (status_.state == ChannelState::kIdle) Connect();
      return;
    case ChannelState::kBackoff:
    case ChannelState::kStopped:
      break;
  }
  ++status_.decided_dropped;
}

void ChannelClient::SendDecided() {
  sd_event_source_set_enabled(decided_source_, SD_EVENT_OFF);
  if (unsent_decided_.empty()) return;
  if (status_.state != ChannelState::kConnected || status_.daemon_minor < kDestinationCacheMinor) {
    status_.decided_dropped += unsent_decided_.size();  // a daemon that would refuse them
    unsent_decided_.clear();
    return;
  }
  for (const auto& notice : unsent_decided_) {
    AddToBatch(MessageBuilder::EstimateQuestionBytes(notice.first) + 16,
               [&](MessageBuilder& b) { b.AddDecided(notice.first, notice.second); });
  }
  status_.decided_sent += unsent_decided_.size();
  unsent_decided_.clear();
}

int ChannelClient::OnDecidedTimer(sd_event_source*, uint64_t, void* self) {
  auto* client = static_cast<ChannelClient*>(self);
  if (client->status_.state == ChannelState::kConnected) client->SendDecided();
  return 0;
}

void ChannelClient::QueueQuestion(const FlowQuestion& q) {
  // Notices waiting for company ride with the question: the daemon is woken for it anyway.
  if (!unsent_decided_.empty() && status_.state == ChannelState::kConnected) SendDecided();
  AddToBatch(MessageBuilder::EstimateQuestionBytes(q),
             [&](MessageBuilder& b) { b.AddQuestion(q); });
}

void ChannelClient::Flush() { SendBatch(); }

void ChannelClient::AwaitReplies(Duration budget) {
  if (budget.count() <= 0 || status_.state != ChannelState::kConnected) return;
  const auto end = std::chrono::steady_clock::now() + budget;
  uint64_t answered = status_.answered;
  while (!pending_.empty() && fd_.valid() && std::chrono::steady_clock::now() < end) {
    ReadMessages();
    if (status_.state != ChannelState::kConnected) break;
  }
  if (status_.answered != answered && on_receive_done_) on_receive_done_();
}

void ChannelClient::SendBatch() {
  // Nothing left for the end-of-iteration flush: disarming it saves the loop a wasted wake-up.
  sd_event_source_set_enabled(flush_source_, SD_EVENT_OFF);
  if (batch_.empty()) return;
  if (fd_.valid()) SendBytes(batch_.Finish());
  batch_.Reset();
}

void ChannelClient::SendBytes(std::span<const uint8_t> bytes) {
  if (outbox_.empty()) {
    for (;;) {
      ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0) return;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      // The reader side will see the hang-up and handle the reconnect.
      return;
    }
  }
  if (outbox_.size() >= options_.max_outbox_messages) {
    ++status_.messages_dropped;  // its questions stay pending and fall back at their deadline
    return;
  }
  outbox_.emplace_back(bytes.begin(), bytes.end());
  UpdateIoEvents();
}

void ChannelClient::FlushOutbox() {
  while (!outbox_.empty()) {
    const auto& m = outbox_.front();
    ssize_t n = ::send(fd_.get(), m.data(), m.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      outbox_.clear();
      break;
    }
    outbox_.pop_front();
  }
  UpdateIoEvents();
}

void ChannelClient::UpdateIoEvents() {
  if (io_source_ == nullptr) return;
  uint32_t want = EPOLLIN | (outbox_.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
  if (want != io_events_) {
    sd_event_source_set_io_events(io_source_, want);
    io_events_ = want;
  }
}

void ChannelClient::ArmFlush() {
  if (flush_source_ == nullptr) {
    sd_event_add_defer(loop_, &flush_source_, OnFlush, this);
  }
  sd_event_source_set_enabled(flush_source_, SD_EVENT_ONESHOT);
}

int ChannelClient::OnFlush(sd_event_source*, void* self) {
  static_cast<ChannelClient*>(self)->SendBatch();
  return 0;
}

int ChannelClient::OnIo(sd_event_source*, int, uint32_t revents, void* self) {
  auto* c = static_cast<ChannelClient*>(self);
  if (revents & EPOLLOUT) c->FlushOutbox();
  if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    c->ReadMessages();
    if (c->on_receive_done_) c->on_receive_done_();
  }
  return 0;
}

void ChannelClient::ReadMessages() {
  // Bounded per wake-up so deadlines and the packet path get their turn.
  for (int round = 0; round < 8 && fd_.valid(); ++round) {
    const int fd = fd_.get();
    DatagramReader::Result r = reader_.Read(fd);
    for (size_t i = 0; i < r.count; ++i) {
      if (!HandleMessage(i) || fd_.get() != fd) return;  // session ended (maybe a new one began)
    }
    if (r.eof) {
      bool handshaking = status_.state == ChannelState::kConnecting;
      if (handshaking && !goodbye_) {
        return ConnectFailed("daemon closed the connection during the handshake");
      }
      return Disconnected("daemon closed the connection");
    }
    if (r.error != 0) return Disconnected(Error::System("receive", r.error).message);
    if (r.count < kReadBatch) return;
  }
}

bool ChannelClient::HandleMessage(size_t index) {
  if (reader_.truncated(index)) {
    ++status_.protocol_errors;
    Disconnected("oversize message from daemon");
    return false;
  }
  Receiver receiver(*this);
  Status decoded = DecodeMessage(reader_.message(index), receiver);
  if (!decoded) {
    ++status_.protocol_errors;
    Disconnected("bad message from daemon: " + decoded.error().message);
    return false;
  }
  if (!receiver.error.empty()) {
    bool refused = receiver.error.starts_with("daemon refused us");
    if (!refused) ++status_.protocol_errors;
    if (refused || status_.state == ChannelState::kConnecting) {
      ConnectFailed(receiver.error);
    } else {
      Disconnected(receiver.error);
    }
    return false;
  }
  return true;
}

void ChannelClient::OnVerdict(const Verdict& v) {
  std::optional<FlowQuestion> q = pending_.Settle(v.id);
  if (!q) {
    ++status_.late_verdicts;  // already settled by the fallback: never applied twice
    return;
  }
  ++status_.answered;
  Decision d{v.id,           v.action, v.inspect_bytes,  v.cache, v.reason, DecisionSource::kDaemon,
             v.cache_ttl_ms, &*q,      v.cache_until_dns};
  on_decision_(d);
}

void ChannelClient::Fallback(const FlowQuestion& q, DecisionSource source) {
  switch (source) {
    case DecisionSource::kFallbackDeadline:
      ++status_.fallbacks_deadline;
      break;
    case DecisionSource::kFallbackUnavailable:
      ++status_.fallbacks_unavailable;
      break;
    case DecisionSource::kFallbackOverload:
      ++status_.fallbacks_overload;
      break;
    case DecisionSource::kDaemon:
      TG_CHECK(false);
  }
  Decision d;
  d.id = q.id;
  d.action = FallbackAction(options_.fallback);
  // Fallback verdicts are not cached in the kernel: the next packet may find the daemon back.
  d.cache = CacheScope::kNone;
  d.reason = options_.fallback == FallbackPolicy::kFailOpen ? "fallback: fail_open"
                                                            : "fallback: fail_closed";
  d.source = source;
  on_decision_(d);
}

void ChannelClient::FallbackAllPending(DecisionSource source) {
  pending_.SettleAll([&](const FlowQuestion& q) { Fallback(q, source); });
}

void ChannelClient::ArmDeadlineTimer() {
  std::optional<MonoTime> next = pending_.NextDeadline();
  if (!next) return;  // a timer that finds nothing due costs less than disarming it every time
  uint64_t when = ToUsec(*next);
  if (deadline_source_ == nullptr) {
    // 1 ms accuracy: a deadline is a promise to the packet path, not a hint.
    sd_event_add_time(loop_, &deadline_source_, CLOCK_MONOTONIC, when, 1000, OnDeadline, this);
    return;
  }
  // Not re-programmed for every question: only when the earliest deadline moves earlier.
  ArmNoLaterThan(deadline_source_, *next);
}

int ChannelClient::OnDeadline(sd_event_source*, uint64_t, void* self) {
  auto* c = static_cast<ChannelClient*>(self);
  c->pending_.ExpireUntil(
      c->Now(), [c](const FlowQuestion& q) { c->Fallback(q, DecisionSource::kFallbackDeadline); });
  c->ArmDeadlineTimer();
  return 0;
}

}  // namespace tollgate::ipc
