#include "ipc/channel_server.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <deque>
#include <utility>
#include <vector>

#include "common/log.h"
#include "ipc/datagram_reader.h"
#include "ipc/event_time.h"

namespace tollgate::ipc {
namespace {

// Closing an AF_UNIX socket whose receive queue still holds data makes the kernel reset the
// peer (ECONNRESET), and the peer then loses what we sent last: a Refused reason, a Goodbye.
// Reading what is queued first lets those last words arrive.
void DiscardQueued(int fd) {
  char sink[512];
  for (int i = 0; i < 64; ++i) {
    if (::recv(fd, sink, sizeof(sink), MSG_DONTWAIT | MSG_TRUNC) <= 0) return;
  }
}

}  // namespace

struct ChannelServer::Connection {
  enum class State { kAwaitHello, kReady };
  ChannelServer* server = nullptr;
  UniqueFd fd;
  sd_event_source* source = nullptr;
  sd_event_source* hello_timer = nullptr;  // until the Hello: closes the connection at expiry
  PeerFacts peer;
  State state = State::kAwaitHello;
  Role role = Role::kUnknown;
  uint16_t minor = 0;                       // the peer's protocol minor version, from its Hello
  std::deque<std::vector<uint8_t>> outbox;  // replies the peer has not taken yet
  uint32_t events = EPOLLIN;
  std::chrono::system_clock::time_point connected_since = std::chrono::system_clock::now();
  uint64_t questions = 0;
  uint64_t verdicts = 0;
  std::optional<FilterReport> report;  // fixed size: a peer cannot make us keep more
  std::chrono::system_clock::time_point reported_at;
  MonoTime reported_mono{};
};

void LatencyHistogram::Observe(Duration elapsed, uint64_t times) {
  const double seconds = std::chrono::duration<double>(elapsed).count();
  size_t bucket = 0;
  while (bucket < kBounds.size() && seconds > kBounds[bucket]) ++bucket;
  counts[bucket] += times;
  count += times;
  sum_seconds += seconds * static_cast<double>(times);
}

std::vector<ConnectionInfo> ChannelServer::Connections() const {
  std::vector<ConnectionInfo> out;
  out.reserve(connections_.size());
  for (const auto& [fd, c] : connections_) {
    ConnectionInfo info;
    info.role = c->role;
    info.uid = c->peer.uid;
    info.pid = c->peer.pid;
    if (c->peer.exe_known) info.exe = c->peer.exe_path;
    info.connected_since = c->connected_since;
    info.questions = c->questions;
    info.verdicts = c->verdicts;
    if (c->report) {
      info.report = c->report;
      info.reported_at = c->reported_at;
      info.report_age = std::max(Duration(0), Now() - c->reported_mono);
    }
    out.push_back(std::move(info));
  }
  return out;
}

// Applies one verified message's items to a connection, building the reply in the server's
// shared builder. Stops at the first protocol error; the caller then closes the connection.
class ChannelServer::Dispatcher final : public ItemVisitor {
 public:
  Dispatcher(ChannelServer& server, Connection& conn) : s_(server), c_(conn) {}

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  bool close_after_reply() const { return close_after_reply_; }
  // Verdicts in the reply being built; the caller observes their latency when it sends it.
  uint64_t TakeVerdictsInReply() { return std::exchange(verdicts_in_reply_, 0); }
  // A message of reports only is bookkeeping, not work: it must not keep an idle daemon alive.
  // (index_ counts the items handled: every item of such a message was a report.)
  bool only_reports() const { return reports_ > 0 && reports_ == index_; }

  void OnHello(const Hello& hello) override {
    if (!First() || c_.state != Connection::State::kAwaitHello) return Fail("unexpected Hello");
    Status version = CheckPeerVersion(hello.major, hello.minor);
    if (!version) {
      ++s_.counters_.version_refused;
      s_.reply_.AddRefused(version.error().message);
      close_after_reply_ = true;
      TG_LOG_WARNING("refused %s (uid %u pid %d): %s", RoleName(hello.role), c_.peer.uid,
                     c_.peer.pid, version.error().message.c_str());
      return;
    }
    c_.state = Connection::State::kReady;
    c_.role = hello.role;
    c_.minor = hello.minor;
    ++s_.counters_.handshakes;
    sd_event_source_disable_unref(c_.hello_timer);
    c_.hello_timer = nullptr;
    // The packet path waits on filter connections: every other role is moved below them (and
    // below our timers and signals, which a busy filter must not starve either), so sd-event
    // dispatches a pending filter connection first and another peer's burst delays it by one
    // dispatch at most.
    if (hello.role != Role::kFilter) {
      sd_event_source_set_priority(c_.source, SD_EVENT_PRIORITY_IDLE);
    }
    s_.reply_.AddWelcome(
        Welcome{kProtocolMajor, kProtocolMinor, s_.options_.build, s_.options_.settings});
    TG_LOG_INFO("%s connected: uid %u pid %d exe %s, protocol %u.%u, build \"%s\"",
                RoleName(hello.role), c_.peer.uid, c_.peer.pid,
                c_.peer.exe_known ? c_.peer.exe_path.c_str() : "?", hello.major, hello.minor,
                hello.build.c_str());
  }

  void OnQuestion(const FlowQuestion& q) override {
    if (!Ready("FlowQuestion")) return;
    ++s_.counters_.questions;
    ++c_.questions;
    Verdict v = s_.analyzer_.Decide(q);
    v.id = q.id;  // the analyzer cannot answer a different question than it was asked
    // Only a filter of 1.2 or later knows the destination scope (and reports what it decides
    // from it), and only one of 1.3 or later drops a verdict that used names when DNS renames
    // its address; to anyone else such a verdict is an ordinary one.
    if (v.cache == CacheScope::kDestination &&
        (c_.role != Role::kFilter || c_.minor < kDestinationCacheMinor ||
         (v.cache_until_dns && c_.minor < kNamedDestinationCacheMinor))) {
      v.cache = CacheScope::kFlow;
      v.cache_ttl_ms = 0;
      v.cache_until_dns = false;
    }
    if (LogEnabled(LogLevel::kDebug)) {
      TG_LOG_DEBUG("%s %s:%u -> %s:%u uid %u: %s", ProtocolName(q.tuple.protocol).c_str(),
                   q.tuple.src.ToString().c_str(), q.tuple.src_port, q.tuple.dst.ToString().c_str(),
                   q.tuple.dst_port, q.uid, v.reason.c_str());
    }
    if (!s_.reply_.WouldFit(MessageBuilder::EstimateVerdictBytes(v)) && !FlushReply()) return;
    s_.reply_.AddVerdict(v);
    ++s_.counters_.verdicts;
    ++c_.verdicts;
    ++verdicts_in_reply_;
  }

  void OnDnsObservation(std::span<const uint8_t> reply) override {
    if (!Ready("DnsObservation")) return;
    // Names come only from replies a filter saw on the wire: it is also the filter that drops
    // the verdicts it kept for an address a reply names (cache_until_dns), which holds only if
    // nobody else can teach the daemon a name.
    if (c_.role != Role::kFilter) {
      ++s_.counters_.dns_ignored;
      return;
    }
    ++s_.counters_.dns_observations;
    s_.analyzer_.ObserveDns(reply.data(), reply.size());
  }

  void OnPing(uint64_t token) override {
    if (!Ready("Ping")) return;
    if (!s_.reply_.WouldFit(32) && !FlushReply()) return;
    s_.reply_.AddPong(token);
  }
  void OnPong(uint64_t) override { (void)Ready("Pong"); }

  void OnFilterReport(const FilterReport& report) override {
    if (!Ready("FilterReport")) return;
    ++reports_;
    // Only a filter speaks for a filter: a probe or agent cannot put numbers in its place.
    if (c_.role != Role::kFilter) {
      ++s_.counters_.reports_ignored;
      return;
    }
    ++s_.counters_.filter_reports;
    c_.report = report;
    c_.reported_at = std::chrono::system_clock::now();
    c_.reported_mono = s_.Now();
  }

  void OnDecided(const FlowQuestion& q, Action action) override {
    if (!Ready("Decided")) return;
    if (c_.role != Role::kFilter) {
      ++s_.counters_.reports_ignored;
      return;
    }
    ++s_.counters_.decided_by_filters;
    s_.analyzer_.ObserveDecided(q, action);
  }

  // Items only the daemon sends.
  void OnWelcome(const Welcome&) override { Fail("a client may not send Welcome"); }
  void OnRefused(const Refused&) override { Fail("a client may not send Refused"); }
  void OnGoodbye(const Goodbye&) override { Fail("a client may not send Goodbye"); }
  void OnVerdict(const Verdict&) override { Fail("a client may not send Verdict"); }
  void OnForget(const ForgetSelector&) override { Fail("a client may not send Forget"); }

 private:
  bool First() { return index_++ == 0; }
  bool Ready(const char* what) {
    ++index_;
    if (failed()) return false;
    if (c_.state != Connection::State::kReady) {
      Fail(std::string(what) + " before the Hello handshake");
      return false;
    }
    return true;
  }
  void Fail(std::string why) {
    ++index_;
    if (error_.empty()) error_ = std::move(why);
  }
  bool FlushReply() {
    bool ok = s_.Send(c_, s_.reply_.Finish());
    s_.ObserveLatency(TakeVerdictsInReply());
    s_.reply_.Reset();
    if (!ok) Fail("send failed");
    return ok;
  }

  ChannelServer& s_;
  Connection& c_;
  size_t index_ = 0;
  size_t reports_ = 0;
  std::string error_;
  bool close_after_reply_ = false;
  uint64_t verdicts_in_reply_ = 0;
};

ChannelServer::ChannelServer(sd_event* loop, UniqueFd listen_fd, PeerIdentity& identity,
                             analysis::Analyzer& analyzer, ServerOptions options)
    : loop_(sd_event_ref(loop)),
      listen_fd_(std::move(listen_fd)),
      identity_(identity),
      analyzer_(analyzer),
      options_(std::move(options)),
      reader_(kReadBatch, kMaxMessageBytes) {
  for (const auto& e : options_.policy.exe_allowlist) want_exe_hash_ |= !e.sha256.empty();
  group_only_policy_ = options_.policy;
  group_only_policy_.exe_allowlist.clear();
}

ChannelServer::~ChannelServer() {
  for (auto& [fd, c] : connections_) {
    sd_event_source_disable_unref(c->source);
    sd_event_source_disable_unref(c->hello_timer);
  }
  connections_.clear();
  sd_event_source_disable_unref(listen_source_);
  sd_event_source_disable_unref(idle_source_);
  sd_event_unref(loop_);
}

MonoTime ChannelServer::Now() const { return LoopNow(loop_); }

void ChannelServer::ObserveLatency(uint64_t verdicts) {
  if (verdicts == 0) return;
  // From this loop iteration's wake-up (when the question became readable) to now.
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const MonoTime sent{std::chrono::duration_cast<Duration>(std::chrono::seconds(ts.tv_sec) +
                                                           std::chrono::nanoseconds(ts.tv_nsec))};
  latency_.Observe(std::max(Duration(0), sent - Now()), verdicts);
}

Status ChannelServer::Start() {
  int r = sd_event_add_io(loop_, &listen_source_, listen_fd_.get(), EPOLLIN, OnListenReady, this);
  if (r < 0) return Unexpected(Error::System("watch analysis socket", -r));
  last_activity_ = Now();
  if (options_.idle_exit.count() > 0) ArmIdleTimer();
  return {};
}

int ChannelServer::OnListenReady(sd_event_source*, int, uint32_t, void* self) {
  static_cast<ChannelServer*>(self)->AcceptAll();
  return 0;
}

void ChannelServer::AcceptAll() {
  for (;;) {
    int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        // EMFILE and friends: log, and let the next wake-up try again.
        TG_LOG_ERROR("accept on analysis socket: %s", std::strerror(errno));
      }
      return;
    }
    last_activity_ = Now();
    Admit(UniqueFd(fd));
  }
}

void ChannelServer::Admit(UniqueFd fd) {
  ++counters_.accepted;
  if (connections_.size() >= options_.max_connections) {
    ++counters_.connections_over_limit;
    if (over_limit_logs_.Take(Now())) {
      TG_LOG_WARNING("refused a connection: %zu connections open, the limit (%zu counted so far)",
                     connections_.size(), static_cast<size_t>(counters_.connections_over_limit));
    }
    reply_.Reset();
    reply_.AddRefused("too many connections to tollgated (limit " +
                      std::to_string(options_.max_connections) + ")");
    auto bytes = reply_.Finish();
    (void)::send(fd.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    reply_.Reset();
    DiscardQueued(fd.get());
    return;
  }
  // Hashing reads the peer's executable, which a peer could place on a file system it controls
  // and make slow: only peers that pass the group rule get that far.
  Expected<PeerFacts> facts = identity_.Identify(fd.get(), /*want_exe_hash=*/false);
  PeerDecision decision;
  if (!facts) {
    decision.reason = "cannot identify peer: " + facts.error().message;
  } else {
    decision = DecideClient(group_only_policy_, *facts);
    if (decision.allowed && !options_.policy.exe_allowlist.empty()) {
      if (want_exe_hash_) facts = identity_.Identify(fd.get(), /*want_exe_hash=*/true);
      decision = facts ? DecideClient(options_.policy, *facts)
                       : PeerDecision{false, "cannot identify peer: " + facts.error().message};
    }
  }
  if (!decision.allowed) {
    ++counters_.peers_refused;
    if (refusal_logs_.Take(Now())) {
      TG_LOG_WARNING("refused peer uid %u pid %d exe %s: %s", facts ? facts->uid : kUnknownId,
                     facts ? facts->pid : 0,
                     facts && facts->exe_known ? facts->exe_path.c_str() : "?",
                     decision.reason.c_str());
    }
    reply_.Reset();
    reply_.AddRefused(decision.reason);
    auto bytes = reply_.Finish();
    (void)::send(fd.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    reply_.Reset();
    DiscardQueued(fd.get());
    return;
  }

  auto conn = std::make_unique<Connection>();
  conn->server = this;
  conn->peer = std::move(*facts);
  conn->fd = std::move(fd);
  int raw = conn->fd.get();
  int r = sd_event_add_io(loop_, &conn->source, raw, EPOLLIN, OnConnectionReady, conn.get());
  if (r < 0) {
    TG_LOG_ERROR("watch connection: %s", std::strerror(-r));
    return;
  }
  r = sd_event_add_time_relative(
      loop_, &conn->hello_timer, CLOCK_MONOTONIC,
      static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(options_.handshake_timeout)
              .count()),
      100'000, OnHelloTimeout, conn.get());
  if (r < 0) {
    TG_LOG_ERROR("arm handshake timer: %s", std::strerror(-r));
    sd_event_source_disable_unref(conn->source);
    return;
  }
  connections_.emplace(raw, std::move(conn));
}

int ChannelServer::OnConnectionReady(sd_event_source*, int, uint32_t revents, void* userdata) {
  auto* c = static_cast<Connection*>(userdata);
  ChannelServer* self = c->server;
  if (revents & EPOLLOUT) {
    const int fd = c->fd.get();  // read before FlushOutbox: closing destroys *c
    self->FlushOutbox(*c);
    if (!self->connections_.contains(fd) || !c->outbox.empty()) return 0;
  }
  if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) self->ReadMessages(*c);
  return 0;
}

int ChannelServer::OnHelloTimeout(sd_event_source*, uint64_t, void* userdata) {
  auto* c = static_cast<Connection*>(userdata);
  ChannelServer* self = c->server;
  ++self->counters_.handshake_timeouts;
  TG_LOG_INFO("closing uid %u pid %d: no Hello within %lld ms", c->peer.uid, c->peer.pid,
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         self->options_.handshake_timeout)
                                         .count()));
  self->Close(*c, nullptr);
  return 0;
}

void ChannelServer::ReadMessages(Connection& c) {
  const int rounds =
      c.role == Role::kFilter ? std::max(1, options_.max_messages_per_wakeup / kReadBatch) : 1;
  for (int round = 0; round < rounds; ++round) {
    if (!c.outbox.empty()) return;  // backpressure: no new work until the peer takes its replies
    // Before its Hello a peer's role (and so its priority) is unknown: one message, the Hello,
    // then the next read happens at the priority its role gets.
    const bool greeting = c.state == Connection::State::kAwaitHello;
    DatagramReader::Result r = reader_.Read(c.fd.get(), greeting ? 1 : kReadBatch);
    for (size_t i = 0; i < r.count; ++i) {
      if (!HandleMessage(c, i)) return;  // closed
    }
    if (r.eof) return Close(c, c.state == Connection::State::kReady ? "disconnected" : nullptr);
    // A peer that closes with our replies unread makes the read fail with ECONNRESET: that is a
    // disconnect (logged at debug, as churn is normal for probes), not an error worth a line.
    if (r.error == ECONNRESET) {
      TG_LOG_DEBUG("%s (uid %u pid %d): disconnected with replies unread", RoleName(c.role),
                   c.peer.uid, c.peer.pid);
      return Close(c, nullptr);
    }
    if (r.error != 0) return Close(c, "receive error");
    if (greeting || r.count < kReadBatch) return;  // re-dispatched at its priority, or drained
  }
}

bool ChannelServer::HandleMessage(Connection& c, size_t index) {
  const MonoTime previous_activity = last_activity_;
  last_activity_ = Now();
  if (reader_.truncated(index)) {
    ++counters_.oversize_messages;
    Close(c, "oversize message");
    return false;
  }
  reply_.Reset();
  Dispatcher dispatcher(*this, c);
  Status decoded = DecodeMessage(reader_.message(index), dispatcher);
  if (!decoded) {
    ++(decoded.error().code == ErrorCode::kTooLarge ? counters_.oversize_messages
                                                    : counters_.malformed_messages);
    TG_LOG_DEBUG("closing uid %u pid %d: %s", c.peer.uid, c.peer.pid,
                 decoded.error().message.c_str());
    Close(c, "malformed message");
    return false;
  }
  if (dispatcher.failed()) {
    if (dispatcher.error() != "send failed") {
      ++counters_.protocol_errors;
      TG_LOG_DEBUG("closing uid %u pid %d: protocol error: %s", c.peer.uid, c.peer.pid,
                   dispatcher.error().c_str());
      Close(c, "protocol error");
    }
    return false;  // Send already closed it
  }
  if (dispatcher.only_reports()) last_activity_ = previous_activity;
  if (!reply_.empty()) {
    bool ok = Send(c, reply_.Finish());
    ObserveLatency(dispatcher.TakeVerdictsInReply());
    reply_.Reset();
    if (!ok) return false;
  }
  if (dispatcher.close_after_reply()) {
    Close(c, nullptr);
    return false;
  }
  return true;
}

bool ChannelServer::Send(Connection& c, std::span<const uint8_t> bytes) {
  if (c.outbox.empty()) {
    for (;;) {
      ssize_t n = ::send(c.fd.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0) return true;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      ++counters_.send_errors;
      Close(c, "send error");
      return false;
    }
  }
  // The peer's receive queue is full: keep the reply, stop reading until it is taken.
  c.outbox.emplace_back(bytes.begin(), bytes.end());
  UpdateEvents(c);
  return true;
}

void ChannelServer::FlushOutbox(Connection& c) {
  while (!c.outbox.empty()) {
    const auto& m = c.outbox.front();
    ssize_t n = ::send(c.fd.get(), m.data(), m.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      ++counters_.send_errors;
      return Close(c, "send error");
    }
    c.outbox.pop_front();
  }
  UpdateEvents(c);
}

void ChannelServer::UpdateEvents(Connection& c) {
  uint32_t want = c.outbox.empty() ? EPOLLIN : EPOLLOUT;
  if (want != c.events) {
    sd_event_source_set_io_events(c.source, want);
    c.events = want;
  }
}

void ChannelServer::Close(Connection& c, const char* why) {
  if (why != nullptr) {
    TG_LOG_INFO("%s (uid %u pid %d): %s", RoleName(c.role), c.peer.uid, c.peer.pid, why);
  }
  ++counters_.connections_closed;
  DiscardQueued(c.fd.get());
  sd_event_source_disable_unref(c.source);
  c.source = nullptr;
  sd_event_source_disable_unref(c.hello_timer);
  c.hello_timer = nullptr;
  connections_.erase(c.fd.get());  // destroys c and closes its socket
}

void ChannelServer::ForgetAll() {
  std::vector<Connection*> filters;
  for (auto& [fd, c] : connections_) {
    if (c->role == Role::kFilter && c->minor >= kDestinationCacheMinor) filters.push_back(c.get());
  }
  for (Connection* c : filters) {
    reply_.Reset();
    ForgetSelector all;
    all.all = true;
    reply_.AddForget(all);
    ++counters_.forgets_sent;
    Send(*c, reply_.Finish());  // may close c; nothing else is touched after
    reply_.Reset();
  }
}

bool ChannelServer::ListenBacklogHasClient() const {
  pollfd p{listen_fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0;
}

void ChannelServer::ArmIdleTimer() {
  ArmOneShot(loop_, &idle_source_, last_activity_ + options_.idle_exit, 100'000, OnIdleTimer, this);
}

int ChannelServer::OnIdleTimer(sd_event_source*, uint64_t, void* userdata) {
  auto* self = static_cast<ChannelServer*>(userdata);
  if (self->shutting_down_) return 0;
  if (self->ListenBacklogHasClient() || (self->busy_ && self->busy_())) {
    self->last_activity_ = self->Now();
  }
  if (self->Now() - self->last_activity_ < self->options_.idle_exit) {
    self->ArmIdleTimer();
    return 0;
  }
  TG_LOG_INFO(
      "idle for %llds: exiting; the next connection starts tollgated again",
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::seconds>(self->options_.idle_exit).count()));
  self->Shutdown("idle");
  if (self->on_idle_) self->on_idle_();
  return 0;
}

void ChannelServer::Shutdown(std::string_view reason) {
  if (shutting_down_) return;
  shutting_down_ = true;
  // Stop accepting first: a client that connects from now on waits in the backlog, which the
  // service manager hands to our successor.
  sd_event_source_disable_unref(listen_source_);
  listen_source_ = nullptr;
  std::vector<Connection*> all;
  all.reserve(connections_.size());
  for (auto& [fd, c] : connections_) all.push_back(c.get());
  for (Connection* c : all) {
    int fd = c->fd.get();
    // Finish what was already sent to us, so nothing accepted is dropped.
    if (c->outbox.empty()) ReadMessages(*c);
    if (!connections_.contains(fd)) continue;
    FlushOutbox(*c);
    if (!connections_.contains(fd)) continue;
    reply_.Reset();
    reply_.AddGoodbye(reason);
    auto bytes = reply_.Finish();
    (void)::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    reply_.Reset();
    Close(*c, nullptr);
  }
}

}  // namespace tollgate::ipc
