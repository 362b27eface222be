#include "common/config.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

// Keeps the default TOML_EXCEPTIONS=1 (see common/toml_report.h).
#include <toml++/toml.h>

#include "common/toml_report.h"

namespace tollgate {
namespace {

using toml_report::Must;
using toml_report::Problems;
using toml_report::Quote;

struct Field {
  std::string_view key;
  std::function<void(const toml::node&)> read;
};

// Hands each known key of `table` to its reader and reports every other key: a typo must be an
// error, not a setting silently left at its default. `prefix` names the table in messages ("" for
// the root, "filter." for [filter]).
void ReadFields(const toml::table& table, std::string_view prefix, std::span<const Field> fields,
                Problems& problems) {
  for (auto&& [key, node] : table) {
    // A named copy: clang 14 cannot capture a structured binding in a lambda.
    const std::string_view name = key.str();
    auto known = std::find_if(fields.begin(), fields.end(),
                              [name](const Field& f) { return f.key == name; });
    if (known != fields.end()) {
      known->read(node);
      continue;
    }
    std::string message;
    // "filter." -> "filter"
    std::string_view table_name = prefix.substr(0, prefix.empty() ? 0 : prefix.size() - 1);
    if (node.is_table()) {
      message = "unknown table [" + std::string(prefix) + std::string(key.str()) + "]";
    } else {
      message = "unknown key " + Quote(key.str()) +
                (prefix.empty() ? std::string(" at the top level")
                                : " in [" + std::string(table_name) + "]");
    }
    std::vector<std::string_view> keys;
    for (const Field& f : fields) keys.push_back(f.key);
    message += toml_report::KeyHint(key.str(), keys);
    problems.Add(key.source().begin, std::move(message));
  }
}

void ReadUint32(const toml::node& node, std::string_view name, int64_t min, int64_t max,
                uint32_t* out, Problems& problems) {
  const auto* value = node.as_integer();
  if (value == nullptr || value->get() < min || value->get() > max) {
    problems.Add(
        node.source().begin,
        Must(name, "an integer from " + std::to_string(min) + " to " + std::to_string(max), node));
    return;
  }
  *out = static_cast<uint32_t>(value->get());
}

void ReadBool(const toml::node& node, std::string_view name, bool* out, Problems& problems) {
  const auto* value = node.as_boolean();
  if (value == nullptr) {
    problems.Add(node.source().begin, Must(name, "true or false", node));
    return;
  }
  *out = value->get();
}

template <typename T>
struct Choice {
  std::string_view text;
  T value;
};

// `"a", "b" or "c"`.
template <typename T>
std::string ChoiceList(std::span<const Choice<T>> choices) {
  std::string out;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i > 0) out += i + 1 == choices.size() ? " or " : ", ";
    out += '"';
    out += choices[i].text;
    out += '"';
  }
  return out;
}

template <typename T>
void ReadChoice(const toml::node& node, std::string_view name, std::span<const Choice<T>> choices,
                T* out, Problems& problems) {
  if (const auto* value = node.as_string()) {
    for (const auto& choice : choices) {
      if (value->get() == choice.text) {
        *out = choice.value;
        return;
      }
    }
  }
  problems.Add(node.source().begin, Must(name, ChoiceList(choices), node));
}

// Paths are used as given by processes started with cwd "/", so a relative path would silently
// mean something else; an embedded NUL would silently shorten the path in every system call.
void ReadAbsolutePath(const toml::node& node, std::string_view name, std::string* out,
                      Problems& problems) {
  const auto* value = node.as_string();
  if (value == nullptr || value->get().empty() || value->get()[0] != '/' ||
      value->get().find('\0') != std::string::npos) {
    problems.Add(node.source().begin, Must(name, "an absolute path", node));
    return;
  }
  *out = value->get();
}

// The group name also names the runtime directory (/run/<group>), so it must be a plain name:
// no "/", no "..", not only digits (that reads as a gid).
bool IsGroupName(std::string_view name) {
  if (name.empty() || name.size() > 32) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

bool IsSha256Hex(std::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
}

void ReadQueues(const toml::node& node, QueueRange* out, Problems& problems) {
  constexpr std::string_view kExpected =
      "a queue number from 0 to 65535 or a range like \"0-3\" (first <= last)";
  if (const auto* number = node.as_integer()) {
    if (number->get() >= 0 && number->get() <= 65535) {
      auto q = static_cast<uint16_t>(number->get());
      *out = QueueRange{q, q};
      return;
    }
  } else if (const auto* text = node.as_string()) {
    std::string_view s = text->get();
    size_t dash = s.find('-');
    auto first = toml_report::ParseDecimalUint16(s.substr(0, dash));
    auto last = dash == std::string_view::npos
                    ? first
                    : toml_report::ParseDecimalUint16(s.substr(dash + 1));
    if (first && last && *first <= *last) {
      *out = QueueRange{*first, *last};
      return;
    }
  }
  problems.Add(node.source().begin, Must("filter.queues", kExpected, node));
}

void ReadAllowExe(const toml::node& node, std::vector<AllowedExe>* out, Problems& problems) {
  const auto* entries = node.as_array();
  // An empty array is a valid way to write "no allowlist"; toml++ does not call it one of tables.
  if (entries == nullptr || (!entries->empty() && !entries->is_array_of_tables())) {
    problems.Add(node.source().begin,
                 Must("daemon.allow_exe", "an array of tables ([[daemon.allow_exe]])", node));
    return;
  }
  for (size_t i = 0; i < entries->size(); ++i) {
    const toml::table& entry = *entries->get(i)->as_table();
    std::string name = "daemon.allow_exe[" + std::to_string(i) + "]";
    AllowedExe exe;
    bool have_path = false;
    bool have_sha256 = false;
    const Field fields[] = {
        {"path",
         [&](const toml::node& n) {
           have_path = true;
           ReadAbsolutePath(n, name + ".path", &exe.path, problems);
         }},
        {"sha256",
         [&](const toml::node& n) {
           have_sha256 = true;
           const auto* value = n.as_string();
           if (value == nullptr || !IsSha256Hex(value->get())) {
             problems.Add(n.source().begin,
                          Must(name + ".sha256", "64 hex digits (as printed by sha256sum)", n));
             return;
           }
           exe.sha256 = value->get();
           std::transform(exe.sha256.begin(), exe.sha256.end(), exe.sha256.begin(),
                          [](char c) { return static_cast<char>(std::tolower(c)); });
         }},
    };
    ReadFields(entry, "daemon.allow_exe.", fields, problems);
    // Half an entry is a mistake: a path without a hash would allow any content at that path.
    if (!have_path) {
      problems.Add(entry.source().begin,
                   name + " is missing path (the absolute path of the executable)");
    }
    if (!have_sha256) {
      problems.Add(entry.source().begin,
                   name + " is missing sha256 (64 hex digits, as printed by sha256sum)");
    }
    out->push_back(std::move(exe));
  }
}

// [blocklists]: any key is a list name (it appears in verdict reasons, so the rule-name
// alphabet), any value the absolute path of the list.
void ReadBlocklists(const toml::table& table, std::map<std::string, std::string>* out,
                    Problems& problems) {
  for (auto&& [key, node] : table) {
    std::string_view name = key.str();
    const bool name_ok =
        !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
        });
    if (!name_ok) {
      problems.Add(key.source().begin,
                   "blocklist name " + toml_report::Quote(name) +
                       " must be 1 to 64 letters, digits, \"-\", \"_\" or \".\"");
      continue;
    }
    std::string path;
    ReadAbsolutePath(node, "blocklists." + std::string(name), &path, problems);
    if (!path.empty()) (*out)[std::string(name)] = path;
  }
}

constexpr Choice<LogLevel> kLogLevels[] = {
    {"error", LogLevel::kError}, {"warning", LogLevel::kWarning}, {"notice", LogLevel::kNotice},
    {"info", LogLevel::kInfo},   {"debug", LogLevel::kDebug},
};
constexpr Choice<Action> kDefaultActions[] = {
    {"allow", Action::kAllow}, {"deny", Action::kDeny}, {"reject", Action::kReject}};
constexpr Choice<FallbackPolicy> kFallbacks[] = {{"fail_open", FallbackPolicy::kFailOpen},
                                                 {"fail_closed", FallbackPolicy::kFailClosed}};

// Runs `read` on a section that must be a table, or reports what it is instead.
std::function<void(const toml::node&)> Section(std::string_view name, Problems& problems,
                                               std::function<void(const toml::table&)> read) {
  return [name, &problems, read = std::move(read)](const toml::node& node) {
    if (const auto* table = node.as_table()) {
      read(*table);
    } else {
      problems.Add(node.source().begin, Must(name, "a table ([" + std::string(name) + "])", node));
    }
  };
}

}  // namespace

Expected<Config> ParseConfig(std::string_view text, const std::string& source_name) {
  auto root = toml_report::ParseToml(text, source_name);
  if (!root) return Unexpected(root.error());

  Config config;
  config.source = source_name;
  Problems problems(source_name);
  bool runtime_dir_set = false;

  const Field tollgate_fields[] = {
      {"group",
       [&](const toml::node& n) {
         const auto* value = n.as_string();
         if (value == nullptr || !IsGroupName(value->get())) {
           problems.Add(n.source().begin,
                        Must("tollgate.group",
                             "a group name (letters, digits, \"_\", \"-\", \".\"; starting with "
                             "a letter or \"_\"; at most 32 characters)",
                             n));
           return;
         }
         config.tollgate.group = value->get();
       }},
      {"runtime_dir",
       [&](const toml::node& n) {
         runtime_dir_set = true;
         ReadAbsolutePath(n, "tollgate.runtime_dir", &config.tollgate.runtime_dir, problems);
       }},
      {"admin_group",
       [&](const toml::node& n) {
         const auto* value = n.as_string();
         if (value == nullptr || !IsGroupName(value->get())) {
           problems.Add(n.source().begin,
                        Must("tollgate.admin_group",
                             "a group name (letters, digits, \"_\", \"-\", \".\"; starting with "
                             "a letter or \"_\"; at most 32 characters)",
                             n));
           return;
         }
         config.tollgate.admin_group = value->get();
       }},
  };
  DaemonSettings& daemon = config.daemon;
  const Field daemon_fields[] = {
      {"idle_exit_seconds",
       [&](const toml::node& n) {
         ReadUint32(n, "daemon.idle_exit_seconds", 0, kMaxIdleExitSeconds,
                    &daemon.idle_exit_seconds, problems);
       }},
      {"daemon_uid",
       [&](const toml::node& n) {
         // (uid_t)-1 is "no uid" in chown(2) and friends, never a real peer.
         ReadUint32(n, "daemon.daemon_uid", 0, 4294967294, &daemon.daemon_uid, problems);
       }},
      {"log_level",
       [&](const toml::node& n) {
         ReadChoice<LogLevel>(n, "daemon.log_level", kLogLevels, &daemon.log_level, problems);
       }},
      {"default_action",
       [&](const toml::node& n) {
         ReadChoice<Action>(n, "daemon.default_action", kDefaultActions, &daemon.default_action,
                            problems);
       }},
      {"rules_dir",
       [&](const toml::node& n) {
         ReadAbsolutePath(n, "daemon.rules_dir", &daemon.rules_dir, problems);
       }},
      {"allow_exe", [&](const toml::node& n) { ReadAllowExe(n, &daemon.allow_exe, problems); }},
      {"flow_log",
       [&](const toml::node& n) {
         // "" is the documented way to turn the log off; anything else must be a path.
         const auto* value = n.as_string();
         if (value != nullptr && value->get().empty()) {
           daemon.flow_log.clear();
           return;
         }
         ReadAbsolutePath(n, "daemon.flow_log", &daemon.flow_log, problems);
       }},
      {"flow_log_max_age_days",
       [&](const toml::node& n) {
         ReadUint32(n, "daemon.flow_log_max_age_days", 0, kMaxFlowLogAgeDays,
                    &daemon.flow_log_max_age_days, problems);
       }},
      {"flow_log_max_mb",
       [&](const toml::node& n) {
         ReadUint32(n, "daemon.flow_log_max_mb", 0, kMaxFlowLogMb, &daemon.flow_log_max_mb,
                    problems);
       }},
  };
  FilterSettings& filter = config.filter;
  const Field filter_fields[] = {
      {"question_deadline_ms",
       [&](const toml::node& n) {
         ReadUint32(n, "filter.question_deadline_ms", kMinQuestionDeadlineMs,
                    kMaxQuestionDeadlineMs, &filter.question_deadline_ms, problems);
       }},
      {"fallback",
       [&](const toml::node& n) {
         ReadChoice<FallbackPolicy>(n, "filter.fallback", kFallbacks, &filter.fallback, problems);
       }},
      {"max_pending_flows",
       [&](const toml::node& n) {
         ReadUint32(n, "filter.max_pending_flows", 1, kMaxPendingFlowsLimit,
                    &filter.max_pending_flows, problems);
       }},
      {"queues", [&](const toml::node& n) { ReadQueues(n, &filter.queues, problems); }},
      {"inbound",
       [&](const toml::node& n) { ReadBool(n, "filter.inbound", &filter.inbound, problems); }},
      {"reuse_verdicts",
       [&](const toml::node& n) {
         ReadBool(n, "filter.reuse_verdicts", &filter.reuse_verdicts, problems);
       }},
      {"inspect_max_bytes",
       [&](const toml::node& n) {
         ReadUint32(n, "filter.inspect_max_bytes", 1, kMaxInspectBytes, &filter.inspect_max_bytes,
                    problems);
       }},
      {"reply_spin_us",
       [&](const toml::node& n) {
         ReadUint32(n, "filter.reply_spin_us", 0, kMaxReplySpinUs, &filter.reply_spin_us, problems);
       }},
  };
  const Field root_fields[] = {
      {"tollgate", Section("tollgate", problems,
                           [&](const toml::table& t) {
                             ReadFields(t, "tollgate.", tollgate_fields, problems);
                           })},
      {"daemon",
       Section("daemon", problems,
               [&](const toml::table& t) { ReadFields(t, "daemon.", daemon_fields, problems); })},
      {"filter",
       Section("filter", problems,
               [&](const toml::table& t) { ReadFields(t, "filter.", filter_fields, problems); })},
      {"blocklists",
       Section("blocklists", problems,
               [&](const toml::table& t) { ReadBlocklists(t, &config.blocklists, problems); })},
  };
  ReadFields(*root, "", root_fields, problems);
  if (problems.any()) return Unexpected(problems.ToError());

  if (!runtime_dir_set) config.tollgate.runtime_dir = "/run/" + config.tollgate.group;
  return config;
}

Expected<Config> LoadConfig(const std::string& path) {
  auto text = toml_report::ReadSmallFile(path, kMaxConfigFileBytes, "settings file",
                                         "; is this the right file?");
  if (!text) return Unexpected(text.error());
  return ParseConfig(*text, path);
}

Expected<Config> LoadConfigOrDefaults(const std::string& path, bool path_was_explicit) {
  auto config = LoadConfig(path);
  if (!config && config.error().code == ErrorCode::kNotFound && !path_was_explicit) {
    return Config{};
  }
  return config;
}

}  // namespace tollgate
