// The control API's request path on raw bytes: NUL framing, JSON call parsing, parameter checks
// and dispatch (to a backend that answers everything), and reply encoding. What a member of the
// admin group can send to control.sock.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "control/dispatch.h"
#include "control/varlink.h"

namespace {

using tollgate::control::Reply;

class AnswerAll final : public tollgate::control::ControlBackend {
 public:
  Reply GetStatus() override { return Reply::Ok(); }
  Reply ListRules() override { return Reply::Ok(); }
  Reply AddRule(const std::string& toml) override { return Reply::Ok({{"toml", toml}}); }
  Reply RemoveRule(const std::string& name) override { return Reply::Ok({{"name", name}}); }
  Reply Reload() override { return Reply::Ok(); }
  Reply TestFlow(const tollgate::control::FlowSpec& flow) override {
    std::string parameter, message;
    auto q = tollgate::control::QuestionFromSpec(flow, &parameter, &message);
    return q ? Reply::Ok() : Reply::Error("x", {{"parameter", parameter}});
  }
  Reply QueryFlows(const tollgate::flowlog::FlowQuery& query) override {
    return Reply::Ok({{"limit", query.limit}});
  }
  Reply GetMetrics() override { return Reply::Ok(); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static AnswerAll backend;
  // The first byte picks the read size, so split reads are covered too.
  if (size == 0) return 0;
  const size_t chunk = 1 + data[0] % 64;
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  tollgate::control::MessageFramer framer(4096);
  std::string message;
  while (!bytes.empty()) {
    const size_t n = std::min(chunk, bytes.size());
    framer.Append(bytes.substr(0, n));
    bytes.remove_prefix(n);
    for (;;) {
      auto r = framer.Next(&message);
      if (r == tollgate::control::MessageFramer::Result::kNone) break;
      if (r == tollgate::control::MessageFramer::Result::kTooLarge) return 0;
      Reply reply;
      auto call = tollgate::control::ParseCall(message, &reply);
      if (call) {
        if (call->method == tollgate::control::kSubscribeMethod) {
          (void)tollgate::control::CheckSubscribe(*call, &reply);
        } else {
          reply = tollgate::control::Dispatch(*call, backend);
        }
      }
      std::string encoded = tollgate::control::EncodeReply(reply);
      if (encoded.empty() || encoded.back() != '\0') __builtin_trap();
    }
  }
  return 0;
}
