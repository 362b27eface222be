// The channel client and server together over real SEQPACKET sockets, in one process and one
// sd-event loop. Peer identity is faked here (the Linux kernel facts are tested in
// platform/linux); everything else is the production code.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include "ipc/channel_client.h"
#include "ipc/channel_server.h"

namespace tollgate::ipc {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

class FakeIdentity final : public PeerIdentity {
 public:
  PeerFacts facts;
  Expected<PeerFacts> Identify(int, bool) override { return facts; }
};

class PortAnalyzer final : public analysis::Analyzer {
 public:
  Verdict Decide(const FlowQuestion& q) override {
    ++decided;
    if (q.tuple.dst_port == 23 && decided_before_first_23 < 0)
      decided_before_first_23 = decided - 1;
    Verdict v;
    v.action = q.tuple.dst_port == 23 ? Action::kDeny : Action::kAllow;
    v.cache = scope;
    v.cache_ttl_ms = scope == CacheScope::kDestination ? 1000 : 0;
    v.cache_until_dns = scope == CacheScope::kDestination && until_dns;
    v.reason = v.action == Action::kDeny ? "deny: rule \"no-telnet\"" : "allow: rule \"rest\"";
    return v;
  }
  void ObserveDns(const uint8_t*, size_t size) override { dns_bytes += size; }
  int decided = 0;
  int decided_before_first_23 = -1;      // questions decided before the first one for port 23
  CacheScope scope = CacheScope::kFlow;  // what every verdict says
  bool until_dns = false;                // with kDestination: the decision used names
  std::vector<std::pair<FlowQuestion, Action>> reused;
  void ObserveDecided(const FlowQuestion& q, Action a) override { reused.emplace_back(q, a); }
  size_t dns_bytes = 0;
};

FlowQuestion Question(uint16_t port) {
  FlowQuestion q;
  q.tuple.src = IpAddress::V4(127, 0, 0, 1);
  q.tuple.dst = IpAddress::V4(127, 0, 0, 2);
  q.tuple.src_port = 50000;
  q.tuple.dst_port = port;
  q.tuple.protocol = ipproto::kTcp;
  return q;
}

struct Outcome {
  Action action;
  DecisionSource source;
  std::string reason;
};

class ChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sd_event_new(&loop_), 0);
    dir_ = std::filesystem::temp_directory_path() /
           ("tg-channel-" + std::to_string(getpid()) + "-" + std::to_string(++counter_));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "analysis.sock").string();
    listen_ = Listen();
    daemon_identity_.facts.uid = 0;
    client_identity_.facts.uid = 0;
    policy_.group_gid = 4242;
    policy_.group_name = "tollgate";
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
    sd_event_unref(loop_);
    std::filesystem::remove_all(dir_);
  }

  UniqueFd Listen() {
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(fd.get(), 128), 0);
    return fd;
  }

  void StartServer(ServerOptions opts = {}) {
    opts.policy = policy_;
    server_ = std::make_unique<ChannelServer>(loop_, UniqueFd(::dup(listen_.get())),
                                              client_identity_, analyzer_, opts);
    ASSERT_TRUE(server_->Start());
  }

  void StartClient(ClientOptions opts = {}) {
    opts.socket_path = path_;
    client_ =
        std::make_unique<ChannelClient>(loop_, daemon_identity_, opts, [this](const Decision& d) {
          auto [it, inserted] =
              outcomes_.emplace(d.id, Outcome{d.action, d.source, std::string(d.reason)});
          if (!inserted) ++duplicates_;
        });
    client_->Start();
  }

  // Runs the loop until pred holds; the bound only stops a broken test from hanging.
  bool RunUntil(const std::function<bool()>& pred, milliseconds bound = milliseconds(10000)) {
    auto end = std::chrono::steady_clock::now() + bound;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > end) return false;
      sd_event_run(loop_, 10'000);
    }
    return true;
  }
  void RunFor(milliseconds d) {
    auto end = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < end) sd_event_run(loop_, 5'000);
  }

  UniqueFd RawConnect() {
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
  }

  // Connects, says Hello, then floods questions without ever reading a verdict, until the
  // server stops taking them (50 refused sends) or 5,000 rounds pass. Returns the refused sends.
  int FloodWithoutReading(UniqueFd& greedy) {
    greedy = RawConnect();
    MessageBuilder b;
    b.AddHello(Hello{kProtocolMajor, kProtocolMinor, Role::kProbe, "greedy"});
    auto h = b.Finish();
    if (::send(greedy.get(), h.data(), h.size(), 0) <= 0) return -1;
    ::fcntl(greedy.get(), F_SETFL, O_NONBLOCK);
    int refused_sends = 0;
    for (int round = 0; round < 5000 && refused_sends < 50; ++round) {
      for (int i = 0; i < 64; ++i) b.AddQuestion(Question(80));
      auto m = b.Finish();
      if (::send(greedy.get(), m.data(), m.size(), MSG_DONTWAIT) < 0) ++refused_sends;
      sd_event_run(loop_, 0);
    }
    return refused_sends;
  }

  static inline int counter_ = 0;
  sd_event* loop_ = nullptr;
  std::filesystem::path dir_;
  std::string path_;
  UniqueFd listen_;
  FakeIdentity daemon_identity_;  // what the client learns about the daemon
  FakeIdentity client_identity_;  // what the server learns about clients
  PeerPolicy policy_;
  PortAnalyzer analyzer_;
  std::unique_ptr<ChannelServer> server_;
  std::unique_ptr<ChannelClient> client_;
  std::map<uint64_t, Outcome> outcomes_;
  int duplicates_ = 0;
};

TEST_F(ChannelTest, AnswersTenThousandQuestionsEachExactlyOnce) {
  StartServer();
  StartClient();
  std::map<uint64_t, uint16_t> asked;
  for (int i = 0; i < 10000; ++i) {
    uint16_t port = (i % 10 == 0) ? 23 : static_cast<uint16_t>(1000 + i % 5000);
    asked[client_->Ask(Question(port))] = port;
    if (i % 500 == 0) RunFor(milliseconds(1));
  }
  ASSERT_TRUE(RunUntil([&] { return outcomes_.size() == asked.size(); }));
  EXPECT_EQ(duplicates_, 0);
  for (const auto& [id, port] : asked) {
    const Outcome& o = outcomes_.at(id);
    EXPECT_EQ(o.source, DecisionSource::kDaemon) << id;
    EXPECT_EQ(o.action, port == 23 ? Action::kDeny : Action::kAllow) << id;
  }
  EXPECT_EQ(client_->status().answered, 10000u);
  EXPECT_EQ(client_->status().fallbacks(), 0u);
  EXPECT_EQ(server_->counters().questions, 10000u);
  EXPECT_EQ(server_->counters().handshakes, 1u);
  EXPECT_EQ(outcomes_.begin()->second.reason, "deny: rule \"no-telnet\"");
}

TEST_F(ChannelTest, QuestionsAskedBeforeWelcomeWaitAndAreAnswered) {
  StartClient();  // connects into the backlog: no daemon accepting yet, like socket activation
  EXPECT_EQ(client_->status().state, ChannelState::kConnecting);
  uint64_t id = client_->Ask(Question(80));
  RunFor(milliseconds(20));
  EXPECT_TRUE(outcomes_.empty()) << "must wait for its deadline, not fall back at once";
  StartServer();
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id); }));
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kDaemon);
  EXPECT_EQ(outcomes_.at(id).action, Action::kAllow);
}

TEST_F(ChannelTest, RefusedPeerGetsTheReasonAndFallback) {
  client_identity_.facts.uid = 1000;
  client_identity_.facts.gid = 1000;
  client_identity_.facts.groups_known = true;
  StartServer();
  ClientOptions opts;
  opts.fallback = FallbackPolicy::kFailClosed;
  StartClient(opts);
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kBackoff; }));
  EXPECT_THAT(client_->status().last_error, HasSubstr("daemon refused us"));
  EXPECT_THAT(client_->status().last_error, HasSubstr("tollgate"));
  EXPECT_EQ(server_->counters().peers_refused, 1u);
  EXPECT_EQ(server_->connection_count(), 0u);
  uint64_t id = client_->Ask(Question(80));
  ASSERT_TRUE(outcomes_.contains(id)) << "asked while the daemon is away: settled at once";
  EXPECT_EQ(outcomes_.at(id).action, Action::kDeny);
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kFallbackUnavailable);
}

TEST_F(ChannelTest, ClientRefusesAnImpostorDaemon) {
  daemon_identity_.facts.uid = 1234;
  StartServer();
  StartClient();
  EXPECT_EQ(client_->status().state, ChannelState::kBackoff);
  EXPECT_THAT(client_->status().last_error, HasSubstr("not our daemon"));
}

TEST_F(ChannelTest, DeadlinePassesThenLateVerdictIsIgnored) {
  // A "daemon" that welcomes us and then stalls: we answer by hand, too late.
  ClientOptions opts;
  opts.deadline = milliseconds(50);
  opts.fallback = FallbackPolicy::kFailClosed;
  StartClient(opts);
  UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn.valid());
  std::vector<uint8_t> buf(kMaxMessageBytes);
  ASSERT_GT(::recv(conn.get(), buf.data(), buf.size(), 0), 0);  // Hello
  MessageBuilder b;
  b.AddWelcome(Welcome{});
  auto w = b.Finish();
  ASSERT_GT(::send(conn.get(), w.data(), w.size(), 0), 0);
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  uint64_t id = client_->Ask(Question(80));
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id); }));
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kFallbackDeadline);
  EXPECT_EQ(outcomes_.at(id).action, Action::kDeny);
  b.AddVerdict(Verdict{id, Action::kAllow, 0, "too late", CacheScope::kFlow});
  auto v = b.Finish();
  ASSERT_GT(::send(conn.get(), v.data(), v.size(), 0), 0);
  ASSERT_TRUE(RunUntil([&] { return client_->status().late_verdicts == 1; }));
  EXPECT_EQ(outcomes_.at(id).action, Action::kDeny) << "the late verdict must not be applied";
  EXPECT_EQ(duplicates_, 0);
}

TEST_F(ChannelTest, LostConnectionResendsQuestionsToTheNextDaemon) {
  ClientOptions opts;
  opts.deadline = milliseconds(5000);
  StartClient(opts);
  // First daemon: takes the questions and dies without answering.
  UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  std::vector<uint8_t> buf(kMaxMessageBytes);
  ASSERT_GT(::recv(conn.get(), buf.data(), buf.size(), 0), 0);
  MessageBuilder b;
  b.AddWelcome(Welcome{});
  auto w = b.Finish();
  ASSERT_GT(::send(conn.get(), w.data(), w.size(), 0), 0);
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  std::vector<uint64_t> ids;
  for (int i = 0; i < 100; ++i) ids.push_back(client_->Ask(Question(23)));
  client_->Flush();
  ASSERT_GT(::recv(conn.get(), buf.data(), buf.size(), 0), 0);  // the questions, unanswered
  conn.Reset();
  // Second daemon: the real server on the same listening socket.
  StartServer();
  ASSERT_TRUE(RunUntil([&] { return outcomes_.size() == ids.size(); }));
  for (uint64_t id : ids) {
    EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kDaemon);
    EXPECT_EQ(outcomes_.at(id).action, Action::kDeny);
  }
  EXPECT_EQ(duplicates_, 0);
  EXPECT_EQ(client_->status().sessions, 2u);
  EXPECT_EQ(client_->status().disconnects, 1u);
}

TEST_F(ChannelTest, DaemonGoneForGoodGivesFallbackAndBackoff) {
  StartServer();
  ClientOptions opts;
  opts.fallback = FallbackPolicy::kFailOpen;
  StartClient(opts);
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  server_.reset();  // closes its connection
  listen_.Reset();
  std::filesystem::remove(path_);  // and nobody listens any more
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kBackoff; }));
  uint64_t id = client_->Ask(Question(23));
  ASSERT_TRUE(outcomes_.contains(id));
  EXPECT_EQ(outcomes_.at(id).action, Action::kAllow);
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kFallbackUnavailable);
  // Coming back: a new listener at the same path; the client finds it by itself.
  listen_ = Listen();
  StartServer();
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  uint64_t id2 = client_->Ask(Question(23));
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id2); }));
  EXPECT_EQ(outcomes_.at(id2).source, DecisionSource::kDaemon);
  EXPECT_EQ(outcomes_.at(id2).action, Action::kDeny);
}

TEST_F(ChannelTest, IdleDaemonSaysGoodbyeAndNextQuestionStartsASuccessor) {
  bool idled = false;
  ServerOptions opts;
  opts.idle_exit = milliseconds(100);
  StartServer(opts);
  server_->OnIdle([&] { idled = true; });
  StartClient();
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  ASSERT_TRUE(RunUntil([&] { return idled; }));
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kIdle; }));
  EXPECT_EQ(client_->status().disconnects, 1u);
  server_.reset();  // the process "exits"; the listening socket stays, as systemd keeps it
  uint64_t id = client_->Ask(Question(80));  // connects into the backlog
  EXPECT_EQ(client_->status().state, ChannelState::kConnecting);
  StartServer();  // the successor
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id); }));
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kDaemon);
}

TEST_F(ChannelTest, GarbageClosesOnlyThatConnection) {
  StartServer();
  StartClient();
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  UniqueFd bad = RawConnect();
  const char junk[] = "this is not a flatbuffer";
  ASSERT_GT(::send(bad.get(), junk, sizeof(junk), 0), 0);
  ASSERT_TRUE(RunUntil([&] { return server_->counters().malformed_messages == 1; }));
  char c;
  EXPECT_EQ(::recv(bad.get(), &c, 1, 0), 0) << "the daemon closed the bad connection";
  uint64_t id = client_->Ask(Question(23));
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id); }));
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kDaemon);
}

TEST_F(ChannelTest, OversizeMessageIsCountedAndClosed) {
  StartServer();
  UniqueFd bad = RawConnect();
  int sndbuf = 1 << 20;
  ASSERT_EQ(setsockopt(bad.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
  std::vector<uint8_t> big(kMaxMessageBytes + 100, 0x41);
  ASSERT_GT(::send(bad.get(), big.data(), big.size(), 0), 0);
  ASSERT_TRUE(RunUntil([&] { return server_->counters().oversize_messages == 1; }));
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(ChannelTest, QuestionBeforeHelloIsAProtocolError) {
  StartServer();
  UniqueFd bad = RawConnect();
  MessageBuilder b;
  b.AddQuestion(Question(80));
  auto m = b.Finish();
  ASSERT_GT(::send(bad.get(), m.data(), m.size(), 0), 0);
  ASSERT_TRUE(RunUntil([&] { return server_->counters().protocol_errors == 1; }));
  EXPECT_EQ(analyzer_.decided, 0) << "nothing is analysed for an unauthenticated session";
}

TEST_F(ChannelTest, ConnectionWithoutHelloIsClosedAtTheHandshakeTimeout) {
  ServerOptions opts;
  opts.handshake_timeout = milliseconds(100);
  StartServer(opts);
  UniqueFd silent = RawConnect();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 1; }));
  ASSERT_TRUE(RunUntil([&] { return server_->counters().handshake_timeouts == 1; }));
  EXPECT_EQ(server_->connection_count(), 0u);
  char byte = 0;
  EXPECT_EQ(::recv(silent.get(), &byte, 1, 0), 0) << "the daemon closed it";
  // A peer that does say Hello in time keeps its connection past the timeout.
  StartClient();
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  RunFor(milliseconds(250));
  EXPECT_EQ(client_->status().state, ChannelState::kConnected);
  EXPECT_EQ(server_->counters().handshake_timeouts, 1u);
}

// A probe's burst is queued first, then one filter question: the filter's connection is
// dispatched first, so its verdict comes back before the daemon has read more than one batch of
// the probe's backlog.
TEST_F(ChannelTest, FilterConnectionsAreServedBeforeOtherPeersBacklog) {
  StartServer();
  UniqueFd probe = RawConnect();
  MessageBuilder b;
  b.AddHello(Hello{kProtocolMajor, kProtocolMinor, Role::kProbe, "burst"});
  auto h = b.Finish();
  ASSERT_GT(::send(probe.get(), h.data(), h.size(), 0), 0);
  StartClient();  // role filter
  ASSERT_TRUE(RunUntil([&] {
    return client_->status().state == ChannelState::kConnected &&
           server_->counters().handshakes == 2;
  }));
  // Drain the probe's Welcome so its replies never block the daemon.
  std::vector<uint8_t> buf(kMaxMessageBytes);
  ASSERT_GT(::recv(probe.get(), buf.data(), buf.size(), 0), 0);
  const int before = analyzer_.decided;
  // As many messages of 64 questions as the socket takes without blocking (at least 20).
  int queued = 0;
  for (; queued < 1000; ++queued) {
    for (int i = 0; i < 64; ++i) b.AddQuestion(Question(80));
    auto msg = b.Finish();
    if (::send(probe.get(), msg.data(), msg.size(), MSG_DONTWAIT) < 0) break;
  }
  ASSERT_GE(queued, 20);
  uint64_t id = client_->Ask(Question(23));
  client_->Flush();
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id); }));
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kDaemon);
  // The filter's question is the first the daemon decides after the burst was queued: its
  // connection is dispatched before the probe's, which waits with `queued` messages.
  EXPECT_EQ(analyzer_.decided_before_first_23 - before, 0);
}

// A verdict reusable for its destination goes as such only to a filter of 1.2 or later; anyone
// else gets an ordinary one. Decided notices reach the analyzer from a filter only.
TEST_F(ChannelTest, DestinationScopeOnlyForFiltersThatKnowIt) {
  analyzer_.scope = CacheScope::kDestination;
  StartServer();
  struct : ItemVisitor {
    std::vector<Verdict> verdicts;
    void OnVerdict(const Verdict& v) override { verdicts.push_back(v); }
  } seen;
  auto ask = [&](Role role, uint16_t minor) {
    UniqueFd peer = RawConnect();
    MessageBuilder b;
    b.AddHello(Hello{kProtocolMajor, minor, role, "test"});
    b.AddQuestion(Question(80));
    b.AddDecided(Question(80), Action::kAllow);
    auto m = b.Finish();
    EXPECT_GT(::send(peer.get(), m.data(), m.size(), 0), 0);
    std::vector<uint8_t> buf(kMaxMessageBytes);
    seen.verdicts.clear();
    EXPECT_TRUE(RunUntil([&] {
      ssize_t n = ::recv(peer.get(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n > 0) {
        EXPECT_TRUE(DecodeMessage({buf.data(), static_cast<size_t>(n)}, seen));
      }
      return !seen.verdicts.empty();
    }));
    return seen.verdicts.empty() ? CacheScope::kNone : seen.verdicts[0].cache;
  };
  EXPECT_EQ(ask(Role::kFilter, kDestinationCacheMinor), CacheScope::kDestination);
  EXPECT_EQ(ask(Role::kFilter, kDestinationCacheMinor - 1), CacheScope::kFlow);
  EXPECT_EQ(ask(Role::kProbe, kDestinationCacheMinor), CacheScope::kFlow);
  EXPECT_EQ(analyzer_.reused.size(), 2u) << "both filters' notices; the probe's is ignored";
  EXPECT_EQ(server_->counters().decided_by_filters, 2u);
  // A decision that used names is reusable only by a filter that drops it on a DNS reply (1.3).
  analyzer_.until_dns = true;
  EXPECT_EQ(ask(Role::kFilter, kNamedDestinationCacheMinor), CacheScope::kDestination);
  EXPECT_TRUE(seen.verdicts.at(0).cache_until_dns);
  EXPECT_EQ(ask(Role::kFilter, kNamedDestinationCacheMinor - 1), CacheScope::kFlow);
  EXPECT_FALSE(seen.verdicts.at(0).cache_until_dns);
  EXPECT_EQ(seen.verdicts.at(0).cache_ttl_ms, 0u);
}

// Decided notices are only for the daemon's log: they wait for company (a question, a full
// batch) or decided_delay, so that flows decided in the filter do not wake the daemon one by one;
// none is lost when the filter stops.
TEST_F(ChannelTest, DecidedNoticesWaitForCompanyAndAreSentOnStop) {
  StartServer();
  ClientOptions opts;
  opts.decided_delay = std::chrono::hours(1);
  opts.max_batch = 4;
  StartClient(opts);
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  for (uint16_t port = 1; port <= 3; ++port) client_->Decided(Question(port), Action::kAllow);
  RunFor(milliseconds(50));
  EXPECT_TRUE(analyzer_.reused.empty()) << "three notices wait";
  uint64_t id = client_->Ask(Question(80));
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id) && analyzer_.reused.size() == 3; }));
  EXPECT_EQ(analyzer_.reused[0].first.tuple.dst_port, 1) << "in the order decided";
  EXPECT_EQ(analyzer_.reused[2].first.tuple.dst_port, 3);
  for (uint16_t port = 11; port <= 14; ++port) client_->Decided(Question(port), Action::kDeny);
  ASSERT_TRUE(RunUntil([&] { return analyzer_.reused.size() == 7; })) << "a full batch goes";
  client_->Decided(Question(99), Action::kAllow);
  client_->Stop();
  ASSERT_TRUE(RunUntil([&] { return analyzer_.reused.size() == 8; }));
  EXPECT_EQ(analyzer_.reused.back().second, Action::kAllow);
  EXPECT_EQ(client_->status().decided_sent, 8u);
  EXPECT_EQ(client_->status().decided_dropped, 0u);
}

// Kept verdicts were made by the daemon of this session: when it ends (Goodbye or a lost
// connection), the client tells its owner to forget them all.
TEST_F(ChannelTest, EndOfASessionForgetsEverythingKept) {
  ServerOptions opts;
  opts.idle_exit = milliseconds(100);
  StartServer(opts);
  StartClient();
  std::vector<ForgetSelector> forgets;
  client_->OnForget([&](const ForgetSelector& s) { forgets.push_back(s); });
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  EXPECT_TRUE(forgets.empty());
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kIdle; }))
      << "the daemon said Goodbye (idle)";
  ASSERT_EQ(forgets.size(), 1u);
  EXPECT_TRUE(forgets[0].all);
  server_.reset();
  StartServer();
  client_->Start();
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  server_.reset();  // a crash: the connection is lost without Goodbye
  ASSERT_TRUE(RunUntil([&] { return forgets.size() == 2; }));
  EXPECT_TRUE(forgets[1].all);
}

// A notice waiting when the connection is lost waits through the reconnect (its timer must not
// fire into the handshake and drop it) and goes on the new session.
TEST_F(ChannelTest, ANoticeWaitsThroughAReconnect) {
  StartServer();
  ClientOptions opts;
  opts.decided_delay = milliseconds(20);
  StartClient(opts);
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  client_->Decided(Question(7), Action::kAllow);
  server_.reset();  // the daemon crashes; the socket stays, as systemd keeps it
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnecting; }));
  RunFor(milliseconds(60));  // past decided_delay, still in the handshake
  EXPECT_EQ(client_->status().decided_dropped, 0u);
  StartServer();
  ASSERT_TRUE(RunUntil([&] { return analyzer_.reused.size() == 1; }));
  EXPECT_EQ(client_->status().decided_sent, 1u);
  EXPECT_EQ(client_->status().decided_dropped, 0u);
}

TEST_F(ChannelTest, StopWithoutADaemonCountsWaitingNoticesAsDropped) {
  StartClient();  // into the backlog: nobody accepts
  ASSERT_EQ(client_->status().state, ChannelState::kConnecting);
  client_->Decided(Question(7), Action::kAllow);
  client_->Decided(Question(8), Action::kDeny);
  client_->Stop();
  EXPECT_EQ(client_->status().decided_sent, 0u);
  EXPECT_EQ(client_->status().decided_dropped, 2u);
}

TEST_F(ChannelTest, ALoneDecidedNoticeGoesAfterTheDelay) {
  StartServer();
  ClientOptions opts;
  opts.decided_delay = milliseconds(20);
  StartClient(opts);
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  client_->Decided(Question(5), Action::kReject);
  ASSERT_TRUE(RunUntil([&] { return analyzer_.reused.size() == 1; }));
  EXPECT_EQ(analyzer_.reused[0].second, Action::kReject);
  EXPECT_EQ(server_->counters().questions, 0u);
}

TEST_F(ChannelTest, OtherMajorVersionIsRefusedWithReason) {
  StartServer();
  UniqueFd peer = RawConnect();
  MessageBuilder b;
  b.AddHello(Hello{kProtocolMajor + 1, 0, Role::kProbe, "future"});
  auto m = b.Finish();
  ASSERT_GT(::send(peer.get(), m.data(), m.size(), 0), 0);
  ASSERT_TRUE(RunUntil([&] { return server_->counters().version_refused == 1; }));
  std::vector<uint8_t> buf(kMaxMessageBytes);
  ssize_t n = ::recv(peer.get(), buf.data(), buf.size(), 0);
  ASSERT_GT(n, 0);
  struct : ItemVisitor {
    std::string reason;
    void OnRefused(const Refused& r) override { reason = r.reason; }
  } v;
  ASSERT_TRUE(DecodeMessage({buf.data(), static_cast<size_t>(n)}, v));
  EXPECT_THAT(v.reason, HasSubstr("major versions differ"));
  EXPECT_EQ(::recv(peer.get(), buf.data(), buf.size(), 0), 0) << "then closed";
}

TEST_F(ChannelTest, PeerThatNeverReadsIsThrottledNotBuffered) {
  StartServer();
  UniqueFd greedy;
  ASSERT_EQ(FloodWithoutReading(greedy), 50)
      << "the daemon must stop taking work from a peer that never reads";
  RunFor(milliseconds(50));
  int answered_while_stuck = analyzer_.decided;
  // The real filter is still served promptly.
  StartClient();
  uint64_t id = client_->Ask(Question(23));
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id); }));
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kDaemon);
  RunFor(milliseconds(50));
  EXPECT_EQ(analyzer_.decided, answered_while_stuck + 1)
      << "the stuck peer's questions are not read while its replies are not taken";
}

TEST_F(ChannelTest, PeerThatLeavesWithRepliesQueuedIsClosedCleanly) {
  StartServer();
  UniqueFd greedy;
  ASSERT_EQ(FloodWithoutReading(greedy), 50);
  ASSERT_EQ(server_->connection_count(), 1u);
  // The server now holds replies it could not send; the peer goes away without taking them.
  greedy.Reset();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 0; }));
  // And the server still serves.
  StartClient();
  uint64_t id = client_->Ask(Question(23));
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id); }));
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kDaemon);
}

TEST_F(ChannelTest, DnsObservationsReachTheAnalyzerAndAreNeverHeld) {
  StartServer();
  StartClient();
  const uint8_t reply[] = {1, 2, 3, 4, 5};
  client_->Observe(reply);  // still connecting: dropped, not held
  EXPECT_EQ(client_->status().dns_dropped, 1u);
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  client_->Observe(reply);
  ASSERT_TRUE(RunUntil([&] { return analyzer_.dns_bytes == sizeof(reply); }));
  EXPECT_EQ(client_->status().dns_sent, 1u);
}

FilterReport Report(uint64_t questions) {
  FilterReport r;
  r.packets = questions * 3;
  r.questions = questions;
  r.answered = questions - 1;
  r.fallbacks_deadline = 1;
  r.pending = 2;
  r.max_pending = 100;
  r.queue_lost = 4;
  r.first_queue = 0;
  r.last_queue = 1;
  r.fail_open = true;
  return r;
}

TEST_F(ChannelTest, FilterReportIsKeptOnlyFromAFilter) {
  StartServer();
  int connected = 0;
  StartClient();  // role filter
  client_->OnConnected([&] { ++connected; });
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  EXPECT_EQ(connected, 1) << "told once the handshake is done, so the filter can report at once";
  ASSERT_TRUE(client_->Report(Report(10)));
  ASSERT_TRUE(RunUntil([&] { return server_->counters().filter_reports == 1; }));

  // A probe is admitted like a filter, but it may not speak for one.
  ClientOptions popts;
  popts.socket_path = path_;
  popts.role = Role::kProbe;
  ChannelClient probe(loop_, daemon_identity_, popts, [](const Decision&) {});
  probe.Start();
  ASSERT_TRUE(RunUntil([&] { return probe.status().state == ChannelState::kConnected; }));
  ASSERT_TRUE(probe.Report(Report(99)));
  ASSERT_TRUE(RunUntil([&] { return server_->counters().reports_ignored == 1; }));
  // Nor may it teach the daemon names: only a filter saw the reply on the wire (and drops what
  // it kept for the addresses it names).
  const uint8_t reply[] = {1, 2, 3, 4};
  probe.Observe(reply);
  ASSERT_TRUE(RunUntil([&] { return server_->counters().dns_ignored == 1; }));
  EXPECT_EQ(analyzer_.dns_bytes, 0u);

  std::vector<ConnectionInfo> conns = server_->Connections();
  ASSERT_EQ(conns.size(), 2u) << "an ignored report is not a protocol error";
  for (const ConnectionInfo& c : conns) {
    if (c.role == Role::kFilter) {
      ASSERT_TRUE(c.report.has_value());
      EXPECT_EQ(*c.report, Report(10));
      EXPECT_GE(c.report_age.count(), 0);
    } else {
      EXPECT_EQ(c.role, Role::kProbe);
      EXPECT_FALSE(c.report.has_value());
    }
  }
  EXPECT_EQ(server_->counters().filter_reports, 1u);
  EXPECT_EQ(server_->counters().protocol_errors, 0u);

  // The newest report replaces the last one.
  ASSERT_TRUE(client_->Report(Report(20)));
  ASSERT_TRUE(RunUntil([&] { return server_->counters().filter_reports == 2; }));
  for (const ConnectionInfo& c : server_->Connections()) {
    if (c.role == Role::kFilter) {
      EXPECT_EQ(c.report->questions, 20u);
    }
  }
  uint64_t id = client_->Ask(Question(23));
  ASSERT_TRUE(RunUntil([&] { return outcomes_.contains(id); }));
  EXPECT_EQ(outcomes_.at(id).source, DecisionSource::kDaemon) << "the session goes on";
}

TEST_F(ChannelTest, FilterReportBeforeHelloIsAProtocolError) {
  StartServer();
  UniqueFd bad = RawConnect();
  MessageBuilder b;
  b.AddFilterReport(Report(1));
  auto m = b.Finish();
  ASSERT_GT(::send(bad.get(), m.data(), m.size(), 0), 0);
  ASSERT_TRUE(RunUntil([&] { return server_->counters().protocol_errors == 1; }));
  EXPECT_EQ(server_->counters().filter_reports, 0u);
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(ChannelTest, NoReportToADaemonOfProtocol10) {
  // A 1.0 daemon would refuse the unknown item and close the session: the client does not send it.
  StartClient();
  UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn.valid());
  std::vector<uint8_t> buf(kMaxMessageBytes);
  ASSERT_GT(::recv(conn.get(), buf.data(), buf.size(), 0), 0);  // Hello
  MessageBuilder b;
  Welcome old;
  old.minor = 0;
  b.AddWelcome(old);
  auto w = b.Finish();
  ASSERT_GT(::send(conn.get(), w.data(), w.size(), 0), 0);
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  EXPECT_FALSE(client_->Report(Report(1)));
  EXPECT_EQ(client_->status().reports_skipped, 1u);
  client_->Flush();
  RunFor(milliseconds(20));
  EXPECT_LT(::recv(conn.get(), buf.data(), buf.size(), MSG_DONTWAIT), 0) << "nothing was sent";
}

TEST_F(ChannelTest, ReportsDoNotKeepAnIdleDaemonAlive) {
  bool idled = false;
  ServerOptions opts;
  opts.idle_exit = milliseconds(200);
  StartServer(opts);
  server_->OnIdle([&] { idled = true; });
  StartClient();
  ASSERT_TRUE(RunUntil([&] { return client_->status().state == ChannelState::kConnected; }));
  // A report on every loop turn, each different, far more often than the idle timeout.
  uint64_t n = 1;
  ASSERT_TRUE(RunUntil([&] {
    if (client_->status().state == ChannelState::kConnected) client_->Report(Report(++n));
    return idled;
  }));
  EXPECT_GT(server_->counters().filter_reports, 5u) << "the reports did arrive meanwhile";
  EXPECT_FALSE(client_->Report(Report(++n))) << "after Goodbye nothing is sent, nothing connects";
  RunFor(milliseconds(20));
  EXPECT_EQ(client_->status().state, ChannelState::kIdle);
}

}  // namespace
}  // namespace tollgate::ipc
