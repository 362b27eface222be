// The varlink client and the operator's messages against a fake varlink server: a temporary
// AF_UNIX socket served by a thread that reads one call and answers with canned bytes (or does
// not answer, or closes). Each way of not getting an answer is checked end to end: errno ->
// Error code -> message and exit code.
#include <gmock/gmock.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "cli/control_session.h"
#include "cli/exit_codes.h"
#include "cli/varlink_client.h"

namespace tollgate::cli {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

class FakeServer {
 public:
  FakeServer() {
    char tmpl[] = "/tmp/tollgate-cli-test.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/control.sock";
  }
  ~FakeServer() {
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    std::filesystem::remove_all(dir_);
  }

  // Binds the socket; listens unless `listen` is false (a stale socket: ECONNREFUSED).
  void Bind(bool listen = true) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    ASSERT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    if (listen) {
      ASSERT_EQ(::listen(listen_fd_, 4), 0);
    }
  }

  // Accepts one connection in a thread, reads one message (up to its NUL) into request(), and
  // hands the connection to `answer`, which writes whatever the case needs.
  void ServeOnce(std::function<void(int fd)> answer) {
    Bind();
    thread_ = std::thread([this, answer] {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      char c;
      while (::recv(fd, &c, 1, 0) == 1 && c != '\0') request_.push_back(c);
      answer(fd);
      ::close(fd);
    });
  }

  // Answers with `bytes` as they are.
  void Reply(std::string bytes) {
    ServeOnce([bytes](int fd) {
      ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
                static_cast<ssize_t>(bytes.size()));
    });
  }

  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }
  json request() {
    if (thread_.joinable()) thread_.join();
    return json::parse(request_);
  }

 private:
  std::string dir_, path_;
  int listen_fd_ = -1;
  std::thread thread_;
  std::string request_;
};

std::string Msg(const std::string& json_text) { return json_text + std::string(1, '\0'); }

VarlinkClient::Options Short() {
  VarlinkClient::Options o;
  o.timeout = std::chrono::milliseconds(200);
  return o;
}

Failure TransportFailure(const Error& e, const std::string& path, bool installed = true) {
  return DescribeTransportError(e, path, [installed] { return installed; });
}

TEST(VarlinkClientTest, CallSendsOneNulTerminatedCallAndParsesTheReply) {
  FakeServer server;
  server.Reply(Msg(R"({"parameters":{"rules_loaded":3,"rule_set_version":7}})"));
  auto client = VarlinkClient::Connect(server.path(), Short());
  ASSERT_TRUE(client) << client.error().message;
  auto reply = client->Call("io.tollgate.Control.Reload");
  ASSERT_TRUE(reply) << reply.error().message;
  EXPECT_TRUE(reply->ok());
  EXPECT_EQ(reply->parameters["rule_set_version"], 7);
  json call = server.request();
  EXPECT_EQ(call["method"], "io.tollgate.Control.Reload");
  EXPECT_TRUE(call["parameters"].is_object());
  EXPECT_FALSE(call.contains("more"));
}

TEST(VarlinkClientTest, StreamRepliesArriveOneByOneEvenWhenWrittenTogether) {
  FakeServer server;
  server.Reply(Msg(R"({"parameters":{"decision":{"action":"allow"}},"continues":true})") +
               Msg(R"({"parameters":{"decision":{"action":"deny"}},"continues":false})"));
  auto client = VarlinkClient::Connect(server.path(), Short());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send("io.tollgate.Control.Subscribe", json::object(), /*more=*/true));
  auto first = client->Receive(std::chrono::milliseconds(2000));
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->continues);
  EXPECT_EQ(first->parameters["decision"]["action"], "allow");
  auto second = client->Receive(std::nullopt);
  ASSERT_TRUE(second);
  EXPECT_FALSE(second->continues);
  EXPECT_EQ(second->parameters["decision"]["action"], "deny");
  EXPECT_EQ(server.request()["more"], true);
}

TEST(ControlErrorsTest, NoSocketAndNothingInstalledSaysHowToInstall) {
  FakeServer server;  // never bound: the path does not exist
  auto client = VarlinkClient::Connect(server.path(), Short());
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, ErrorCode::kNotFound);
  Failure f = TransportFailure(client.error(), server.path(), /*installed=*/false);
  EXPECT_EQ(f.exit_code, kExitNotInstalled);
  EXPECT_EQ(f.kind, "not_installed");
  EXPECT_THAT(f.message, HasSubstr(server.path()));
  EXPECT_THAT(f.message, HasSubstr("Install it"));
}

TEST(ControlErrorsTest, NoSocketButInstalledSaysHowToStart) {
  FakeServer server;
  auto client = VarlinkClient::Connect(server.path(), Short());
  ASSERT_FALSE(client);
  Failure f = TransportFailure(client.error(), server.path(), /*installed=*/true);
  EXPECT_EQ(f.exit_code, kExitNotRunning);
  EXPECT_THAT(f.message, HasSubstr("systemctl start tollgated.socket"));
}

TEST(ControlErrorsTest, StaleSocketIsConnectionRefusedAndNotRunning) {
  FakeServer server;
  server.Bind(/*listen=*/false);
  auto client = VarlinkClient::Connect(server.path(), Short());
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, ErrorCode::kUnavailable);
  Failure f = TransportFailure(client.error(), server.path());
  EXPECT_EQ(f.exit_code, kExitNotRunning);
  EXPECT_THAT(f.message, HasSubstr("systemctl start tollgated.socket"));
  EXPECT_THAT(f.message, HasSubstr("Connection refused"));
}

TEST(ControlErrorsTest, SocketModeRefusingUsIsPermissionDeniedWithTheAdminGroup) {
  if (::geteuid() != 0) {
    if (const char* r = std::getenv("TOLLGATE_REQUIRE_PRIVILEGED"); r && std::string(r) == "1") {
      FAIL() << "needs root (to connect as nobody), and TOLLGATE_REQUIRE_PRIVILEGED=1";
    }
    GTEST_SKIP() << "needs root to connect as another user";
  }
  FakeServer server;
  server.Bind();
  ASSERT_EQ(::chmod(server.dir().c_str(), 0755), 0);  // so only the socket's mode refuses
  ASSERT_EQ(::chmod(server.path().c_str(), 0600), 0);
  // The child only makes system calls and _exits: no server thread exists yet, and nothing here
  // needs a lock another thread could hold.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setgroups(0, nullptr) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0) {
      ::_exit(90);
    }
    auto client = VarlinkClient::Connect(server.path(), Short());
    if (client) ::_exit(91);
    ::_exit(client.error().code == ErrorCode::kPermissionDenied ? 0 : 92);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "90: could not drop to nobody, 91: connected, 92: other error";
  Failure f = TransportFailure(Error{ErrorCode::kPermissionDenied, "connect: Permission denied"},
                               server.path());
  EXPECT_EQ(f.exit_code, kExitNoPermission);
  EXPECT_THAT(f.message, HasSubstr("tollgate-admin"));
  EXPECT_THAT(f.message, HasSubstr("sudo"));
}

TEST(ControlErrorsTest, NotAuthorizedIsRefusedWithTheDaemonsReason) {
  FakeServer server;
  server.Reply(Msg(R"({"error":"io.tollgate.Control.NotAuthorized",)"
                   R"("parameters":{"reason":"uid 1000 is not in group tollgate-admin"}})"));
  auto client = VarlinkClient::Connect(server.path(), Short());
  ASSERT_TRUE(client);
  auto reply = client->Call("io.tollgate.Control.GetStatus");
  ASSERT_TRUE(reply);
  ASSERT_FALSE(reply->ok());
  Failure f = DescribeVarlinkError(*reply);
  EXPECT_EQ(f.exit_code, kExitRefused);
  EXPECT_EQ(f.kind, "refused");
  EXPECT_THAT(f.message, HasSubstr("uid 1000 is not in group tollgate-admin"));
  EXPECT_THAT(f.message, HasSubstr("usermod -aG tollgate-admin"));
  json j = FailureJson(f);
  EXPECT_EQ(j["exit_code"], kExitRefused);
  EXPECT_EQ(j["error"]["varlink_error"], "io.tollgate.Control.NotAuthorized");
}

TEST(ControlErrorsTest, VarlinkErrorsPrintTheirNameAndParameters) {
  FakeServer server;
  server.Reply(Msg(R"({"error":"io.tollgate.Control.RuleNotManaged",)"
                   R"("parameters":{"name":"no-telnet","origin":"/etc/r.d/10.toml:3:8"}})"));
  auto client = VarlinkClient::Connect(server.path(), Short());
  ASSERT_TRUE(client);
  auto reply = client->Call("io.tollgate.Control.RemoveRule", {{"name", "no-telnet"}});
  ASSERT_TRUE(reply);
  Failure f = DescribeVarlinkError(*reply);
  EXPECT_EQ(f.exit_code, kExitDaemonError);
  EXPECT_THAT(f.message, HasSubstr("\"no-telnet\" is defined in /etc/r.d/10.toml:3:8"));

  // An error the CLI has no sentence for: its full name and every parameter.
  VarlinkReply other;
  other.error = "org.varlink.service.InvalidParameter";
  other.parameters = {{"parameter", "flow"}, {"depth", 3}};
  f = DescribeVarlinkError(other);
  EXPECT_EQ(f.exit_code, kExitDaemonError);
  EXPECT_EQ(f.message,
            "tollgated answered with error org.varlink.service.InvalidParameter (depth 3, "
            "parameter \"flow\")");
  VarlinkReply slow;
  slow.error = "io.tollgate.Control.SubscriberTooSlow";
  slow.parameters = {{"queue_limit", "not a number"}};  // never trusted to be well-typed
  EXPECT_THAT(DescribeVarlinkError(slow).message, HasSubstr("more than ? decisions behind"));
  VarlinkReply invalid;
  invalid.error = "io.tollgate.Control.RuleInvalid";
  invalid.parameters = {{"message", "90-tollgate-cli.toml:4:8: port must be ..."}};
  EXPECT_THAT(DescribeVarlinkError(invalid).message,
              HasSubstr("refused: 90-tollgate-cli.toml:4:8: port must be"));
}

TEST(ControlErrorsTest, NoAnswerInTimeIsATimeout) {
  FakeServer server;
  // Read the call, then hold the connection open without answering until the client gives up.
  server.ServeOnce([](int fd) {
    char c;
    ::recv(fd, &c, 1, 0);  // returns when the client closes
  });
  {
    auto client = VarlinkClient::Connect(server.path(), Short());
    ASSERT_TRUE(client);
    auto reply = client->Call("io.tollgate.Control.GetStatus");
    ASSERT_FALSE(reply);
    EXPECT_EQ(reply.error().code, ErrorCode::kTimeout);
    Failure f = TransportFailure(reply.error(), server.path());
    EXPECT_EQ(f.exit_code, kExitTimeout);
    EXPECT_THAT(f.message, HasSubstr("--timeout"));
  }
}

TEST(ControlErrorsTest, OversizeReplyIsRefusedWithoutReadingItAll) {
  FakeServer server;
  server.Reply(std::string(64 * 1024, 'x'));  // no NUL at all
  VarlinkClient::Options o = Short();
  o.max_reply_bytes = 1024;
  auto client = VarlinkClient::Connect(server.path(), o);
  ASSERT_TRUE(client);
  auto reply = client->Call("io.tollgate.Control.GetMetrics");
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().code, ErrorCode::kTooLarge);
  Failure f = TransportFailure(reply.error(), server.path());
  EXPECT_EQ(f.exit_code, kExitBadReply);
  EXPECT_THAT(f.message, HasSubstr("larger than 1024 bytes"));
}

TEST(ControlErrorsTest, MalformedAndCutOffRepliesAreBadReplies) {
  for (const std::string& bytes :
       {Msg("not json"), Msg("[1,2]"), Msg(R"({"parameters":[]})"), Msg(R"({"error":7})"),
        Msg(R"({"parameters":{},"continues":"yes"})"), std::string(R"({"parameters":{})"),
        std::string()}) {
    FakeServer server;
    server.Reply(bytes);
    auto client = VarlinkClient::Connect(server.path(), Short());
    ASSERT_TRUE(client);
    auto reply = client->Call("io.tollgate.Control.GetStatus");
    ASSERT_FALSE(reply) << bytes;
    EXPECT_TRUE(reply.error().code == ErrorCode::kMalformed ||
                reply.error().code == ErrorCode::kProtocol)
        << bytes;
    EXPECT_EQ(TransportFailure(reply.error(), server.path()).exit_code, kExitBadReply) << bytes;
  }
}

TEST(ResolveControlSocketTest, FlagThenEnvironmentThenSettingsThenDefault) {
  FakeServer dir;  // just for a temporary directory
  std::string config = dir.dir() + "/tollgate.toml";
  std::ofstream(config) << "[tollgate]\ngroup = \"tg\"\nruntime_dir = \"/run/elsewhere\"\n";
  std::string warning;
  EXPECT_EQ(ResolveControlSocket("/a.sock", config, "/b.sock", &warning)->socket_path, "/a.sock");
  EXPECT_EQ(ResolveControlSocket(std::nullopt, config, "/b.sock", &warning)->socket_path,
            "/b.sock");
  auto from_settings = ResolveControlSocket(std::nullopt, config, "", &warning);
  ASSERT_TRUE(from_settings) << from_settings.error().message;
  EXPECT_EQ(from_settings->socket_path, "/run/elsewhere/control.sock");
  EXPECT_THAT(from_settings->chosen_by, HasSubstr(config));
  // An explicit --config that is missing or broken is an error, not a silent default.
  EXPECT_FALSE(ResolveControlSocket(std::nullopt, dir.dir() + "/missing.toml", nullptr, &warning));
  std::ofstream(config) << "[tollgate]\nruntime_dri = \"/x\"\n";
  EXPECT_FALSE(ResolveControlSocket(std::nullopt, config, nullptr, &warning));
}

}  // namespace
}  // namespace tollgate::cli
