#include "control/control_server.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "platform/linux/netfilter_test_support.h"
#include "platform/linux/peer_credentials.h"

namespace tollgate::control {
namespace {

using namespace std::string_literals;

class FakeIdentity final : public ipc::PeerIdentity {
 public:
  Expected<ipc::PeerFacts> Identify(int, bool) override {
    ipc::PeerFacts facts;
    facts.uid = next_uid;
    facts.gid = next_uid;
    facts.pid = 4242;
    facts.groups_known = true;
    return facts;
  }
  uint32_t next_uid = 0;
};

class StatusBackend final : public ControlBackend {
 public:
  Reply GetStatus() override { return Reply::Ok({{"status", {{"calls", ++calls}}}}); }
  Reply ListRules() override { return Reply::Ok(); }
  Reply AddRule(const std::string&) override { return Reply::Ok(); }
  Reply RemoveRule(const std::string& name) override {
    return Reply::Error(errors::kRuleNotFound, {{"name", name}});
  }
  Reply Reload() override { return Reply::Ok(); }
  Reply TestFlow(const FlowSpec&) override { return Reply::Ok(); }
  Reply QueryFlows(const flowlog::FlowQuery&) override {
    // A big reply, so a client that does not read it leaves it in our queue.
    return Reply::Ok({{"flows", std::string(512 * 1024, 'x')}});
  }
  Reply GetMetrics() override { return Reply::Ok({{"text", "m 1\n"}}); }
  int calls = 0;
};

constexpr char kGetStatus[] = "{\"method\":\"io.tollgate.Control.GetStatus\"}";

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tollgate-control.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/control.sock";
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(::listen(fd, 64), 0);
    ::chmod(path_.c_str(), 0666);
    ::chmod(dir_.c_str(), 0755);
    listen_fd_ = UniqueFd(fd);
    ASSERT_GE(sd_event_new(&loop_), 0);
  }
  void TearDown() override {
    server_.reset();
    sd_event_unref(loop_);
    std::filesystem::remove_all(dir_);
  }

  void StartServer(ControlServerOptions options = {}) {
    options.policy.group_gid = 5000;  // the admin group
    options.policy.group_name = "tollgate-admin";
    server_ = std::make_unique<ControlServer>(loop_, std::move(listen_fd_), *identity_, backend_,
                                              options);
    ASSERT_TRUE(server_->Start());
  }

  UniqueFd Connect() {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return UniqueFd(fd);
  }

  void Send(int fd, std::string_view bytes) {
    ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }

  // Runs the loop until `done`; bounded by iterations, not by a clock.
  bool PumpUntil(const std::function<bool()>& done, int max_iterations = 2000) {
    for (int i = 0; i < max_iterations; ++i) {
      if (done()) return true;
      sd_event_run(loop_, 10'000);
    }
    return done();
  }

  // The next NUL-terminated message from `fd`, running the loop while waiting; "" on EOF.
  std::string Receive(int fd, std::string* pending) {
    std::string message;
    bool eof = false;
    PumpUntil([&] {
      size_t nul = pending->find('\0');
      if (nul != std::string::npos) {
        message = pending->substr(0, nul);
        pending->erase(0, nul + 1);
        return true;
      }
      char buf[65536];
      ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0) eof = true;
      if (n > 0) pending->append(buf, static_cast<size_t>(n));
      return eof;
    });
    return message;
  }
  nlohmann::json ReceiveJson(int fd, std::string* pending) {
    std::string text = Receive(fd, pending);
    return nlohmann::json::parse(text, nullptr, false);
  }
  // Whether the server closed `fd` (EOF after anything pending).
  bool ClosedByServer(int fd) {
    bool eof = false;
    PumpUntil([&] {
      char buf[65536];
      ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      eof = n == 0 || (n < 0 && errno == ECONNRESET);
      return eof;
    });
    return eof;
  }

  analysis::DecisionRecord Decision(Action action, uint16_t port) {
    analysis::DecisionRecord d;
    d.question.tuple = {IpAddress::V4(127, 0, 0, 1), IpAddress::V4(127, 0, 0, 2), 40000, port,
                        ipproto::kTcp};
    d.verdict.action = action;
    d.verdict.reason = "test";
    return d;
  }

  std::string dir_, path_;
  UniqueFd listen_fd_;
  sd_event* loop_ = nullptr;
  std::unique_ptr<FakeIdentity> fake_ = std::make_unique<FakeIdentity>();
  ipc::PeerIdentity* identity_ = fake_.get();
  StatusBackend backend_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlServerTest, AnswersACallSentInPieces) {
  StartServer();
  UniqueFd c = Connect();
  std::string pending;
  const std::string request = kGetStatus + "\0"s;
  for (char ch : request) {
    Send(c.get(), std::string_view(&ch, 1));
    sd_event_run(loop_, 0);
  }
  nlohmann::json reply = ReceiveJson(c.get(), &pending);
  EXPECT_EQ(reply["parameters"]["status"]["calls"], 1) << reply.dump();
  EXPECT_EQ(server_->counters().calls, 1u);
}

TEST_F(ControlServerTest, SeveralCallsInOneWriteAreAnsweredInOrder) {
  StartServer();
  UniqueFd c = Connect();
  Send(c.get(), kGetStatus + "\0"s +
                    R"({"method":"io.tollgate.Control.RemoveRule","parameters":{"name":"r"}})" +
                    "\0"s + kGetStatus + "\0"s);
  std::string pending;
  EXPECT_EQ(ReceiveJson(c.get(), &pending)["parameters"]["status"]["calls"], 1);
  nlohmann::json error = ReceiveJson(c.get(), &pending);
  EXPECT_EQ(error["error"], errors::kRuleNotFound);
  EXPECT_EQ(error["parameters"]["name"], "r");
  EXPECT_EQ(ReceiveJson(c.get(), &pending)["parameters"]["status"]["calls"], 2);
}

TEST_F(ControlServerTest, MalformedAndUnknownCallsGetErrorsAndTheConnectionStays) {
  StartServer();
  UniqueFd c = Connect();
  std::string pending;
  Send(c.get(), "not json\0"s);
  EXPECT_EQ(ReceiveJson(c.get(), &pending)["error"], errors::kInvalidRequest);
  Send(c.get(), R"({"method":"io.tollgate.Control.Nope"})" + "\0"s);
  EXPECT_EQ(ReceiveJson(c.get(), &pending)["error"], errors::kMethodNotFound);
  Send(c.get(), R"({"method":"io.tollgate.Control.RemoveRule","parameters":{"name":1}})" + "\0"s);
  nlohmann::json wrong = ReceiveJson(c.get(), &pending);
  EXPECT_EQ(wrong["error"], errors::kStdInvalidParameter);
  EXPECT_EQ(wrong["parameters"]["parameter"], "name");
  Send(c.get(), kGetStatus + "\0"s);
  EXPECT_EQ(ReceiveJson(c.get(), &pending)["parameters"]["status"]["calls"], 1);
  EXPECT_EQ(server_->counters().invalid_requests, 1u);
  EXPECT_EQ(server_->connection_count(), 1u);
}

TEST_F(ControlServerTest, OversizeRequestIsAnsweredThenClosed) {
  StartServer();
  UniqueFd c = Connect();
  std::string big = R"({"method":"io.tollgate.Control.AddRule","parameters":{"toml":")" +
                    std::string(kMaxRequestBytes, 'a');
  Send(c.get(), big);
  std::string pending;
  nlohmann::json reply = ReceiveJson(c.get(), &pending);
  EXPECT_EQ(reply["error"], errors::kRequestTooLarge);
  EXPECT_EQ(reply["parameters"]["limit"], kMaxRequestBytes);
  EXPECT_TRUE(ClosedByServer(c.get()));
  EXPECT_EQ(server_->counters().oversize_requests, 1u);
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(ControlServerTest, UnauthorisedPeerIsRefusedAndClosed) {
  StartServer();
  fake_->next_uid = 1000;  // not root, not in group 5000
  UniqueFd c = Connect();
  std::string pending;
  nlohmann::json reply = ReceiveJson(c.get(), &pending);
  EXPECT_EQ(reply["error"], errors::kNotAuthorized);
  EXPECT_NE(reply["parameters"]["reason"].get<std::string>().find("tollgate-admin"),
            std::string::npos)
      << reply.dump();
  EXPECT_TRUE(ClosedByServer(c.get()));
  EXPECT_EQ(server_->counters().peers_refused, 1u);
}

TEST_F(ControlServerTest, OneMisbehavingClientDoesNotDisturbAnother) {
  StartServer();
  UniqueFd good = Connect();
  UniqueFd bad = Connect();
  UniqueFd hoarder = Connect();
  std::string pending;
  // Half a request from the good client, then garbage and an oversize request from the bad one,
  // and a big reply the hoarder never reads.
  Send(good.get(), std::string_view(kGetStatus, 10));
  Send(hoarder.get(),
       R"({"method":"io.tollgate.Control.QueryFlows"})" + "\0"s + kGetStatus + "\0"s);
  Send(bad.get(), "\x01\x02garbage\0"s);
  Send(bad.get(), std::string(kMaxRequestBytes + 10, '{'));
  EXPECT_TRUE(ClosedByServer(bad.get()));
  Send(good.get(), std::string(kGetStatus + 10) + "\0"s);
  nlohmann::json reply = ReceiveJson(good.get(), &pending);
  EXPECT_TRUE(reply["parameters"]["status"].is_object()) << reply.dump();
  // The hoarder's second call waits behind its unread reply (one call in flight).
  EXPECT_EQ(backend_.calls, 1);
  EXPECT_EQ(server_->connection_count(), 2u);
}

TEST_F(ControlServerTest, SubscribeStreamsMatchingDecisions) {
  StartServer();
  UniqueFd all = Connect();
  UniqueFd denies = Connect();
  Send(all.get(), R"({"method":"io.tollgate.Control.Subscribe","more":true})" + "\0"s);
  Send(denies.get(), R"({"method":"io.tollgate.Control.Subscribe","more":true,)"
                     R"("parameters":{"action":"deny"}})" +
                         "\0"s);
  ASSERT_TRUE(PumpUntil([&] { return server_->subscriber_count() == 2; }));
  server_->Publish(Decision(Action::kAllow, 80));
  server_->Publish(Decision(Action::kDeny, 23));
  server_->Publish(Decision(Action::kAllow, 443));
  std::string p1, p2;
  for (int port : {80, 23, 443}) {
    nlohmann::json d = ReceiveJson(all.get(), &p1);
    EXPECT_EQ(d["continues"], true);
    EXPECT_EQ(d["parameters"]["decision"]["flow"]["dst_port"], port);
  }
  nlohmann::json deny = ReceiveJson(denies.get(), &p2);
  EXPECT_EQ(deny["parameters"]["decision"]["action"], "deny");
  EXPECT_EQ(server_->counters().decisions_streamed, 4u);

  // A subscriber that hangs up mid-stream is forgotten.
  all.Reset();
  ASSERT_TRUE(PumpUntil([&] { return server_->subscriber_count() == 1; }));
  server_->Publish(Decision(Action::kDeny, 22));
  EXPECT_EQ(ReceiveJson(denies.get(), &p2)["parameters"]["decision"]["flow"]["dst_port"], 22);
}

TEST_F(ControlServerTest, SubscribeWithoutMoreIsAnError) {
  StartServer();
  UniqueFd c = Connect();
  Send(c.get(), R"({"method":"io.tollgate.Control.Subscribe"})" + "\0"s);
  std::string pending;
  EXPECT_EQ(ReceiveJson(c.get(), &pending)["error"], errors::kExpectedMore);
  EXPECT_EQ(server_->subscriber_count(), 0u);
}

TEST_F(ControlServerTest, SlowSubscriberIsDroppedAndTheFastOneKeepsUp) {
  ControlServerOptions options;
  options.subscriber_queue_limit = 16;
  StartServer(options);
  UniqueFd slow = Connect();
  UniqueFd fast = Connect();
  int small = 4096;
  ASSERT_EQ(setsockopt(slow.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  Send(slow.get(), R"({"method":"io.tollgate.Control.Subscribe","more":true})" + "\0"s);
  Send(fast.get(), R"({"method":"io.tollgate.Control.Subscribe","more":true})" + "\0"s);
  ASSERT_TRUE(PumpUntil([&] { return server_->subscriber_count() == 2; }));
  std::string pending;
  int published = 0;
  int received = 0;
  while (server_->counters().subscribers_dropped == 0 && published < 100000) {
    server_->Publish(Decision(Action::kAllow, static_cast<uint16_t>(published % 65535)));
    ++published;
    nlohmann::json d = ReceiveJson(fast.get(), &pending);
    if (d.is_object() && d["continues"] == true) ++received;
  }
  EXPECT_EQ(server_->counters().subscribers_dropped, 1u);
  EXPECT_EQ(server_->subscriber_count(), 1u);
  EXPECT_EQ(received, published);  // the fast one got every decision
  EXPECT_TRUE(ClosedByServer(slow.get()));
}

TEST_F(ControlServerTest, BusyWhileAClientIsConnected) {
  StartServer();
  EXPECT_FALSE(server_->busy());
  {
    UniqueFd c = Connect();
    EXPECT_TRUE(server_->busy());  // waiting in the backlog counts
    ASSERT_TRUE(PumpUntil([&] { return server_->connection_count() == 1; }));
    EXPECT_TRUE(server_->busy());
  }
  ASSERT_TRUE(PumpUntil([&] { return server_->connection_count() == 0; }));
  EXPECT_FALSE(server_->busy());
}

// The real kernel credentials: a child that drops to uid/gid 65534 is refused; root is served.
TEST_F(ControlServerTest, RealPeerCredentialsRefuseANonAdmin) {
  if (geteuid() != 0) {
    if (platform::testing::PrivilegedRequired()) FAIL() << "needs root to make a second uid";
    GTEST_SKIP() << "needs root to make a client with another uid";
  }
  platform::LinuxPeerIdentity real;
  identity_ = &real;
  StartServer();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0) {
      _exit(10);
    }
    UniqueFd c = Connect();
    std::string got;
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(c.get(), buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    const bool refused = got.find(errors::kNotAuthorized) != std::string::npos &&
                         got.find("uid 65534") != std::string::npos;
    _exit(refused ? 0 : 11);
  }
  int status = 0;
  ASSERT_TRUE(PumpUntil([&] { return waitpid(child, &status, WNOHANG) == child; }));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: could not drop privileges; 11: not refused";
  EXPECT_EQ(server_->counters().peers_refused, 1u);

  UniqueFd root = Connect();
  Send(root.get(), kGetStatus + "\0"s);
  std::string pending;
  EXPECT_TRUE(ReceiveJson(root.get(), &pending)["parameters"]["status"].is_object());
}

}  // namespace
}  // namespace tollgate::control
