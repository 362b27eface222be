// Conversions between the daemon's records and the control API's JSON types: a DecisionRecord
// (engine.h) becomes a flowlog::FlowRecord for the log and for live subscribers, a FlowRecord
// becomes a varlink `Decision`, a varlink `Flow` becomes a FlowQuestion for TestFlow, and RFC 3339
// times go both ways. Used by the ControlServer, the dispatcher and tollgated's backend.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "analysis/engine.h"
#include "common/flow.h"
#include "flowlog/flow_log.h"

namespace tollgate::control {

// A `Flow` as the API describes it (TestFlow's parameter; a Decision's flow).
struct FlowSpec {
  std::string protocol;   // tcp | udp | icmp | icmpv6
  std::string direction;  // outbound | inbound
  std::string src;
  int64_t src_port = 0;
  std::string dst;
  int64_t dst_port = 0;
  std::optional<int64_t> uid;
  std::optional<std::string> name;
  std::optional<std::string> sni;
};

// "2024-05-01T12:00:00.123456Z" (micros = true) or "2024-05-01T12:00:00Z".
std::string FormatRfc3339(int64_t time_us, bool micros = true);
// Accepts "YYYY-MM-DDTHH:MM:SS", optional fraction (up to 9 digits), then "Z" or "+HH:MM"/"-HH:MM"
// ("t"/"z" and a space for "T" too). Microseconds since the epoch; nullopt when malformed.
std::optional<int64_t> ParseRfc3339(std::string_view text);
int64_t ToUnixMicros(analysis::WallTime time);

// The record the flow log keeps. The process fields are filled when the engine looked the process
// up; otherwise the log's enricher may do it later.
flowlog::FlowRecord ToFlowRecord(const analysis::DecisionRecord& record);

// The API's `Decision` object.
nlohmann::json DecisionJson(const flowlog::FlowRecord& record);

// The question a Flow describes; `*bad_parameter` and `*message` say what is wrong otherwise.
std::optional<FlowQuestion> QuestionFromSpec(const FlowSpec& spec, std::string* bad_parameter,
                                             std::string* message);
// The question a logged record describes (for attributing its process after the verdict).
std::optional<FlowQuestion> QuestionFromRecord(const flowlog::FlowRecord& record);

// "tcp" -> 6 ...; nullopt for anything else.
std::optional<uint8_t> ParseProtocolName(std::string_view name);

// A TLS record holding a minimal ClientHello that names `sni`: what TestFlow hands the engine to
// stand for "the client sent this SNI", so the engine's own reader learns the name.
std::vector<uint8_t> ClientHelloWithSni(std::string_view sni);

}  // namespace tollgate::control
