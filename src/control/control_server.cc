#include "control/control_server.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/log.h"

namespace tollgate::control {
namespace {

// Best effort for a connection we are about to close without registering it: one error reply,
// then read what the peer already sent, so the close does not reset the connection and eat it.
void SayAndDrop(int fd, const Reply& reply) {
  std::string bytes = EncodeReply(reply);
  (void)::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  char sink[4096];
  for (int i = 0; i < 16; ++i) {
    if (::recv(fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0) return;
  }
}

constexpr size_t kReadChunk = 16 * 1024;

}  // namespace

struct ControlServer::Connection {
  ControlServer* server = nullptr;
  UniqueFd fd;
  sd_event_source* source = nullptr;
  ipc::PeerFacts peer;
  MessageFramer framer;
  // Replies not yet written; the front may be partly written (front_sent bytes).
  std::deque<std::shared_ptr<const std::string>> out;
  size_t front_sent = 0;
  bool subscribed = false;
  std::optional<std::string> subscribe_action;
  bool close_when_flushed = false;  // after RequestTooLarge
  uint32_t events = 0;

  explicit Connection(size_t max_request) : framer(max_request) {}
};

ControlServer::ControlServer(sd_event* loop, UniqueFd listen_fd, ipc::PeerIdentity& identity,
                             ControlBackend& backend, ControlServerOptions options)
    : loop_(sd_event_ref(loop)),
      listen_fd_(std::move(listen_fd)),
      identity_(identity),
      backend_(backend),
      options_(std::move(options)) {
  // The analysis channel's executable allowlist is about filters, not operators.
  options_.policy.exe_allowlist.clear();
}

ControlServer::~ControlServer() {
  for (auto& [fd, c] : connections_) sd_event_source_disable_unref(c->source);
  connections_.clear();
  sd_event_source_disable_unref(listen_source_);
  sd_event_unref(loop_);
}

Status ControlServer::Start() {
  int r = sd_event_add_io(loop_, &listen_source_, listen_fd_.get(), EPOLLIN, OnListenReady, this);
  if (r < 0) return Unexpected(Error::System("watch control socket", -r));
  return {};
}

void ControlServer::Shutdown() {
  sd_event_source_disable_unref(listen_source_);
  listen_source_ = nullptr;
  std::vector<Connection*> all;
  for (auto& [fd, c] : connections_) all.push_back(c.get());
  for (Connection* c : all) {
    Flush(*c);  // what is already answered still goes out if the socket takes it
    if (connections_.contains(c->fd.get())) Close(*c);
  }
}

bool ControlServer::busy() const {
  if (!connections_.empty()) return true;
  if (listen_source_ == nullptr) return false;
  pollfd p{listen_fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0;
}

int ControlServer::OnListenReady(sd_event_source*, int, uint32_t, void* self) {
  static_cast<ControlServer*>(self)->AcceptAll();
  return 0;
}

void ControlServer::AcceptAll() {
  for (;;) {
    int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        TG_LOG_ERROR("accept on control socket: %s", std::strerror(errno));
      }
      return;
    }
    Admit(UniqueFd(fd));
  }
}

void ControlServer::Admit(UniqueFd fd) {
  ++counters_.accepted;
  Expected<ipc::PeerFacts> facts = identity_.Identify(fd.get(), /*want_exe_hash=*/false);
  ipc::PeerDecision decision;
  if (!facts) {
    decision.reason = "cannot identify peer: " + facts.error().message;
  } else {
    decision = ipc::DecideClient(options_.policy, *facts);
  }
  if (!decision.allowed) {
    ++counters_.peers_refused;
    ++counters_.errors;
    if (refusal_logs_++ < 20) {
      TG_LOG_WARNING("control: refused peer uid %u pid %d: %s", facts ? facts->uid : kUnknownId,
                     facts ? facts->pid : 0, decision.reason.c_str());
    }
    SayAndDrop(fd.get(), Reply::Error(errors::kNotAuthorized, {{"reason", decision.reason}}));
    return;
  }
  if (connections_.size() >= options_.max_connections) {
    ++counters_.connections_over_limit;
    ++counters_.errors;
    SayAndDrop(fd.get(),
               Reply::Error(errors::kTooManyConnections, {{"limit", options_.max_connections}}));
    return;
  }
  auto conn = std::make_unique<Connection>(options_.max_request_bytes);
  conn->server = this;
  conn->peer = std::move(*facts);
  conn->fd = std::move(fd);
  conn->events = EPOLLIN;
  int raw = conn->fd.get();
  int r = sd_event_add_io(loop_, &conn->source, raw, EPOLLIN, OnConnectionReady, conn.get());
  if (r < 0) {
    TG_LOG_ERROR("control: watch connection: %s", std::strerror(-r));
    return;
  }
  TG_LOG_DEBUG("control: client uid %u pid %d connected", conn->peer.uid, conn->peer.pid);
  connections_.emplace(raw, std::move(conn));
}

int ControlServer::OnConnectionReady(sd_event_source*, int, uint32_t revents, void* userdata) {
  auto* c = static_cast<Connection*>(userdata);
  ControlServer* self = c->server;
  const int fd = c->fd.get();  // *c may be destroyed by any step below
  if (revents & EPOLLOUT) {
    self->Flush(*c);
    if (!self->connections_.contains(fd)) return 0;
    // Calls the client sent ahead while we wrote the last reply are already buffered.
    if (c->out.empty()) self->ServeRequests(*c);
    if (!self->connections_.contains(fd)) return 0;
  }
  if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) self->Read(*c);
  return 0;
}

void ControlServer::Read(Connection& c) {
  const int fd = c.fd.get();
  char chunk[kReadChunk];
  // A few chunks per wake-up, so one chatty client cannot starve the others.
  for (int round = 0; round < 4; ++round) {
    // One call in flight: while a reply waits to be written, requests stay in the socket.
    if (!c.subscribed && (!c.out.empty() || c.close_when_flushed)) break;
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
    if (n == 0) return Close(c);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return Close(c);
    }
    // A subscriber's connection is one-way from here on (varlink: no new call while a "more"
    // call runs); we keep reading only to notice the hang-up.
    if (c.subscribed) continue;
    c.framer.Append(std::string_view(chunk, static_cast<size_t>(n)));
    ServeRequests(c);
    if (!connections_.contains(fd)) return;
  }
  if (connections_.contains(fd)) UpdateEvents(c);
}

void ControlServer::ServeRequests(Connection& c) {
  const int fd = c.fd.get();
  std::string text;
  while (!c.subscribed && c.out.empty() && !c.close_when_flushed) {
    MessageFramer::Result r = c.framer.Next(&text);
    if (r == MessageFramer::Result::kNone) return;
    if (r == MessageFramer::Result::kTooLarge) {
      ++counters_.oversize_requests;
      c.close_when_flushed = true;
      Queue(c, Reply::Error(errors::kRequestTooLarge, {{"limit", options_.max_request_bytes}}));
      return;
    }
    Handle(c, text);
    if (!connections_.contains(fd)) return;
  }
}

void ControlServer::Handle(Connection& c, const std::string& text) {
  ++counters_.calls;
  Reply error;
  std::optional<Call> call = ParseCall(text, &error);
  if (!call) {
    ++counters_.invalid_requests;
    Queue(c, error);
    return;
  }
  if (call->method == kSubscribeMethod) {
    std::optional<SubscribeRequest> request = CheckSubscribe(*call, &error);
    if (!request) {
      Queue(c, error);
      return;
    }
    c.subscribed = true;
    c.subscribe_action = std::move(request->action);
    ++subscribers_;
    TG_LOG_DEBUG("control: uid %u pid %d subscribed", c.peer.uid, c.peer.pid);
    return;
  }
  Reply reply = Dispatch(*call, backend_);
  if (call->oneway) {
    if (!reply.ok()) ++counters_.errors;
    return;
  }
  Queue(c, reply);
}

void ControlServer::Queue(Connection& c, const Reply& reply) {
  if (!reply.ok()) ++counters_.errors;
  c.out.push_back(std::make_shared<const std::string>(EncodeReply(reply)));
  Flush(c);
}

void ControlServer::Publish(const analysis::DecisionRecord& record) {
  if (subscribers_ == 0) return;
  std::shared_ptr<const std::string> encoded;
  const char* action = ActionName(record.verdict.action);
  std::vector<Connection*> too_slow;
  for (auto& [fd, c] : connections_) {
    if (!c->subscribed) continue;
    if (c->subscribe_action && *c->subscribe_action != action) continue;
    if (c->out.size() >= options_.subscriber_queue_limit) {
      too_slow.push_back(c.get());
      continue;
    }
    if (!encoded) {
      Reply reply = Reply::Ok({{"decision", DecisionJson(ToFlowRecord(record))}});
      reply.continues = true;
      encoded = std::make_shared<const std::string>(EncodeReply(reply));
    }
    c->out.push_back(encoded);
    ++counters_.decisions_streamed;
    // Written when the loop next sees the socket writable, never here on the verdict path.
    UpdateEvents(*c);
  }
  for (Connection* c : too_slow) {
    ++counters_.subscribers_dropped;
    ++counters_.errors;
    TG_LOG_NOTICE("control: dropping subscriber uid %u pid %d: more than %zu decisions behind",
                  c->peer.uid, c->peer.pid, options_.subscriber_queue_limit);
    // It is not reading, so this last word may not arrive; the close tells it anyway.
    std::string bytes = EncodeReply(Reply::Error(
        errors::kSubscriberTooSlow, {{"queue_limit", options_.subscriber_queue_limit}}));
    (void)::send(c->fd.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    Close(*c);
  }
}

void ControlServer::Flush(Connection& c) {
  while (!c.out.empty()) {
    const std::string& front = *c.out.front();
    ssize_t n = ::send(c.fd.get(), front.data() + c.front_sent, front.size() - c.front_sent,
                       MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      ++counters_.send_errors;
      return Close(c);
    }
    c.front_sent += static_cast<size_t>(n);
    if (c.front_sent == front.size()) {
      c.out.pop_front();
      c.front_sent = 0;
    }
  }
  if (c.out.empty() && c.close_when_flushed) return Close(c);
  UpdateEvents(c);
}

void ControlServer::UpdateEvents(Connection& c) {
  uint32_t want = 0;
  if (!c.out.empty()) want |= EPOLLOUT;
  // Read when a new call may start, and always from a subscriber (to notice its hang-up).
  if (c.subscribed || (c.out.empty() && !c.close_when_flushed)) want |= EPOLLIN;
  if (want != c.events) {
    sd_event_source_set_io_events(c.source, want);
    c.events = want;
  }
}

void ControlServer::Close(Connection& c) {
  ++counters_.connections_closed;
  if (c.subscribed) --subscribers_;
  sd_event_source_disable_unref(c.source);
  c.source = nullptr;
  connections_.erase(c.fd.get());  // destroys c and closes its socket
}

}  // namespace tollgate::control
