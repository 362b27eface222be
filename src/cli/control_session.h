// Where `tollgate` finds tollgated's control socket, and what it tells the operator when it gets
// no answer. The control commands (control_commands.cc) call ResolveControlSocket once and pass
// every failed connect, call or varlink error reply through Describe*, so each way of failing has
// one message that says what happened and what to do, and one exit code (exit_codes.h,
// docs/cli.md). Kept apart from the commands so the tests can check every message.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/varlink_client.h"
#include "common/error.h"

namespace tollgate::cli {

inline constexpr char kDefaultControlSocket[] = "/run/tollgate/control.sock";
inline constexpr char kControlSocketEnv[] = "TOLLGATE_CONTROL_SOCKET";
inline constexpr char kControlInterface[] = "io.tollgate.Control";
inline constexpr char kAdminGroup[] = "tollgate-admin";

struct ControlTarget {
  std::string socket_path;
  std::string chosen_by;  // "--socket", "TOLLGATE_CONTROL_SOCKET", "settings FILE", "default"
};

// Precedence: --socket, then $TOLLGATE_CONTROL_SOCKET (`env_value`, may be null), then
// <runtime_dir>/control.sock from the settings (--config FILE, or the default settings file when
// it exists), then /run/tollgate/control.sock. An explicit --config that cannot be loaded is an
// error (kNotFound, kInvalidArgument, ...); the default settings file that cannot be read
// (an unprivileged user, mode 0640) falls back to the default socket, with `*warning` set.
Expected<ControlTarget> ResolveControlSocket(const std::optional<std::string>& socket_flag,
                                             const std::optional<std::string>& config_flag,
                                             const char* env_value, std::string* warning);

// Whether tollgated looks installed: its binary or its socket unit exists at one of the usual
// places. Only used to word the "no socket" message, so a guess is good enough.
struct InstallProbe {
  std::vector<std::string> daemon_paths = {"/usr/sbin/tollgated", "/usr/local/sbin/tollgated",
                                           "/usr/bin/tollgated", "/usr/local/bin/tollgated"};
  std::vector<std::string> unit_paths = {
      "/etc/systemd/system/tollgated.socket", "/run/systemd/system/tollgated.socket",
      "/usr/lib/systemd/system/tollgated.socket", "/lib/systemd/system/tollgated.socket",
      "/usr/local/lib/systemd/system/tollgated.socket"};
  bool Installed() const;
};

// What the operator is told, and the exit code.
struct Failure {
  int exit_code = 0;
  std::string kind;     // stable, for --json: "not_installed", "not_running", "permission_denied",
                        // "refused", "daemon_error", "timeout", "bad_reply", "usage", "io"
  std::string message;  // one or more lines, no trailing newline
  std::string varlink_error;                             // daemon errors only
  nlohmann::json parameters = nlohmann::json::object();  // daemon errors only
};

// A failed Connect/Send/Receive (VarlinkClient's error codes) on `socket_path`.
// `installed` is asked only when the socket does not exist.
Failure DescribeTransportError(const Error& error, const std::string& socket_path,
                               const std::function<bool()>& installed);

// A varlink error reply. NotAuthorized is "refused" (kExitRefused); everything else, ours or
// org.varlink.service.*, is a daemon error that prints its name and parameters.
Failure DescribeVarlinkError(const VarlinkReply& reply);

// Parameters of an error, readably: `name "x", origin "/etc/tollgate/rules.d/a.toml:3:8"`.
std::string FormatParameters(const nlohmann::json& parameters);

// The failure as JSON for --json callers: {"error": {"kind", "message", ...}, "exit_code"}.
nlohmann::json FailureJson(const Failure& failure);

}  // namespace tollgate::cli
