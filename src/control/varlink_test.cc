#include "control/varlink.h"

#include <gtest/gtest.h>

#include <string>

namespace tollgate::control {
namespace {

using namespace std::string_literals;

TEST(MessageFramerTest, SplitReadsMakeOneMessage) {
  MessageFramer framer;
  std::string message;
  framer.Append(R"({"method":)");
  EXPECT_EQ(framer.Next(&message), MessageFramer::Result::kNone);
  framer.Append(R"("a.b.C"})");
  EXPECT_EQ(framer.Next(&message), MessageFramer::Result::kNone);
  framer.Append("\0"s);
  ASSERT_EQ(framer.Next(&message), MessageFramer::Result::kMessage);
  EXPECT_EQ(message, R"({"method":"a.b.C"})");
  EXPECT_EQ(framer.Next(&message), MessageFramer::Result::kNone);
  EXPECT_EQ(framer.buffered(), 0u);
}

TEST(MessageFramerTest, SeveralMessagesInOneRead) {
  MessageFramer framer;
  framer.Append("one\0two\0thr"s);
  std::string message;
  ASSERT_EQ(framer.Next(&message), MessageFramer::Result::kMessage);
  EXPECT_EQ(message, "one");
  ASSERT_EQ(framer.Next(&message), MessageFramer::Result::kMessage);
  EXPECT_EQ(message, "two");
  EXPECT_EQ(framer.Next(&message), MessageFramer::Result::kNone);
  framer.Append("ee\0"s);
  ASSERT_EQ(framer.Next(&message), MessageFramer::Result::kMessage);
  EXPECT_EQ(message, "three");
}

TEST(MessageFramerTest, OversizeCompleteAndIncompleteMessages) {
  MessageFramer complete(8);
  complete.Append("123456789\0"s);
  std::string message;
  EXPECT_EQ(complete.Next(&message), MessageFramer::Result::kTooLarge);

  MessageFramer exact(8);
  exact.Append("12345678\0"s);
  EXPECT_EQ(exact.Next(&message), MessageFramer::Result::kMessage);

  // No NUL yet, but already over the limit: no need to wait for the rest.
  MessageFramer incomplete(8);
  incomplete.Append("123456789");
  EXPECT_EQ(incomplete.Next(&message), MessageFramer::Result::kTooLarge);
}

// A raw NUL can never be inside a JSON string (control characters must be escaped), so cutting at
// every NUL is always right: a NUL "inside" a string just makes two malformed requests.
TEST(MessageFramerTest, NulInsideAStringSplitsIntoTwoMalformedRequests) {
  MessageFramer framer;
  framer.Append("{\"method\":\"a\0b\"}\0"s);
  std::string first, second;
  ASSERT_EQ(framer.Next(&first), MessageFramer::Result::kMessage);
  ASSERT_EQ(framer.Next(&second), MessageFramer::Result::kMessage);
  Reply error;
  EXPECT_FALSE(ParseCall(first, &error));
  EXPECT_EQ(error.error, errors::kInvalidRequest);
  EXPECT_FALSE(ParseCall(second, &error));
  // The escaped form is fine and carries the NUL inside the value.
  auto call = ParseCall(R"({"method":"a\u0000b"})", &error);
  ASSERT_TRUE(call);
  EXPECT_EQ(call->method, "a\0b"s);
}

TEST(ParseCallTest, ReadsEveryField) {
  Reply error;
  auto call = ParseCall(
      R"({"method":"io.tollgate.Control.Subscribe","parameters":{"action":"deny"},"more":true})",
      &error);
  ASSERT_TRUE(call) << error.parameters.dump();
  EXPECT_EQ(call->method, "io.tollgate.Control.Subscribe");
  EXPECT_EQ(call->parameters["action"], "deny");
  EXPECT_TRUE(call->more);
  EXPECT_FALSE(call->oneway);

  auto bare = ParseCall(R"({"method":"x.Y","parameters":null})", &error);
  ASSERT_TRUE(bare);
  EXPECT_TRUE(bare->parameters.is_object());
  EXPECT_TRUE(bare->parameters.empty());
}

TEST(ParseCallTest, MalformedRequestsSayWhatIsWrong) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "not JSON"},
      {"{", "not JSON"},
      {"[1]", "JSON object"},
      {"\"x\"", "JSON object"},
      {"{}", "no \"method\""},
      {R"({"method":""})", "no \"method\""},
      {R"({"method":5})", "\"method\" must be a string"},
      {R"({"method":"a.B","parameters":[]})", "\"parameters\" must be a JSON object"},
      {R"({"method":"a.B","more":"yes"})", "\"more\" must be true or false"},
      {R"({"method":"a.B","oneway":1})", "\"oneway\" must be true or false"},
      {R"({"method":"a.B","upgrade":true})", "not supported"},
      {R"({"method":"a.B","more":true,"oneway":true})", "exclude each other"},
      {R"({"method":"a.B","colour":1})", "unknown request field \"colour\""},
  };
  for (const auto& [text, expected] : cases) {
    Reply error;
    EXPECT_FALSE(ParseCall(text, &error)) << text;
    EXPECT_EQ(error.error, errors::kInvalidRequest) << text;
    std::string message = error.parameters.value("message", "");
    EXPECT_NE(message.find(expected), std::string::npos) << text << " -> " << message;
  }
}

TEST(EncodeReplyTest, NulTerminatedJsonAndContinues) {
  Reply reply = Reply::Ok({{"n", 1}});
  reply.continues = true;
  std::string bytes = EncodeReply(reply);
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(bytes.back(), '\0');
  auto parsed = nlohmann::json::parse(bytes.substr(0, bytes.size() - 1), nullptr, false);
  ASSERT_FALSE(parsed.is_discarded());
  EXPECT_EQ(parsed["parameters"]["n"], 1);
  EXPECT_EQ(parsed["continues"], true);
  EXPECT_FALSE(parsed.contains("error"));

  std::string error = EncodeReply(Reply::Error(errors::kRuleNotFound, {{"name", "x"}}));
  auto e = nlohmann::json::parse(error.substr(0, error.size() - 1), nullptr, false);
  EXPECT_EQ(e["error"], errors::kRuleNotFound);
  EXPECT_EQ(e["parameters"]["name"], "x");
}

TEST(EncodeReplyTest, InvalidUtf8IsReplacedNotThrown) {
  // An executable path is bytes, not UTF-8.
  std::string bytes = EncodeReply(Reply::Ok({{"exe", "/tmp/\xff\xfe"}}));
  auto parsed = nlohmann::json::parse(bytes.substr(0, bytes.size() - 1), nullptr, false);
  ASSERT_FALSE(parsed.is_discarded());
  EXPECT_EQ(parsed["parameters"]["exe"], "/tmp/\xef\xbf\xbd\xef\xbf\xbd");
}

}  // namespace
}  // namespace tollgate::control
