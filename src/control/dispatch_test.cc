#include "control/dispatch.h"

#include <gtest/gtest.h>

#include "analysis/first_bytes.h"
#include "control/records.h"

namespace tollgate::control {
namespace {

// Records what reached it; answers with the method's name.
class FakeBackend final : public ControlBackend {
 public:
  Reply GetStatus() override { return Seen("GetStatus"); }
  Reply ListRules() override { return Seen("ListRules"); }
  Reply AddRule(const std::string& toml) override {
    last_toml = toml;
    return Seen("AddRule");
  }
  Reply RemoveRule(const std::string& name) override {
    last_name = name;
    return Seen("RemoveRule");
  }
  Reply Reload() override { return Seen("Reload"); }
  Reply TestFlow(const FlowSpec& flow) override {
    last_flow = flow;
    return Seen("TestFlow");
  }
  Reply QueryFlows(const flowlog::FlowQuery& query) override {
    last_query = query;
    return Seen("QueryFlows");
  }
  Reply GetMetrics() override { return Seen("GetMetrics"); }

  std::string called;
  std::string last_toml, last_name;
  FlowSpec last_flow;
  flowlog::FlowQuery last_query;

 private:
  Reply Seen(const char* method) {
    called = method;
    return Reply::Ok({{"method", method}});
  }
};

Reply CallText(FakeBackend& backend, const std::string& text) {
  Reply error;
  std::optional<Call> call = ParseCall(text, &error);
  if (!call) return error;
  return Dispatch(*call, backend);
}

TEST(DispatchTest, EveryMethodReachesTheBackend) {
  const std::pair<const char*, const char*> calls[] = {
      {"GetStatus", "{}"},
      {"ListRules", "{}"},
      {"Reload", "{}"},
      {"GetMetrics", "{}"},
      {"AddRule", R"({"toml":"[[rule]]"})"},
      {"RemoveRule", R"({"name":"x"})"},
      {"TestFlow",
       R"({"flow":{"protocol":"tcp","direction":"outbound","src":"10.0.0.1","src_port":1,"dst":"10.0.0.2","dst_port":443}})"},
      {"QueryFlows", "{}"},
  };
  for (const auto& [method, params] : calls) {
    FakeBackend backend;
    Reply reply = CallText(backend, std::string(R"({"method":"io.tollgate.Control.)") + method +
                                        R"(","parameters":)" + params + "}");
    EXPECT_TRUE(reply.ok()) << method << ": " << reply.error << " " << reply.parameters.dump();
    EXPECT_EQ(backend.called, method);
  }
}

TEST(DispatchTest, UnknownMethodAndInterface) {
  FakeBackend backend;
  Reply r = CallText(backend, R"({"method":"io.tollgate.Control.Explode"})");
  EXPECT_EQ(r.error, errors::kMethodNotFound);
  EXPECT_EQ(r.parameters["method"], "io.tollgate.Control.Explode");
  r = CallText(backend, R"({"method":"com.example.Other.Ping"})");
  EXPECT_EQ(r.error, errors::kInterfaceNotFound);
  EXPECT_EQ(r.parameters["interface"], "com.example.Other");
  r = CallText(backend, R"({"method":"NoDots"})");
  EXPECT_EQ(r.error, errors::kMethodNotFound);
  EXPECT_TRUE(backend.called.empty());
}

TEST(DispatchTest, WrongTypesMissingAndUnknownParameters) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"method":"io.tollgate.Control.RemoveRule","parameters":{}})", "name"},
      {R"({"method":"io.tollgate.Control.RemoveRule","parameters":{"name":7}})", "name"},
      {R"({"method":"io.tollgate.Control.AddRule","parameters":{"toml":["x"]}})", "toml"},
      {R"({"method":"io.tollgate.Control.GetStatus","parameters":{"verbose":true}})", "verbose"},
      {R"({"method":"io.tollgate.Control.QueryFlows","parameters":{"limit":"10"}})", "limit"},
      {R"({"method":"io.tollgate.Control.QueryFlows","parameters":{"limit":1.5}})", "limit"},
      {R"({"method":"io.tollgate.Control.TestFlow","parameters":{"flow":"tcp"}})", "flow"},
      {R"({"method":"io.tollgate.Control.TestFlow","parameters":{"flow":{"protocol":"tcp"}}})",
       "flow.direction"},
      {R"({"method":"io.tollgate.Control.TestFlow","parameters":{"flow":{"protocol":"tcp","direction":"outbound","src":"a","src_port":"1","dst":"b","dst_port":2}}})",
       "flow.src_port"},
  };
  for (const auto& [text, parameter] : cases) {
    FakeBackend backend;
    Reply r = CallText(backend, text);
    EXPECT_EQ(r.error, errors::kStdInvalidParameter) << text;
    EXPECT_EQ(r.parameters.value("parameter", ""), parameter) << text;
    EXPECT_TRUE(backend.called.empty()) << text;
  }
}

TEST(DispatchTest, UnusableValuesAreTollgateInvalidParameter) {
  FakeBackend backend;
  Reply r = CallText(
      backend, R"({"method":"io.tollgate.Control.QueryFlows","parameters":{"since":"yesterday"}})");
  EXPECT_EQ(r.error, errors::kInvalidParameter);
  EXPECT_EQ(r.parameters["parameter"], "since");
  r = CallText(backend, R"({"method":"io.tollgate.Control.QueryFlows","parameters":{"limit":0}})");
  EXPECT_EQ(r.error, errors::kInvalidParameter);
  r = CallText(backend,
               R"({"method":"io.tollgate.Control.QueryFlows","parameters":{"action":"maybe"}})");
  EXPECT_EQ(r.error, errors::kInvalidParameter);
  EXPECT_TRUE(backend.called.empty());
}

TEST(DispatchTest, QueryFlowsParametersArrive) {
  FakeBackend backend;
  Reply r = CallText(backend, R"({"method":"io.tollgate.Control.QueryFlows","parameters":{
      "since":"2024-05-01T12:00:00.5+02:00","action":"deny","exe":"/usr/bin/curl",
      "host":"example.com","limit":7}})");
  ASSERT_TRUE(r.ok()) << r.parameters.dump();
  EXPECT_EQ(backend.last_query.since_us, int64_t{1714557600500000});
  EXPECT_EQ(backend.last_query.action, "deny");
  EXPECT_EQ(backend.last_query.exe, "/usr/bin/curl");
  EXPECT_EQ(backend.last_query.host, "example.com");
  EXPECT_EQ(backend.last_query.limit, 7u);
}

TEST(DispatchTest, ServiceInterface) {
  FakeBackend backend;
  Reply info = CallText(backend, R"({"method":"org.varlink.service.GetInfo"})");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info.parameters["interfaces"][1], "io.tollgate.Control");
  Reply desc = CallText(backend, R"({"method":"org.varlink.service.GetInterfaceDescription",
                               "parameters":{"interface":"io.tollgate.Control"}})");
  ASSERT_TRUE(desc.ok());
  const std::string text = desc.parameters["description"];
  EXPECT_NE(text.find("interface io.tollgate.Control"), std::string::npos);
  EXPECT_NE(text.find("method GetStatus()"), std::string::npos);
  Reply missing = CallText(backend, R"({"method":"org.varlink.service.GetInterfaceDescription",
                                  "parameters":{"interface":"nope"}})");
  EXPECT_EQ(missing.error, errors::kInterfaceNotFound);
}

TEST(DispatchTest, SubscribeNeedsMoreAndAKnownAction) {
  Reply error;
  auto call = ParseCall(R"({"method":"io.tollgate.Control.Subscribe"})", &error);
  ASSERT_TRUE(call);
  EXPECT_FALSE(CheckSubscribe(*call, &error));
  EXPECT_EQ(error.error, errors::kExpectedMore);
  call = ParseCall(R"({"method":"io.tollgate.Control.Subscribe","more":true,
                      "parameters":{"action":"sometimes"}})",
                   &error);
  EXPECT_FALSE(CheckSubscribe(*call, &error));
  EXPECT_EQ(error.error, errors::kInvalidParameter);
  call = ParseCall(R"({"method":"io.tollgate.Control.Subscribe","more":true,
                      "parameters":{"action":"deny"}})",
                   &error);
  auto request = CheckSubscribe(*call, &error);
  ASSERT_TRUE(request);
  EXPECT_EQ(request->action, "deny");
}

TEST(RecordsTest, Rfc3339BothWays) {
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(FormatRfc3339(1714557600500000, false), "2024-05-01T10:00:00Z");
  EXPECT_EQ(ParseRfc3339("2024-05-01T10:00:00.5Z"), int64_t{1714557600500000});
  EXPECT_EQ(ParseRfc3339(FormatRfc3339(1714557600123456)), int64_t{1714557600123456});
  EXPECT_EQ(ParseRfc3339("2024-05-01T10:00:00-01:30"), int64_t{1714557600 + 5400} * 1000000);
  for (const char* bad : {"", "2024-05-01", "2024-05-01T10:00:00", "2024-13-01T10:00:00Z",
                          "2024-05-01T10:00:00.Z", "2024-05-01T10:00:00Zjunk", "yesterday"}) {
    EXPECT_FALSE(ParseRfc3339(bad)) << bad;
  }
}

TEST(RecordsTest, FlowSpecBecomesAQuestionWithAReadableClientHello) {
  FlowSpec spec{"tcp", "outbound", "10.0.0.1",       40000, "192.0.2.7", 443,
                1000,  {},         "Www.Example.com"};
  std::string parameter, message;
  auto q = QuestionFromSpec(spec, &parameter, &message);
  ASSERT_TRUE(q) << parameter << ": " << message;
  EXPECT_EQ(q->tuple.protocol, ipproto::kTcp);
  EXPECT_EQ(q->tuple.dst_port, 443);
  EXPECT_EQ(q->uid, 1000u);
  size_t needed = 0;
  auto hello = analysis::ReadTlsClientHello(q->payload, &needed);
  ASSERT_TRUE(hello) << hello.error().message;
  EXPECT_EQ(hello->server_name, "www.example.com");

  const std::pair<FlowSpec, const char*> bad[] = {
      {{"sctp", "outbound", "10.0.0.1", 1, "10.0.0.2", 2, {}, {}, {}}, "flow.protocol"},
      {{"tcp", "sideways", "10.0.0.1", 1, "10.0.0.2", 2, {}, {}, {}}, "flow.direction"},
      {{"tcp", "outbound", "10.0.0", 1, "10.0.0.2", 2, {}, {}, {}}, "flow.src"},
      {{"tcp", "outbound", "10.0.0.1", 1, "::1", 2, {}, {}, {}}, "flow.dst"},
      {{"tcp", "outbound", "10.0.0.1", 70000, "10.0.0.2", 2, {}, {}, {}}, "flow.src_port"},
      {{"icmp", "outbound", "10.0.0.1", 8, "10.0.0.2", 300, {}, {}, {}}, "flow.dst_port"},
      {{"udp", "outbound", "10.0.0.1", 1, "10.0.0.2", 2, -1, {}, {}}, "flow.uid"},
      {{"udp", "outbound", "10.0.0.1", 1, "10.0.0.2", 2, {}, {}, "a.example"}, "flow.sni"},
  };
  for (const auto& [s, expected] : bad) {
    EXPECT_FALSE(QuestionFromSpec(s, &parameter, &message)) << expected;
    EXPECT_EQ(parameter, expected);
  }
}

TEST(RecordsTest, DecisionRecordToLogRecordAndJson) {
  analysis::DecisionRecord d;
  d.time = analysis::WallTime(std::chrono::microseconds(1714557600000001));
  d.question.tuple = {IpAddress::V4(10, 0, 0, 1), IpAddress::V4(192, 0, 2, 7), 40000, 443,
                      ipproto::kTcp};
  d.question.uid = 1000;
  d.verdict.action = Action::kDeny;
  d.verdict.reason = "deny: rule \"x\" (tcp port 443)";
  d.rule = "x";
  d.names = {{"example.com", analysis::NameSource::kDns}};
  d.process = analysis::ProcessLookup{
      analysis::Attribution::kFound, {42, 1, 1000, "alice", "/usr/bin/curl", "curl", ""}, ""};
  flowlog::FlowRecord r = ToFlowRecord(d);
  EXPECT_EQ(r.time_us, 1714557600000001);
  EXPECT_EQ(r.protocol, "tcp");
  EXPECT_EQ(r.direction, "outbound");
  EXPECT_EQ(r.dst, "192.0.2.7");
  EXPECT_EQ(r.pid, 42u);
  EXPECT_EQ(r.exe, "/usr/bin/curl");
  EXPECT_EQ(r.name, "example.com");
  EXPECT_EQ(r.action, "deny");
  nlohmann::json j = DecisionJson(r);
  EXPECT_EQ(j["time"], "2024-05-01T10:00:00.000001Z");
  EXPECT_EQ(j["flow"]["dst_port"], 443);
  EXPECT_EQ(j["rule"], "x");
  EXPECT_TRUE(j["unit"].is_null());
  auto back = QuestionFromRecord(r);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->tuple, d.question.tuple);
}

}  // namespace
}  // namespace tollgate::control
