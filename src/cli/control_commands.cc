#include "cli/control_commands.h"

#include <fnmatch.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli_text.h"
#include "cli/control_session.h"
#include "cli/exit_codes.h"
#include "cli/opensnitch_import.h"
#include "cli/varlink_client.h"
#include "common/flow.h"

namespace tollgate::cli {
namespace {

using nlohmann::json;

// Options every control command takes.
struct Common {
  std::optional<std::string> socket;
  std::optional<std::string> config;
  double timeout_seconds = 5;
  bool json = false;
};

void AddCommon(CLI::App* cmd, Common* c) {
  cmd->add_option("--socket", c->socket,
                  "control socket (default: $TOLLGATE_CONTROL_SOCKET, else <runtime_dir>/"
                  "control.sock from the settings, else /run/tollgate/control.sock)");
  cmd->add_option("--config", c->config,
                  "settings file to read [tollgate] runtime_dir from (default "
                  "/etc/tollgate/tollgate.toml when it exists)");
  cmd->add_option("--timeout", c->timeout_seconds, "seconds to wait for the daemon")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  cmd->add_flag("--json", c->json, "print JSON (the API's field names) instead of a table");
}

// Reading fields of the daemon's answers without trusting their types: a missing or mistyped
// field shows as "-" (or 0) instead of throwing.
std::string Str(const json& j, const char* key, const char* missing = "-") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return missing;
  if (it->is_string()) return it->get<std::string>();
  return it->dump(-1, ' ', false, json::error_handler_t::replace);
}
int64_t Int(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  return it->is_number_float() ? static_cast<int64_t>(it->get<double>()) : it->get<int64_t>();
}
bool Bool(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}
const json& Field(const json& j, const char* key) {
  static const json kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}
const json& Array(const json& j, const char* key) {
  static const json kEmpty = json::array();
  auto it = j.find(key);
  return it != j.end() && it->is_array() ? *it : kEmpty;
}

void PrintJson(const json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
}

// One control command's conversation with the daemon: resolves the socket, connects, calls, and
// turns every failure into its message and exit code (control_session.h).
class Session {
 public:
  Session(const Common& common, std::string command)
      : common_(common), command_(std::move(command)) {}

  // kExitClean, or the failure's exit code after printing it.
  int Connect() {
    std::string warning;
    const char* env = std::getenv(kControlSocketEnv);
    auto target = ResolveControlSocket(common_.socket, common_.config, env, &warning);
    if (!warning.empty())
      std::fprintf(stderr, "tollgate %s: warning: %s\n", command_.c_str(), warning.c_str());
    if (!target) {
      return Fail({kExitUnreadable, "config", "--config: " + target.error().message, "", {}});
    }
    socket_path_ = target->socket_path;
    VarlinkClient::Options options;
    options.timeout =
        std::chrono::milliseconds(static_cast<int64_t>(common_.timeout_seconds * 1000));
    auto client = VarlinkClient::Connect(socket_path_, options);
    if (!client) return Transport(client.error());
    client_.emplace(std::move(*client));
    return kExitClean;
  }

  // The reply's parameters, or nullopt after printing the failure (then see code()).
  std::optional<json> Call(const std::string& method, const json& params = json::object()) {
    auto reply = client_->Call(std::string(kControlInterface) + "." + method, params);
    if (!reply) {
      Transport(reply.error());
      return std::nullopt;
    }
    if (!reply->ok()) {
      Fail(DescribeVarlinkError(*reply));
      return std::nullopt;
    }
    return std::move(reply->parameters);
  }

  VarlinkClient& client() { return *client_; }
  int code() const { return code_; }
  const std::string& socket_path() const { return socket_path_; }

  int Transport(const Error& error) {
    return Fail(
        DescribeTransportError(error, socket_path_, [] { return InstallProbe{}.Installed(); }));
  }

  int Fail(const Failure& f) {
    code_ = f.exit_code;
    if (common_.json) PrintJson(FailureJson(f));
    std::fprintf(stderr, "tollgate %s: %s\n", command_.c_str(), f.message.c_str());
    return code_;
  }

 private:
  const Common& common_;
  std::string command_;
  std::string socket_path_;
  std::optional<VarlinkClient> client_;
  int code_ = kExitClean;
};

// Connect + one call; the printed failure's exit code, or clean with *out set.
int Simple(const Common& common, const std::string& command, const std::string& method,
           const json& params, json* out) {
  Session s(common, command);
  if (int code = s.Connect(); code != kExitClean) return code;
  auto reply = s.Call(method, params);
  if (!reply) return s.code();
  *out = std::move(*reply);
  return kExitClean;
}

std::string Uptime(int64_t seconds) {
  char buf[64];
  if (seconds >= 86400) {
    std::snprintf(buf, sizeof(buf), "%lldd %02lldh %02lldm",
                  static_cast<long long>(seconds / 86400),
                  static_cast<long long>(seconds % 86400 / 3600),
                  static_cast<long long>(seconds % 3600 / 60));
  } else if (seconds >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh %02lldm", static_cast<long long>(seconds / 3600),
                  static_cast<long long>(seconds % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldm %02llds", static_cast<long long>(seconds / 60),
                  static_cast<long long>(seconds % 60));
  }
  return buf;
}

// ---- status, stats ----

std::string ReportAge(int64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%lld.%llds ago", static_cast<long long>(ms / 1000),
                static_cast<long long>(ms % 1000 / 100));
  return buf;
}

int RunStatus(const Common& c) {
  json reply;
  if (int code = Simple(c, "status", "GetStatus", json::object(), &reply)) return code;
  if (c.json) return PrintJson(reply), kExitClean;
  const json& st = Field(reply, "status").is_object() ? Field(reply, "status") : reply;
  const json& filters = Array(st, "filters");
  std::string out;
  out += "tollgated " + Printable(Str(st, "version")) + ", up " +
         Uptime(Int(st, "uptime_seconds")) + ", settings " +
         Printable(Str(st, "settings_file", "(built-in defaults)")) + "\n";
  if (Bool(st, "enforcing")) {
    out += "enforcing:      yes (" + std::to_string(filters.size()) + " filter(s) connected)\n";
  } else {
    out +=
        "enforcing:      NO - no filter is connected; traffic gets the filter's fallback "
        "policy or is not filtered at all (systemctl status tollgate-filter)\n";
  }
  out += "default action: " + Printable(Str(st, "default_action")) +
         "    fallback: " + Printable(Str(st, "fallback")) +
         "    question deadline: " + std::to_string(Int(st, "question_deadline_ms")) + " ms\n";
  out += "rules:          " + std::to_string(Int(st, "rules_loaded")) +
         " loaded, rule set version " + std::to_string(Int(st, "rule_set_version")) +
         ", loaded at " + Printable(Str(st, "rules_loaded_at")) + "\n";
  std::string lists;
  if (const json& bl = Field(st, "blocklists"); bl.is_object()) {
    for (const auto& [name, entries] : bl.items()) {
      lists += (lists.empty() ? "" : ", ") + Printable(name) + " (" +
               (entries.is_number() ? entries.dump() : std::string("?")) + " entries)";
    }
  }
  out += "blocklists:     " + (lists.empty() ? std::string("none") : lists) + "\n";
  out += "known names:    " + std::to_string(Int(st, "known_names")) + "\n";
  std::string log = Str(st, "flow_log", "");
  out += "flow log:       " + (log.empty() ? std::string("off") : Printable(log)) + ", " +
         std::to_string(Int(st, "flow_log_dropped")) + " record(s) dropped\n";
  out += "questions " + std::to_string(Int(st, "questions")) + ", verdicts " +
         std::to_string(Int(st, "verdicts")) + ", inspections " +
         std::to_string(Int(st, "inspections")) + ", peers refused " +
         std::to_string(Int(st, "peers_refused")) + "\n";
  out += "filter reports: fallbacks " + std::to_string(Int(st, "fallbacks")) + ", queue drops " +
         std::to_string(Int(st, "queue_lost")) + ", reused verdicts " +
         std::to_string(Int(st, "reused")) + "\n";
  if (!filters.empty()) {
    // The last four columns are the filter's own account (its report); "-" for other peers.
    Table table({"PEER PID", "ROLE", "UID", "EXE", "CONNECTED SINCE", "QUESTIONS", "VERDICTS",
                 "PENDING", "FALLBACKS", "QUEUE DROPS", "REPORTED"});
    for (const json& f : filters) {
      const json& r = Field(f, "report");
      bool has = r.is_object();
      auto of = [&](const char* key) { return has ? std::to_string(Int(r, key)) : "-"; };
      table.AddRow({std::to_string(Int(f, "pid")), Str(f, "role"), std::to_string(Int(f, "uid")),
                    Str(f, "exe"), Str(f, "connected_since"), std::to_string(Int(f, "questions")),
                    std::to_string(Int(f, "verdicts")),
                    has ? of("pending") + "/" + of("max_pending") : "-", of("fallbacks"),
                    of("queue_lost"), has ? ReportAge(Int(r, "report_age_ms")) : "-"});
    }
    out += "\n" + table.Render();
  }
  std::fputs(out.c_str(), stdout);
  return kExitClean;
}

int RunStats(const Common& c) {
  json reply;
  if (int code = Simple(c, "stats", "GetStatus", json::object(), &reply)) return code;
  const json& st = Field(reply, "status").is_object() ? Field(reply, "status") : reply;
  static const char* kCounters[] = {
      "uptime_seconds", "questions",        "verdicts",      "fallbacks",    "queue_lost",
      "reused",         "inspections",      "peers_refused", "rules_loaded", "rule_set_version",
      "known_names",    "flow_log_dropped", "subscribers"};
  // From a filter's own report; null (JSON) or left out (table) for a peer without one.
  static const char* kReported[] = {"pending", "fallbacks", "queue_lost", "reused"};
  if (c.json) {
    json out = json::object();
    for (const char* k : kCounters) out[k] = Int(st, k);
    json filters = json::array();
    for (const json& f : Array(st, "filters")) {
      json row = {{"pid", Int(f, "pid")},
                  {"questions", Int(f, "questions")},
                  {"verdicts", Int(f, "verdicts")}};
      const json& r = Field(f, "report");
      for (const char* k : kReported) row[k] = r.is_object() ? json(Int(r, k)) : json(nullptr);
      filters.push_back(std::move(row));
    }
    out["filters"] = filters;
    return PrintJson(out), kExitClean;
  }
  Table table({"COUNTER", "VALUE"});
  for (const char* k : kCounters) table.AddRow({k, std::to_string(Int(st, k))});
  for (const json& f : Array(st, "filters")) {
    std::string pid = std::to_string(Int(f, "pid"));
    table.AddRow({"filter " + pid + " questions", std::to_string(Int(f, "questions"))});
    table.AddRow({"filter " + pid + " verdicts", std::to_string(Int(f, "verdicts"))});
    const json& r = Field(f, "report");
    if (!r.is_object()) continue;
    for (const char* k : kReported) {
      table.AddRow({"filter " + pid + " " + k, std::to_string(Int(r, k))});
    }
  }
  std::fputs(table.Render().c_str(), stdout);
  return kExitClean;
}

// ---- rules ----

int RunRulesList(const Common& c) {
  json reply;
  if (int code = Simple(c, "rules list", "ListRules", json::object(), &reply)) return code;
  if (c.json) return PrintJson(reply), kExitClean;
  const json& rules = Array(reply, "rules");
  Table table({"NAME", "ACTION", "PRIORITY", "CONDITIONS", "ORIGIN"});
  for (const json& r : rules) {
    std::string action = Str(r, "action");
    if (Bool(r, "once_used")) action += " (used)";
    std::string conditions = Str(r, "conditions", "");
    table.AddRow({Str(r, "name"), action, std::to_string(Int(r, "priority")),
                  conditions.empty() ? "(any flow)" : conditions, Str(r, "origin")});
  }
  std::printf(
      "%zu rule(s), in the order they are tried; default action %s; rule set version "
      "%lld\n\n%s",
      rules.size(), Printable(Str(reply, "default_action")).c_str(),
      static_cast<long long>(Int(reply, "rule_set_version")), table.Render().c_str());
  return kExitClean;
}

// Bounded read of a file ("-" = stdin); nullopt with *error set.
std::optional<std::string> ReadInput(const std::string& path, size_t max_bytes,
                                     std::string* error) {
  std::FILE* f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    *error = Error::System("open " + path, errno).message;
    return std::nullopt;
  }
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    text.append(buf, n);
    if (text.size() > max_bytes) break;
  }
  bool failed = std::ferror(f) != 0;
  if (f != stdin) std::fclose(f);
  if (failed) {
    *error = "read " + path + ": I/O error";
    return std::nullopt;
  }
  if (text.size() > max_bytes) {
    *error = path + ": larger than " + std::to_string(max_bytes) + " bytes";
    return std::nullopt;
  }
  return text;
}

struct AddFlags {
  Common common;
  std::optional<std::string> text;
  std::optional<std::string> file;
};

int RunRulesAdd(const AddFlags& f) {
  Session s(f.common, "rules add");
  std::string toml;
  if (f.text && f.file) {
    return s.Fail(
        {kExitUsage, "usage", "give the rule as an argument or with --file, not both", "", {}});
  }
  if (f.text) {
    toml = *f.text;
  } else {
    std::string path = f.file.value_or("-");
    if (path == "-" && isatty(STDIN_FILENO)) {
      std::fprintf(stderr, "tollgate rules add: reading one [[rule]] from stdin (Ctrl-D ends)\n");
    }
    std::string error;
    auto text = ReadInput(path, 64 * 1024, &error);
    if (!text) return s.Fail({kExitUnreadable, "io", error, "", {}});
    toml = std::move(*text);
  }
  if (toml.find_first_not_of(" \t\r\n") == std::string::npos) {
    return s.Fail(
        {kExitUsage, "usage", "the rule is empty: give one [[rule]] table in TOML", "", {}});
  }
  if (int code = s.Connect(); code != kExitClean) return code;
  auto reply = s.Call("AddRule", {{"toml", toml}});
  if (!reply) return s.code();
  if (f.common.json) return PrintJson(*reply), kExitClean;
  const json& rule = Field(*reply, "rule");
  std::string conditions = rule.is_object() ? Str(rule, "conditions", "") : "";
  std::printf("added rule \"%s\": %s%s%s; rule set version %lld\n",
              Printable(rule.is_object() ? Str(rule, "name") : "?").c_str(),
              Printable(rule.is_object() ? Str(rule, "action") : "?").c_str(),
              conditions.empty() ? "" : " ", Printable(conditions).c_str(),
              static_cast<long long>(Int(*reply, "rule_set_version")));
  return kExitClean;
}

struct RemoveFlags {
  Common common;
  std::string name;
};

int RunRulesRemove(const RemoveFlags& f) {
  json reply;
  if (int code = Simple(f.common, "rules rm", "RemoveRule", {{"name", f.name}}, &reply)) {
    return code;
  }
  if (f.common.json) return PrintJson(reply), kExitClean;
  std::printf("removed rule \"%s\"; rule set version %lld\n", Printable(f.name).c_str(),
              static_cast<long long>(Int(reply, "rule_set_version")));
  return kExitClean;
}

struct TestFlags {
  Common common;
  std::string proto;
  std::string dst;
  int port = 0;
  std::optional<std::string> src;
  int src_port = 0;
  std::optional<std::string> name;
  std::optional<std::string> sni;
  std::optional<int64_t> uid;
  bool inbound = false;
};

int RunRulesTest(const TestFlags& f) {
  Session s(f.common, "rules test");
  auto dst = IpAddress::Parse(f.dst);
  if (!dst) {
    return s.Fail({kExitUsage,
                   "usage",
                   "--dst \"" + Printable(f.dst) + "\" is not an IPv4 or IPv6 address",
                   "",
                   {}});
  }
  std::string src = f.src.value_or(dst->family == 4 ? "0.0.0.0" : "::");
  if (auto parsed = IpAddress::Parse(src); !parsed || parsed->family != dst->family) {
    return s.Fail({kExitUsage,
                   "usage",
                   "--src \"" + Printable(src) + "\" is not an address of the same family as --dst",
                   "",
                   {}});
  }
  json flow = {{"protocol", f.proto}, {"direction", f.inbound ? "inbound" : "outbound"},
               {"src", src},          {"src_port", f.src_port},
               {"dst", f.dst},        {"dst_port", f.port}};
  flow["uid"] = f.uid ? json(*f.uid) : json(nullptr);
  flow["name"] = f.name ? json(*f.name) : json(nullptr);
  flow["sni"] = f.sni ? json(*f.sni) : json(nullptr);
  if (int code = s.Connect(); code != kExitClean) return code;
  auto reply = s.Call("TestFlow", {{"flow", flow}});
  if (!reply) return s.code();
  if (f.common.json) return PrintJson(*reply), kExitClean;
  std::printf("action  %s\nrule    %s\nreason  %s\n", Printable(Str(*reply, "action")).c_str(),
              Printable(Str(*reply, "rule", "(none: the default action)")).c_str(),
              Printable(Str(*reply, "reason")).c_str());
  return kExitClean;
}

int RunRulesExport(const Common& c) {
  json reply;
  if (int code = Simple(c, "rules export", "ListRules", json::object(), &reply)) return code;
  json exported = json::array();
  json missing = json::array();
  for (const json& r : Array(reply, "rules")) {
    std::string toml = Str(r, "toml", "");
    if (toml.empty()) {
      missing.push_back({{"name", Str(r, "name")}, {"origin", Str(r, "origin")}});
    } else {
      exported.push_back({{"name", Str(r, "name")}, {"origin", Str(r, "origin")}, {"toml", toml}});
    }
  }
  int code = missing.empty() ? kExitClean : kExitPartial;
  if (c.json) {
    PrintJson({{"rules", exported}, {"not_exported", missing}, {"exit_code", code}});
  } else {
    std::string out = "# Rules exported by `tollgate rules export` from rule set version " +
                      std::to_string(Int(reply, "rule_set_version")) + ", in the order tried.\n";
    for (const json& r : exported) {
      out += "\n# from " + Printable(Str(r, "origin")) + "\n" + Str(r, "toml");
      if (out.back() != '\n') out += "\n";
    }
    for (const json& m : missing) {
      out += "\n# NOT EXPORTED: rule \"" + Printable(Str(m, "name")) + "\" (" +
             Printable(Str(m, "origin")) + ") has no TOML form; copy it from its file\n";
    }
    std::fputs(out.c_str(), stdout);
  }
  if (!missing.empty()) {
    std::fprintf(stderr,
                 "tollgate rules export: %zu rule(s) could not be exported (listed at the "
                 "end)\n",
                 missing.size());
  }
  return code;
}

struct ImportFlags {
  Common common;
  std::vector<std::string> files;
  bool apply = false;
  bool dry_run = false;  // the default; accepted so scripts can say so
  std::string prefix;
};

json UnconvertedJson(const opensnitch::Unconverted& u) {
  return {
      {"source", u.source}, {"rule", u.rule}, {"what", u.what}, {"why", u.why}, {"hint", u.hint}};
}

int RunRulesImport(const ImportFlags& f) {
  Session s(f.common, "rules import");
  if (f.apply && f.dry_run) {
    return s.Fail({kExitUsage, "usage", "--apply and --dry-run contradict each other", "", {}});
  }
  std::vector<opensnitch::SourceFile> sources;
  for (const std::string& path : f.files) {
    std::string error;
    auto text = ReadInput(path, opensnitch::kMaxRuleFileBytes, &error);
    if (!text) return s.Fail({kExitUnreadable, "io", error, "", {}});
    sources.push_back({path, std::move(*text)});
  }
  opensnitch::ImportOptions options;
  options.now_unix = static_cast<int64_t>(std::time(nullptr));
  options.name_prefix = f.prefix;
  opensnitch::ImportResult result = opensnitch::ImportOpenSnitchRules(sources, options);

  // Every unconverted item goes to stderr in any mode, so piping stdout to a file loses nothing.
  for (const auto& u : result.unconverted) {
    std::fprintf(stderr, "not converted: %s%s: %s: %s\n", Printable(u.source).c_str(),
                 u.rule.empty() ? "" : (" rule \"" + Printable(u.rule) + "\"").c_str(),
                 Printable(u.what).c_str(), Printable(u.why).c_str());
    if (!u.hint.empty()) std::fprintf(stderr, "  hint: %s\n", Printable(u.hint).c_str());
  }
  json rules = json::array();
  for (const auto& r : result.rules) {
    rules.push_back({{"name", r.name},
                     {"original_name", r.original_name},
                     {"source", r.source},
                     {"toml", r.toml},
                     {"notes", r.notes}});
  }
  size_t failed_adds = 0;
  if (f.apply && !result.rules.empty()) {
    if (int code = s.Connect(); code != kExitClean) return code;
    for (size_t i = 0; i < result.rules.size(); ++i) {
      auto reply = s.client().Call(std::string(kControlInterface) + ".AddRule",
                                   {{"toml", result.rules[i].toml}});
      if (!reply) return s.Transport(reply.error());
      if (!reply->ok()) {
        Failure failure = DescribeVarlinkError(*reply);
        if (failure.exit_code == kExitRefused) return s.Fail(failure);
        ++failed_adds;
        rules[i]["added"] = false;
        rules[i]["error"] = FailureJson(failure)["error"];
        std::fprintf(stderr, "not added: %s: %s\n", result.rules[i].name.c_str(),
                     failure.message.c_str());
        continue;
      }
      rules[i]["added"] = true;
      if (!f.common.json) {
        std::printf("added rule \"%s\" (OpenSnitch \"%s\")\n", result.rules[i].name.c_str(),
                    Printable(result.rules[i].original_name).c_str());
      }
    }
  }
  int code = result.complete() && failed_adds == 0 ? kExitClean : kExitPartial;
  if (f.common.json) {
    json unconverted = json::array();
    for (const auto& u : result.unconverted) unconverted.push_back(UnconvertedJson(u));
    PrintJson({{"rules_seen", result.rules_seen},
               {"rules", rules},
               {"unconverted", unconverted},
               {"applied", f.apply},
               {"complete", code == kExitClean},
               {"exit_code", code}});
  } else if (!f.apply) {
    std::fputs(opensnitch::RenderRuleFile(result).c_str(), stdout);
  }
  std::fprintf(stderr, "tollgate rules import: %zu of %zu rule(s) converted%s%s\n",
               result.rules.size(), result.rules_seen,
               f.apply
                   ? (", " + std::to_string(result.rules.size() - failed_adds) + " added").c_str()
                   : " (dry run: nothing added; --apply adds them)",
               result.unconverted.empty() ? "" : "; see the list above of what was not");
  return code;
}

// ---- flows ----

struct FlowsFlags {
  Common common;
  std::optional<std::string> since;
  std::optional<std::string> action;
  std::optional<std::string> exe;
  std::optional<std::string> host;
  int limit = 100;
  bool follow = false;
};

std::string FlowText(const json& d) {
  const json& flow = Field(d, "flow");
  if (!flow.is_object()) return "-";
  auto endpoint = [&](const char* addr, const char* port) {
    std::string a = Str(flow, addr);
    if (a.find(':') != std::string::npos) a = "[" + a + "]";
    return a + ":" + std::to_string(Int(flow, port));
  };
  bool inbound = Str(flow, "direction") == "inbound";
  return Str(flow, "protocol") + " " + endpoint("src", "src_port") + (inbound ? " <- " : " -> ") +
         endpoint("dst", "dst_port");
}

std::string ProcessText(const json& d) {
  std::string exe = Str(d, "exe", "");
  std::string out = exe.empty() ? "-" : exe;
  if (Field(d, "pid").is_number()) out += " (" + std::to_string(Int(d, "pid")) + ")";
  std::string user = Str(d, "user", "");
  if (!user.empty()) out += " " + user;
  return out;
}

std::string ShortTime(const std::string& t) {
  // "2024-05-01T12:00:00.123456Z" -> "2024-05-01 12:00:00"; anything else as given.
  if (t.size() >= 19 && t[10] == 'T') return t.substr(0, 10) + " " + t.substr(11, 8);
  return t;
}

std::vector<std::string> DecisionRow(const json& d) {
  return {ShortTime(Str(d, "time")), Str(d, "action"), FlowText(d), Str(d, "name"), ProcessText(d),
          Str(d, "reason")};
}

// --exe and --host as tollgate applies them to a followed stream: exact or shell glob.
bool Matches(const std::optional<std::string>& pattern, const std::string& value) {
  return !pattern || fnmatch(pattern->c_str(), value.c_str(), 0) == 0;
}

int RunFlows(const FlowsFlags& f) {
  Session s(f.common, "flows");
  json query = {{"limit", f.limit}};
  if (f.since) {
    auto since = ResolveSince(*f.since, static_cast<int64_t>(std::time(nullptr)));
    if (!since) return s.Fail({kExitUsage, "usage", since.error().message, "", {}});
    query["since"] = *since;
  }
  if (f.action) query["action"] = *f.action;
  if (f.exe) query["exe"] = *f.exe;
  if (f.host) query["host"] = *f.host;
  if (int code = s.Connect(); code != kExitClean) return code;

  if (!f.follow) {
    auto reply = s.Call("QueryFlows", query);
    if (!reply) return s.code();
    if (f.common.json) return PrintJson(*reply), kExitClean;
    const json& flows = Array(*reply, "flows");
    Table table({"TIME (UTC)", "ACTION", "FLOW", "NAME", "PROCESS", "REASON"});
    // The API gives newest first; people read a log oldest first, newest at the bottom.
    for (auto it = flows.rbegin(); it != flows.rend(); ++it) table.AddRow(DecisionRow(*it));
    std::fputs(table.Render().c_str(), stdout);
    return kExitClean;
  }

  // Follow: subscribe first, so nothing decided while the history is read is missed (the stream
  // waits in the socket), then print the history asked for with --since, then the stream.
  json subscribe = json::object();
  if (f.action) subscribe["action"] = *f.action;
  if (auto sent = s.client().Send(std::string(kControlInterface) + ".Subscribe", subscribe,
                                  /*more=*/true);
      !sent) {
    return s.Transport(sent.error());
  }
  auto print = [&](const json& d) {
    if (f.common.json) {
      std::printf("%s\n", d.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
      std::string line;
      for (const std::string& cell : DecisionRow(d)) line += (line.empty() ? "" : "  ") + cell;
      std::printf("%s\n", Printable(line).c_str());
    }
    std::fflush(stdout);
  };
  if (f.since) {
    Session history(f.common, "flows");
    if (int code = history.Connect(); code != kExitClean) return code;
    auto reply = history.Call("QueryFlows", query);
    if (!reply) return history.code();
    const json& flows = Array(*reply, "flows");
    for (auto it = flows.rbegin(); it != flows.rend(); ++it) print(*it);
  }
  for (;;) {
    auto reply = s.client().Receive(std::nullopt);
    if (!reply) {
      if (reply.error().code == ErrorCode::kProtocol) {
        return s.Fail({kExitNotRunning,
                       "not_running",
                       "tollgated ended the stream (" + reply.error().message +
                           "); was it stopped or restarted?",
                       "",
                       {}});
      }
      return s.Transport(reply.error());
    }
    if (!reply->ok()) return s.Fail(DescribeVarlinkError(*reply));
    const json& d = Field(reply->parameters, "decision");
    if (d.is_object() && Matches(f.exe, Str(d, "exe", "")) && Matches(f.host, Str(d, "name", ""))) {
      print(d);
    }
    if (!reply->continues) return kExitClean;
  }
}

// ---- reload, metrics ----

int RunReload(const Common& c) {
  json reply;
  if (int code = Simple(c, "reload", "Reload", json::object(), &reply)) return code;
  if (c.json) return PrintJson(reply), kExitClean;
  std::printf("reloaded: %lld rule(s) in force, rule set version %lld\n",
              static_cast<long long>(Int(reply, "rules_loaded")),
              static_cast<long long>(Int(reply, "rule_set_version")));
  return kExitClean;
}

int RunMetrics(const Common& c) {
  json reply;
  if (int code = Simple(c, "metrics", "GetMetrics", json::object(), &reply)) return code;
  if (c.json) return PrintJson(reply), kExitClean;
  std::string text = Str(reply, "text", "");
  // Prometheus text is ASCII; Printable keeps a hostile label value from reaching the terminal.
  std::string out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) out += Printable(line) + "\n";
  std::fputs(out.c_str(), stdout);
  return kExitClean;
}

}  // namespace

void AddControlCommands(CLI::App& app, int* exit_code) {
  auto simple = [&](CLI::App* parent, const char* name, const char* help,
                    int (*run)(const Common&)) {
    auto flags = std::make_shared<Common>();
    CLI::App* cmd = parent->add_subcommand(name, help);
    AddCommon(cmd, flags.get());
    cmd->callback([flags, exit_code, run] { *exit_code = run(*flags); });
    return cmd;
  };
  simple(&app, "status", "Show what tollgated is doing: filters, rules, policy, counters",
         RunStatus);
  simple(&app, "stats", "Show tollgated's counters", RunStats);
  simple(&app, "reload", "Reload the blocklists and every rule file (the rules stay on error)",
         RunReload);
  simple(&app, "metrics", "Print tollgated's metrics in Prometheus text format", RunMetrics);

  CLI::App* rules = app.add_subcommand("rules", "List, add, remove, test, import, export rules");
  rules->require_subcommand(1);
  simple(rules, "list", "List the rules in force, in the order they are tried", RunRulesList);
  simple(rules, "export", "Print the rules in force as a rule file", RunRulesExport);

  auto add = std::make_shared<AddFlags>();
  CLI::App* add_cmd = rules->add_subcommand("add",
                                            "Add one rule (a TOML [[rule]] table) to "
                                            "the managed rule file and reload");
  AddCommon(add_cmd, &add->common);
  add_cmd->add_option("TOML", add->text, "the rule as TOML text (default: --file, or stdin)");
  add_cmd->add_option("--file,-f", add->file, "read the rule from this file (- for stdin)");
  add_cmd->callback([add, exit_code] { *exit_code = RunRulesAdd(*add); });

  auto rm = std::make_shared<RemoveFlags>();
  CLI::App* rm_cmd = rules->add_subcommand("rm", "Remove a rule added with `rules add`");
  rm_cmd->alias("remove");
  AddCommon(rm_cmd, &rm->common);
  rm_cmd->add_option("NAME", rm->name, "the rule's name")->required();
  rm_cmd->callback([rm, exit_code] { *exit_code = RunRulesRemove(*rm); });

  auto test = std::make_shared<TestFlags>();
  CLI::App* test_cmd =
      rules->add_subcommand("test", "What would this flow get now, and why (uses no once rule)");
  AddCommon(test_cmd, &test->common);
  test_cmd->add_option("--proto", test->proto, "tcp, udp, icmp or icmpv6")
      ->required()
      ->check(CLI::IsMember({"tcp", "udp", "icmp", "icmpv6"}));
  test_cmd->add_option("--dst", test->dst, "the destination address")->required();
  test_cmd->add_option("--port", test->port, "the destination port (0 for ICMP)")
      ->check(CLI::Range(0, 65535));
  test_cmd->add_option("--src", test->src, "the source address (default: unspecified)");
  test_cmd->add_option("--src-port", test->src_port, "the source port")
      ->check(CLI::Range(0, 65535));
  test_cmd->add_option("--name", test->name, "assume the destination has this host name");
  test_cmd->add_option("--sni", test->sni, "assume the client sent this TLS SNI");
  test_cmd->add_option("--uid", test->uid, "the uid of the process behind the flow")
      ->check(CLI::Range(int64_t{0}, int64_t{4294967294}));
  test_cmd->add_flag("--inbound", test->inbound, "an inbound flow (someone connects to us)");
  test_cmd->callback([test, exit_code] { *exit_code = RunRulesTest(*test); });

  auto import = std::make_shared<ImportFlags>();
  CLI::App* import_cmd = rules->add_subcommand(
      "import",
      "Convert OpenSnitch rule files (JSON); print them as TOML, or add them with --apply");
  AddCommon(import_cmd, &import->common);
  import_cmd->add_option("FILE", import->files, "OpenSnitch rule files (- for stdin)")->required();
  import_cmd->add_flag("--apply", import->apply,
                       "add the converted rules to the daemon (default: print them, add nothing)");
  import_cmd->add_flag("--dry-run", import->dry_run, "print the converted rules (the default)");
  import_cmd->add_option("--prefix", import->prefix,
                         "prepend this to every rule name, e.g. opensnitch-");
  import_cmd->callback([import, exit_code] { *exit_code = RunRulesImport(*import); });

  auto flows = std::make_shared<FlowsFlags>();
  CLI::App* flows_cmd = app.add_subcommand("flows",
                                           "Show decisions from the flow log, or follow "
                                           "them live");
  AddCommon(flows_cmd, &flows->common);
  flows_cmd->add_option("--since", flows->since,
                        "from this time (RFC 3339) or this long ago (10m, 2h, 1d)");
  flows_cmd->add_option("--action", flows->action, "only this action")
      ->check(CLI::IsMember({"allow", "deny", "reject", "inspect", "fallback"}));
  flows_cmd->add_option("--exe", flows->exe, "only flows of this executable");
  flows_cmd->add_option("--host", flows->host, "only flows to this host name");
  flows_cmd->add_option("--limit", flows->limit, "at most this many decisions from the log")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  flows_cmd->add_flag("--follow,-f", flows->follow, "keep printing decisions as they are made");
  flows_cmd->callback([flows, exit_code] { *exit_code = RunFlows(*flows); });
}

}  // namespace tollgate::cli
