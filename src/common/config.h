// The settings file, /etc/tollgate/tollgate.toml: what the daemon and the filter read at start-up
// (and the daemon again on reload). tollgated, tollgate-filter and the CLI call
// LoadConfigOrDefaults; tests and the fuzz target call ParseConfig. Every field carries its
// documented default, so a missing file and an empty file mean the same thing.
// docs/configuration.md describes each setting.
//
// The loader is strict on purpose: an unknown key or table, a wrong type or an out-of-range value
// is an error `file:line:col: what was expected, got what` rather than a silent default, because a
// typo in a firewall's settings (`fallbak = "fail_closed"`) must not quietly leave it failing open.
// No exception leaves this API; toml++ parse errors are caught inside and returned as Errors.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/flow.h"
#include "common/log.h"

namespace tollgate {

inline constexpr char kDefaultConfigPath[] = "/etc/tollgate/tollgate.toml";

// Settings files are written by root and small; anything bigger is a mistake (a wrong path).
inline constexpr size_t kMaxConfigFileBytes = 1 << 20;

// One entry of [[daemon.allow_exe]]: a peer executable the daemon accepts, by path and content.
struct AllowedExe {
  std::string path;    // absolute
  std::string sha256;  // 64 hex digits, stored lowercase
};

// A contiguous range of NFQUEUE numbers the filter reads ("0" or "0-3").
struct QueueRange {
  uint16_t first = 0;
  uint16_t last = 0;
  bool operator==(const QueueRange&) const = default;
};

// [tollgate]: names shared by every process.
struct TollgateSettings {
  // The Unix group that authorises clients and owns the runtime directory (the "app group").
  std::string group = "tollgate";
  // Where analysis.sock and control.sock live. When the file does not set it, it is derived from
  // the group as /run/<group>, so renaming the group moves the sockets with it.
  std::string runtime_dir = "/run/tollgate";
  // The Unix group whose members may use the control API (control.sock: `tollgate status`,
  // `tollgate rules add`, ...) besides root. A group that does not exist means root only.
  std::string admin_group = "tollgate-admin";
};

// [daemon]: tollgated.
struct DaemonSettings {
  uint32_t idle_exit_seconds = 0;  // 0 = never exit when idle
  uint32_t daemon_uid = 0;         // the uid clients accept as the daemon's peer
  LogLevel log_level = LogLevel::kInfo;
  Action default_action = Action::kAllow;  // allow, deny or reject; never inspect
  std::string rules_dir = "/etc/tollgate/rules.d";
  // Empty = any executable run by root or a member of the group may connect.
  std::vector<AllowedExe> allow_exe;
  // The flow log (SQLite): every decision, for `tollgate flows`. "" turns it off.
  std::string flow_log = "/var/lib/tollgate/flows.db";
  uint32_t flow_log_max_age_days = 30;  // older records are deleted; 0 = no age limit
  uint32_t flow_log_max_mb = 256;       // past this the oldest are deleted; 0 = no size limit
};

// [filter]: tollgate-filter.
struct FilterSettings {
  uint32_t question_deadline_ms = 200;
  FallbackPolicy fallback = FallbackPolicy::kFailOpen;
  uint32_t max_pending_flows = 65536;
  QueueRange queues;
  bool inbound = false;  // also ask about new inbound flows
  // Decide a new flow from a verdict the daemon marked reusable for its destination (direction,
  // protocol, remote address, destination port, uid, and the names DNS gave the address)
  // instead of asking again; reported to the daemon afterwards (docs/configuration.md).
  bool reuse_verdicts = true;
  uint32_t inspect_max_bytes = 2048;
  // After asking, read the daemon's answers without sleeping for up to this long (0 = never):
  // a verdict usually arrives sooner than a sleeping filter would be woken for it.
  uint32_t reply_spin_us = 0;
};

struct Config {
  TollgateSettings tollgate;
  DaemonSettings daemon;
  FilterSettings filter;
  // [blocklists]: name -> absolute path of a hosts-format or domain-per-line file. Rules refer to
  // a list by its name (`list = "ads"`); tollgated loads them at start and on every reload.
  std::map<std::string, std::string> blocklists;
  // The file these settings came from; empty when they are the built-in defaults. For logs and
  // `tollgate status`, so a person can tell which file is in force.
  std::string source;
};

// Limits, shared with the docs and the tests so the three cannot drift apart.
inline constexpr uint32_t kMaxIdleExitSeconds = 86400;
inline constexpr uint32_t kMinQuestionDeadlineMs = 1;
inline constexpr uint32_t kMaxQuestionDeadlineMs = 60000;
inline constexpr uint32_t kMaxPendingFlowsLimit = 1u << 22;
inline constexpr uint32_t kMaxInspectBytes = 65535;
inline constexpr uint32_t kMaxReplySpinUs = 1000;
inline constexpr uint32_t kMaxFlowLogAgeDays = 3650;
inline constexpr uint32_t kMaxFlowLogMb = 1u << 20;

// Parses settings text. `source_name` is what error messages call the text (usually its path).
// Errors have code kInvalidArgument (a setting is wrong) or kMalformed (not TOML).
Expected<Config> ParseConfig(std::string_view text, const std::string& source_name);

// Reads and parses the file at `path`. A missing file is kNotFound; unreadable is kSystem.
Expected<Config> LoadConfig(const std::string& path);

// What the programs call. A path given explicitly (--config) must exist; the default path may be
// absent, which means "all defaults", so a fresh install runs without a settings file. Any other
// failure (unreadable, invalid) is an error in both cases: a broken file is never replaced by
// defaults behind the operator's back.
Expected<Config> LoadConfigOrDefaults(const std::string& path, bool path_was_explicit);

}  // namespace tollgate
