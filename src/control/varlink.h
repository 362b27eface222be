// The varlink wire format of tollgated's control API (proto/io.tollgate.Control.varlink): a
// stream of NUL-terminated JSON objects. MessageFramer cuts the stream into messages, ParseCall
// turns one into a Call, EncodeReply writes a reply. The ControlServer (control_server.h) calls
// them for every connection; the fuzz target feeds them raw bytes. Nothing here throws: JSON is
// parsed with exceptions disabled and every value is type-checked before it is read, because the
// bytes come from any member of the admin group and a malformed request must cost only an error.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace tollgate::control {

inline constexpr char kInterfaceName[] = "io.tollgate.Control";
inline constexpr char kServiceInterfaceName[] = "org.varlink.service";
// A request (one JSON message, without its NUL) may be at most this long; a rule or a query is a
// few hundred bytes, so anything near this is a mistake or an attack.
inline constexpr size_t kMaxRequestBytes = 64 * 1024;

// Error names (the interface file lists the io.tollgate.Control ones with their parameters).
namespace errors {
inline constexpr char kNotAuthorized[] = "io.tollgate.Control.NotAuthorized";
inline constexpr char kRuleInvalid[] = "io.tollgate.Control.RuleInvalid";
inline constexpr char kRuleNotFound[] = "io.tollgate.Control.RuleNotFound";
inline constexpr char kRuleNotManaged[] = "io.tollgate.Control.RuleNotManaged";
inline constexpr char kReloadFailed[] = "io.tollgate.Control.ReloadFailed";
inline constexpr char kInvalidParameter[] = "io.tollgate.Control.InvalidParameter";
inline constexpr char kFlowLogUnavailable[] = "io.tollgate.Control.FlowLogUnavailable";
inline constexpr char kRequestTooLarge[] = "io.tollgate.Control.RequestTooLarge";
inline constexpr char kInvalidRequest[] = "io.tollgate.Control.InvalidRequest";
inline constexpr char kSubscriberTooSlow[] = "io.tollgate.Control.SubscriberTooSlow";
inline constexpr char kTooManyConnections[] = "io.tollgate.Control.TooManyConnections";
// The standard errors every varlink service uses.
inline constexpr char kInterfaceNotFound[] = "org.varlink.service.InterfaceNotFound";
inline constexpr char kMethodNotFound[] = "org.varlink.service.MethodNotFound";
inline constexpr char kMethodNotImplemented[] = "org.varlink.service.MethodNotImplemented";
inline constexpr char kStdInvalidParameter[] = "org.varlink.service.InvalidParameter";
inline constexpr char kExpectedMore[] = "org.varlink.service.ExpectedMore";
}  // namespace errors

// Splits a byte stream into NUL-terminated messages, holding at most one incomplete message of up
// to `max_message` bytes (plus what the last read brought).
class MessageFramer {
 public:
  enum class Result { kNone, kMessage, kTooLarge };

  explicit MessageFramer(size_t max_message = kMaxRequestBytes) : max_(max_message) {}
  void Append(std::string_view bytes);
  // The next complete message, without its NUL, into `*message`. kTooLarge when the next message
  // (complete or not) is longer than the limit: the stream cannot be resynchronised safely, so the
  // caller answers RequestTooLarge and closes.
  Result Next(std::string* message);
  size_t buffered() const { return buffer_.size() - start_; }

 private:
  std::string buffer_;
  size_t start_ = 0;    // first byte not yet returned
  size_t scanned_ = 0;  // bytes from start_ known to hold no NUL
  size_t max_;
};

// One call: {"method": "...", "parameters": {...}, "more": bool, "oneway": bool}.
struct Call {
  std::string method;                                    // "io.tollgate.Control.GetStatus"
  nlohmann::json parameters = nlohmann::json::object();  // always an object
  bool more = false;
  bool oneway = false;
};

// A reply or an error. `error` empty means success.
struct Reply {
  std::string error;
  nlohmann::json parameters = nlohmann::json::object();
  bool continues = false;

  static Reply Ok(nlohmann::json parameters = nlohmann::json::object()) {
    Reply r;
    r.parameters = std::move(parameters);
    return r;
  }
  static Reply Error(std::string name, nlohmann::json parameters = nlohmann::json::object()) {
    Reply r;
    r.error = std::move(name);
    r.parameters = std::move(parameters);
    return r;
  }
  bool ok() const { return error.empty(); }
};

// Parses one message. Failure is an InvalidRequest reply saying what is wrong.
std::optional<Call> ParseCall(std::string_view text, Reply* error);

// The reply as sent: compact JSON and the terminating NUL. Strings that are not valid UTF-8 (an
// executable path can be any bytes) have the bad bytes replaced, never an exception.
std::string EncodeReply(const Reply& reply);

// Dumps JSON without ever throwing (invalid UTF-8 replaced by U+FFFD).
std::string DumpJson(const nlohmann::json& value);

}  // namespace tollgate::control
