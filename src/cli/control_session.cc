#include "cli/control_session.h"

#include <unistd.h>

#include "cli/exit_codes.h"
#include "common/config.h"

namespace tollgate::cli {

using nlohmann::json;

Expected<ControlTarget> ResolveControlSocket(const std::optional<std::string>& socket_flag,
                                             const std::optional<std::string>& config_flag,
                                             const char* env_value, std::string* warning) {
  if (socket_flag) return ControlTarget{*socket_flag, "--socket"};
  if (env_value != nullptr && *env_value != '\0') {
    return ControlTarget{env_value, kControlSocketEnv};
  }
  const bool explicit_config = config_flag.has_value();
  const std::string path = explicit_config ? *config_flag : kDefaultConfigPath;
  auto config = LoadConfigOrDefaults(path, explicit_config);
  if (!config) {
    if (explicit_config) return Unexpected(config.error());
    if (warning != nullptr) {
      *warning = config.error().message + " (using " + kDefaultControlSocket +
                 "; pass --socket or --config to choose)";
    }
    return ControlTarget{kDefaultControlSocket, "default"};
  }
  std::string chosen_by = config->source.empty() ? "default" : "settings " + config->source;
  return ControlTarget{config->tollgate.runtime_dir + "/control.sock", chosen_by};
}

bool InstallProbe::Installed() const {
  for (const auto& list : {daemon_paths, unit_paths}) {
    for (const std::string& p : list) {
      if (::access(p.c_str(), F_OK) == 0) return true;
    }
  }
  return false;
}

Failure DescribeTransportError(const Error& error, const std::string& socket_path,
                               const std::function<bool()>& installed) {
  Failure f;
  switch (error.code) {
    case ErrorCode::kNotFound:
      if (installed && !installed()) {
        f.exit_code = kExitNotInstalled;
        f.kind = "not_installed";
        f.message = "tollgated is not installed: no control socket at " + socket_path +
                    ", and neither the tollgated program nor the tollgated.socket unit was "
                    "found.\nInstall it (`apt install ./tollgate_*.deb`, or `cmake --install "
                    "BUILD_DIR` and `systemctl daemon-reload`), then `systemctl enable --now "
                    "tollgated.socket`. If it runs elsewhere, pass --socket PATH or set " +
                    kControlSocketEnv + ".";
      } else {
        f.exit_code = kExitNotRunning;
        f.kind = "not_running";
        f.message = "tollgated is not running: no control socket at " + socket_path +
                    ".\nStart it with `sudo systemctl start tollgated.socket`; if it uses another "
                    "runtime directory, pass --config FILE or --socket PATH.";
      }
      break;
    case ErrorCode::kUnavailable:
      f.exit_code = kExitNotRunning;
      f.kind = "not_running";
      f.message = "tollgated is not running: nothing accepts connections on " + socket_path + " (" +
                  error.message +
                  ").\nStart it with `sudo systemctl start "
                  "tollgated.socket`; `systemctl status tollgated.socket tollgated` shows why it "
                  "stopped.";
      break;
    case ErrorCode::kPermissionDenied:
      f.exit_code = kExitNoPermission;
      f.kind = "permission_denied";
      f.message = "permission denied on the control socket " + socket_path + " (" + error.message +
                  ").\nOnly root and members of the group " + kAdminGroup +
                  " may use it: run the command with sudo, or `sudo usermod -aG " + kAdminGroup +
                  " $USER` and log in again.";
      break;
    case ErrorCode::kTimeout:
      f.exit_code = kExitTimeout;
      f.kind = "timeout";
      f.message = "tollgated did not answer in time on " + socket_path + " (" + error.message +
                  ").\nIt may be overloaded or stuck: see `journalctl -u tollgated`; a longer "
                  "--timeout SECONDS may help.";
      break;
    case ErrorCode::kProtocol:
      f.exit_code = kExitBadReply;
      f.kind = "bad_reply";
      f.message = error.message +
                  ".\nIf it happens at once on every command, the daemon may be "
                  "refusing this user (only root and " +
                  kAdminGroup + " are served); `journalctl -u tollgated` says why.";
      break;
    case ErrorCode::kTooLarge:
    case ErrorCode::kMalformed:
      f.exit_code = kExitBadReply;
      f.kind = "bad_reply";
      f.message = "tollgated's answer on " + socket_path + " cannot be used: " + error.message +
                  ".\nIs " + socket_path +
                  " really tollgated's control socket, of the same "
                  "version as this tollgate (" TOLLGATE_VERSION ")?";
      break;
    case ErrorCode::kInvalidArgument:
      f.exit_code = kExitUsage;
      f.kind = "usage";
      f.message = error.message;
      break;
    default:
      f.exit_code = kExitNotRunning;
      f.kind = "io";
      f.message = "cannot talk to tollgated on " + socket_path + ": " + error.message;
      break;
  }
  return f;
}

std::string FormatParameters(const json& parameters) {
  if (!parameters.is_object() || parameters.empty()) return "";
  std::string out;
  for (const auto& [key, value] : parameters.items()) {
    if (!out.empty()) out += ", ";
    out += key + " " + value.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return out;
}

Failure DescribeVarlinkError(const VarlinkReply& reply) {
  Failure f;
  f.varlink_error = reply.error;
  f.parameters = reply.parameters;
  const std::string prefix = std::string(kControlInterface) + ".";
  std::string short_name =
      reply.error.rfind(prefix, 0) == 0 ? reply.error.substr(prefix.size()) : reply.error;
  auto text = [&](const char* key) -> std::string {
    auto it = reply.parameters.find(key);
    return it != reply.parameters.end() && it->is_string() ? it->get<std::string>() : "";
  };
  auto number = [&](const char* key) -> std::string {
    auto it = reply.parameters.find(key);
    return it != reply.parameters.end() && it->is_number() ? it->dump() : "?";
  };
  if (short_name == "NotAuthorized") {
    f.exit_code = kExitRefused;
    f.kind = "refused";
    std::string reason = text("reason");
    f.message = "tollgated refused the request" + (reason.empty() ? "" : ": " + reason) +
                ".\nOnly root and members of the group " + kAdminGroup +
                " may use the control API: run the command with sudo, or `sudo usermod -aG " +
                kAdminGroup + " $USER` and log in again.";
    return f;
  }
  f.exit_code = kExitDaemonError;
  f.kind = "daemon_error";
  // The errors whose parameters say it all get a sentence; the rest print name and parameters.
  if (short_name == "RuleInvalid" || short_name == "ReloadFailed") {
    f.message = (short_name == "RuleInvalid" ? "the rule was refused: " : "reload failed: ") +
                text("message");
    if (short_name == "ReloadFailed") f.message += "\nThe rules in force stay in force.";
  } else if (short_name == "RuleNotFound") {
    f.message = "no rule named \"" + text("name") + "\" (`tollgate rules list` shows them)";
  } else if (short_name == "RuleNotManaged") {
    f.message = "rule \"" + text("name") + "\" is defined in " + text("origin") +
                ", not by `tollgate rules add`; edit that file and run `tollgate reload`";
  } else if (short_name == "SubscriberTooSlow") {
    f.message = "tollgated closed the live stream: this client fell more than " +
                number("queue_limit") +
                " decisions behind. Run it again; --action narrows the stream";
  } else if (short_name == "TooManyConnections") {
    f.message = "tollgated has too many control connections open (limit " + number("limit") +
                "); try again shortly";
  } else if (short_name == "RequestTooLarge") {
    f.message = "the request is larger than tollgated accepts (" + number("limit") + " bytes)";
  } else if (short_name == "FlowLogUnavailable") {
    f.message = "the flow log is unavailable: " + text("reason");
  } else if (short_name == "InvalidParameter") {
    f.message = "tollgated refused parameter " + text("parameter") + ": " + text("message");
  } else {
    std::string params = FormatParameters(reply.parameters);
    f.message = "tollgated answered with error " + reply.error +
                (params.empty() ? "" : " (" + params + ")");
    if (reply.error == "org.varlink.service.MethodNotFound") {
      f.message += "\nThe daemon does not know this method: is it older than this tollgate (" +
                   std::string(TOLLGATE_VERSION) + ")?";
    }
  }
  return f;
}

json FailureJson(const Failure& failure) {
  json error = {{"kind", failure.kind}, {"message", failure.message}};
  if (!failure.varlink_error.empty()) {
    error["varlink_error"] = failure.varlink_error;
    error["parameters"] = failure.parameters;
  }
  return json{{"error", error}, {"exit_code", failure.exit_code}};
}

}  // namespace tollgate::cli
