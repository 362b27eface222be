#include "control/dispatch.h"

#include <initializer_list>
#include <utility>

namespace tollgate::control {
namespace {

// Reads the parameters of one call, recording the first problem as the reply to send.
class Params {
 public:
  Params(const nlohmann::json& parameters, std::string prefix = "")
      : p_(parameters), prefix_(std::move(prefix)) {}

  bool failed() const { return error_.has_value(); }
  Reply error() const { return *error_; }

  // Every key must be one of `known`: a misspelt filter must not silently widen a query.
  void OnlyThese(std::initializer_list<const char*> known) {
    for (auto it = p_.begin(); it != p_.end() && !failed(); ++it) {
      bool found = false;
      for (const char* k : known) found |= it.key() == k;
      if (!found) Wrong(it.key(), "unknown parameter");
    }
  }

  const nlohmann::json* Find(const char* key, bool required) {
    if (failed()) return nullptr;
    auto it = p_.find(key);
    if (it == p_.end() || it->is_null()) {
      if (required) Wrong(key, "missing");
      return nullptr;
    }
    return &*it;
  }

  void String(const char* key, std::string* out) {
    std::optional<std::string> value;
    OptionalString(key, &value, /*required=*/true);
    if (value) *out = std::move(*value);
  }
  void OptionalString(const char* key, std::optional<std::string>* out, bool required = false) {
    const nlohmann::json* v = Find(key, required);
    if (v == nullptr) return;
    if (!v->is_string()) return Wrong(key, "must be a string");
    *out = v->get<std::string>();
  }
  void Int(const char* key, int64_t* out) {
    std::optional<int64_t> value;
    OptionalInt(key, &value, /*required=*/true);
    if (value) *out = *value;
  }
  void OptionalInt(const char* key, std::optional<int64_t>* out, bool required = false) {
    const nlohmann::json* v = Find(key, required);
    if (v == nullptr) return;
    if (v->is_number_unsigned()) {
      uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Wrong(key, "is too large");
      *out = static_cast<int64_t>(u);
      return;
    }
    if (!v->is_number_integer()) return Wrong(key, "must be an integer");
    *out = v->get<int64_t>();
  }
  const nlohmann::json* Object(const char* key) {
    const nlohmann::json* v = Find(key, true);
    if (v == nullptr) return nullptr;
    if (!v->is_object()) {
      Wrong(key, "must be an object");
      return nullptr;
    }
    return v;
  }
  // A value of the right type that is still unusable.
  void Bad(const std::string& key, std::string message) {
    if (failed()) return;
    error_ = Reply::Error(errors::kInvalidParameter,
                          {{"parameter", prefix_ + key}, {"message", std::move(message)}});
  }
  void Adopt(const Params& inner) {
    if (!failed() && inner.failed()) error_ = inner.error_;
  }

 private:
  void Wrong(const std::string& key, const char* what) {
    if (failed()) return;
    error_ = Reply::Error(errors::kStdInvalidParameter,
                          {{"parameter", prefix_ + key}, {"message", what}});
  }

  const nlohmann::json& p_;
  std::string prefix_;
  std::optional<Reply> error_;
};

bool IsActionName(std::string_view a) {
  return a == "allow" || a == "deny" || a == "reject" || a == "inspect" || a == "fallback";
}

Reply GetInterfaceDescription(const Call& call) {
  Params p(call.parameters);
  p.OnlyThese({"interface"});
  std::string interface;
  p.String("interface", &interface);
  if (p.failed()) return p.error();
  if (interface == kInterfaceName) {
    return Reply::Ok({{"description", std::string(InterfaceDescription())}});
  }
  if (interface == kServiceInterfaceName) {
    // The standard service interface, as every varlink service describes it.
    static constexpr char kService[] =
        "interface org.varlink.service\n"
        "method GetInfo() -> (vendor: string, product: string, version: string, url: string, "
        "interfaces: []string)\n"
        "method GetInterfaceDescription(interface: string) -> (description: string)\n"
        "error InterfaceNotFound (interface: string)\n"
        "error MethodNotFound (method: string)\n"
        "error MethodNotImplemented (method: string)\n"
        "error InvalidParameter (parameter: string)\n"
        "error PermissionDenied ()\n"
        "error ExpectedMore ()\n";
    return Reply::Ok({{"description", kService}});
  }
  return Reply::Error(errors::kInterfaceNotFound, {{"interface", interface}});
}

Reply TestFlow(const Call& call, ControlBackend& backend) {
  Params p(call.parameters);
  p.OnlyThese({"flow"});
  const nlohmann::json* flow = p.Object("flow");
  if (p.failed()) return p.error();
  Params f(*flow, "flow.");
  f.OnlyThese(
      {"protocol", "direction", "src", "src_port", "dst", "dst_port", "uid", "name", "sni"});
  FlowSpec spec;
  f.String("protocol", &spec.protocol);
  f.String("direction", &spec.direction);
  f.String("src", &spec.src);
  f.Int("src_port", &spec.src_port);
  f.String("dst", &spec.dst);
  f.Int("dst_port", &spec.dst_port);
  f.OptionalInt("uid", &spec.uid);
  f.OptionalString("name", &spec.name);
  f.OptionalString("sni", &spec.sni);
  if (f.failed()) return f.error();
  return backend.TestFlow(spec);
}

Reply QueryFlows(const Call& call, ControlBackend& backend) {
  Params p(call.parameters);
  p.OnlyThese({"since", "action", "exe", "host", "limit"});
  std::optional<std::string> since;
  std::optional<int64_t> limit;
  flowlog::FlowQuery query;
  p.OptionalString("since", &since);
  p.OptionalString("action", &query.action);
  p.OptionalString("exe", &query.exe);
  p.OptionalString("host", &query.host);
  p.OptionalInt("limit", &limit);
  if (since) {
    query.since_us = ParseRfc3339(*since);
    if (!query.since_us) {
      p.Bad("since",
            "must be an RFC 3339 time such as 2024-05-01T12:00:00Z, got \"" + *since + "\"");
    }
  }
  if (query.action && !IsActionName(*query.action)) {
    p.Bad("action",
          "must be allow, deny, reject, inspect or fallback, got \"" + *query.action + "\"");
  }
  if (limit) {
    if (*limit < 1 || *limit > 10000)
      p.Bad("limit", "must be from 1 to 10000");
    else
      query.limit = static_cast<size_t>(*limit);
  }
  if (p.failed()) return p.error();
  return backend.QueryFlows(query);
}

Reply NoParameters(const Call& call, Reply (ControlBackend::*method)(), ControlBackend& backend) {
  Params p(call.parameters);
  p.OnlyThese({});
  if (p.failed()) return p.error();
  return (backend.*method)();
}

}  // namespace

std::optional<SubscribeRequest> CheckSubscribe(const Call& call, Reply* error) {
  Params p(call.parameters);
  p.OnlyThese({"action"});
  SubscribeRequest request;
  p.OptionalString("action", &request.action);
  if (request.action && !IsActionName(*request.action)) {
    p.Bad("action",
          "must be allow, deny, reject, inspect or fallback, got \"" + *request.action + "\"");
  }
  if (p.failed()) {
    *error = p.error();
    return std::nullopt;
  }
  if (!call.more) {
    // A stream of replies needs "more": true; without it there would be no way to answer.
    *error = Reply::Error(errors::kExpectedMore);
    return std::nullopt;
  }
  return request;
}

Reply Dispatch(const Call& call, ControlBackend& backend) {
  const std::string& m = call.method;
  if (m == "org.varlink.service.GetInfo") {
    Params p(call.parameters);
    p.OnlyThese({});
    if (p.failed()) return p.error();
    return Reply::Ok({{"vendor", "Tollgate"},
                      {"product", "tollgated"},
                      {"version", TOLLGATE_VERSION},
                      {"url", "https://github.com/tollgate/tollgate"},
                      {"interfaces", {kServiceInterfaceName, kInterfaceName}}});
  }
  if (m == "org.varlink.service.GetInterfaceDescription") return GetInterfaceDescription(call);

  const std::string prefix = std::string(kInterfaceName) + ".";
  if (m.compare(0, prefix.size(), prefix) != 0) {
    const size_t dot = m.rfind('.');
    if (dot == std::string::npos || dot == 0) {
      return Reply::Error(errors::kMethodNotFound, {{"method", m}});
    }
    std::string interface = m.substr(0, dot);
    if (interface == kServiceInterfaceName) {
      return Reply::Error(errors::kMethodNotFound, {{"method", m}});
    }
    return Reply::Error(errors::kInterfaceNotFound, {{"interface", interface}});
  }
  const std::string name = m.substr(prefix.size());
  if (name == "GetStatus") return NoParameters(call, &ControlBackend::GetStatus, backend);
  if (name == "ListRules") return NoParameters(call, &ControlBackend::ListRules, backend);
  if (name == "Reload") return NoParameters(call, &ControlBackend::Reload, backend);
  if (name == "GetMetrics") return NoParameters(call, &ControlBackend::GetMetrics, backend);
  if (name == "AddRule") {
    Params p(call.parameters);
    p.OnlyThese({"toml"});
    std::string toml;
    p.String("toml", &toml);
    if (p.failed()) return p.error();
    return backend.AddRule(toml);
  }
  if (name == "RemoveRule") {
    Params p(call.parameters);
    p.OnlyThese({"name"});
    std::string rule;
    p.String("name", &rule);
    if (p.failed()) return p.error();
    return backend.RemoveRule(rule);
  }
  if (name == "TestFlow") return TestFlow(call, backend);
  if (name == "QueryFlows") return QueryFlows(call, backend);
  if (name == "Subscribe") {
    // The server answers Subscribe itself; reaching here means a caller skipped it.
    Reply error;
    if (!CheckSubscribe(call, &error)) return error;
    return Reply::Error(errors::kMethodNotImplemented, {{"method", m}});
  }
  return Reply::Error(errors::kMethodNotFound, {{"method", m}});
}

}  // namespace tollgate::control
