#include "daemon/daemon_backend.h"

#include <cinttypes>
#include <cstdio>
#include <utility>
#include <vector>

#include "common/log.h"

namespace tollgate::daemon {
namespace {

using control::Reply;
namespace errors = control::errors;

std::string Rfc3339(analysis::WallTime t, bool micros = false) {
  return control::FormatRfc3339(control::ToUnixMicros(t), micros);
}

// Facts for TestFlow with a `name`: the flow is treated as if a DNS reply had taught the engine
// that name for the remote address. Process facts come from the daemon's source when it has one.
class AssumedNameFacts final : public analysis::FlowFacts {
 public:
  AssumedNameFacts(const FlowQuestion& question, std::string name,
                   analysis::ProcessSource* processes)
      : question_(question), processes_(processes) {
    names_.push_back({std::move(name), analysis::NameSource::kDns});
    process_.detail = "no process lookup";
  }
  const FlowQuestion& question() const override { return question_; }
  analysis::WallTime wall_now() const override { return now_; }
  std::span<const analysis::KnownName> names() override { return names_; }
  bool inspectable() const override { return false; }
  const analysis::AppClassification* app() override { return nullptr; }
  const analysis::ProcessLookup& process() override {
    if (!process_ready_) {
      process_ready_ = true;
      if (processes_ != nullptr) process_ = processes_->Find(question_);
    }
    return process_;
  }

 private:
  const FlowQuestion& question_;
  analysis::ProcessSource* processes_;
  analysis::WallTime now_ = std::chrono::system_clock::now();
  std::vector<analysis::KnownName> names_;
  bool process_ready_ = false;
  // Set in the constructor body: GCC 12 at -O3 reports the aggregate initialiser's temporary
  // ProcessInfo as maybe-uninitialized (a false positive that -Werror turns into an error).
  analysis::ProcessLookup process_;
};

nlohmann::json ReportJson(const ipc::ConnectionInfo& c) {
  if (!c.report) return nullptr;
  const ipc::FilterReport& r = *c.report;
  return {{"reported_at", Rfc3339(c.reported_at)},
          {"report_age_ms",
           std::chrono::duration_cast<std::chrono::milliseconds>(c.report_age).count()},
          {"packets", r.packets},
          {"questions", r.questions},
          {"answered", r.answered},
          {"reused", r.reused},
          {"fallbacks", r.fallbacks()},
          {"fallbacks_deadline", r.fallbacks_deadline},
          {"fallbacks_daemon_away", r.fallbacks_daemon_away},
          {"fallbacks_overflow", r.fallbacks_overflow},
          {"late_answers", r.late_answers},
          {"pending", r.pending},
          {"max_pending", r.max_pending},
          {"queue_lost", r.queue_lost},
          {"queue_enobufs", r.queue_enobufs},
          {"verdict_errors", r.verdict_errors},
          {"channel_dropped", r.channel_dropped},
          {"first_queue", r.first_queue},
          {"last_queue", r.last_queue},
          {"fallback", r.fail_open ? "fail_open" : "fail_closed"}};
}

void Counter(std::string& out, const char* name, const char* help, uint64_t value,
             const char* type = "counter") {
  char line[256];
  std::snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help,
                name, type, name, value);
  out += line;
}

// The connected filters' own accounts (their last FilterReport), one series per filter pid. A
// filter that restarts starts a new series from zero, as its counters do.
void FilterMetrics(std::string& out, const std::vector<ipc::ConnectionInfo>& connections) {
  using Value = uint64_t (*)(const ipc::FilterReport&);
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    std::vector<std::pair<const char*, Value>> series;  // extra label, value
  };
  const Family families[] = {
      {"tollgate_filter_packets_total",
       "counter",
       "Packets a filter read from its queues.",
       {{"", [](const ipc::FilterReport& r) { return r.packets; }}}},
      {"tollgate_filter_questions_total",
       "counter",
       "Questions a filter asked.",
       {{"", [](const ipc::FilterReport& r) { return r.questions; }}}},
      {"tollgate_filter_reused_total",
       "counter",
       "New flows a filter decided itself from a verdict the daemon let it keep.",
       {{"", [](const ipc::FilterReport& r) { return r.reused; }}}},
      {"tollgate_filter_fallbacks_total",
       "counter",
       "Flows a filter gave its fallback policy, by reason.",
       {{",reason=\"deadline\"", [](const ipc::FilterReport& r) { return r.fallbacks_deadline; }},
        {",reason=\"daemon_away\"",
         [](const ipc::FilterReport& r) { return r.fallbacks_daemon_away; }},
        {",reason=\"overflow\"", [](const ipc::FilterReport& r) { return r.fallbacks_overflow; }}}},
      {"tollgate_filter_late_answers_total",
       "counter",
       "Verdicts that reached a filter after its fallback (ignored).",
       {{"", [](const ipc::FilterReport& r) { return r.late_answers; }}}},
      {"tollgate_filter_queue_drops_total",
       "counter",
       "Packets the kernel could not queue to a filter (queue or socket full).",
       {{"", [](const ipc::FilterReport& r) { return r.queue_lost; }}}},
      {"tollgate_filter_pending",
       "gauge",
       "Flows waiting for a verdict in a filter.",
       {{"", [](const ipc::FilterReport& r) { return uint64_t{r.pending}; }}}},
      {"tollgate_filter_max_pending",
       "gauge",
       "The most flows a filter holds for a verdict (max_pending_flows).",
       {{"", [](const ipc::FilterReport& r) { return uint64_t{r.max_pending}; }}}},
  };
  for (const Family& f : families) {
    out +=
        std::string("# HELP ") + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n";
    for (const ipc::ConnectionInfo& c : connections) {
      if (!c.report) continue;
      for (const auto& [label, value] : f.series) {
        out += std::string(f.name) + "{pid=\"" + std::to_string(c.pid) + "\"" + label + "} " +
               std::to_string(value(*c.report)) + "\n";
      }
    }
  }
}

}  // namespace

DaemonBackend::DaemonBackend(DaemonParts parts)
    : parts_(std::move(parts)), managed_(parts_.config->daemon.rules_dir, parts_.reload) {}

Reply DaemonBackend::GetStatus() {
  const Config& config = *parts_.config;
  const auto now = std::chrono::system_clock::now();
  nlohmann::json filters = nlohmann::json::array();
  bool enforcing = false;
  uint64_t peers_refused = parts_.control ? parts_.control->counters().peers_refused : 0;
  uint64_t questions = 0, verdicts = 0, fallbacks = 0, queue_lost = 0, reused = 0;
  if (parts_.channel) {
    for (const ipc::ConnectionInfo& c : parts_.channel->Connections()) {
      if (c.role == ipc::Role::kFilter) enforcing = true;
      if (c.report) {
        fallbacks += c.report->fallbacks();
        queue_lost += c.report->queue_lost;
        reused += c.report->reused;
      }
      filters.push_back({{"pid", c.pid},
                         {"uid", c.uid},
                         {"exe", c.exe},
                         {"role", ipc::RoleName(c.role)},
                         {"connected_since", Rfc3339(c.connected_since)},
                         {"questions", c.questions},
                         {"verdicts", c.verdicts},
                         {"report", ReportJson(c)}});
    }
    const ipc::ServerCounters& sc = parts_.channel->counters();
    peers_refused += sc.peers_refused;
    questions = sc.questions;
    verdicts = sc.verdicts;
  }
  auto table = parts_.engine->Current();
  nlohmann::json lists = nlohmann::json::object();
  for (const auto& [name, entries] : parts_.rule_set->blocklists) lists[name] = entries;
  uint64_t dropped = 0;
  if (parts_.flow_log) {
    auto fc = parts_.flow_log->counters();
    dropped = fc.dropped_queue_full + fc.dropped_write_error;
  }
  nlohmann::json status = {
      {"version", TOLLGATE_VERSION},
      {"uptime_seconds",
       std::chrono::duration_cast<std::chrono::seconds>(now - parts_.started).count()},
      {"settings_file", config.source},
      {"default_action", ActionName(table->default_action())},
      {"fallback", FallbackPolicyName(config.filter.fallback)},
      {"question_deadline_ms", config.filter.question_deadline_ms},
      {"filters", std::move(filters)},
      {"enforcing", enforcing},
      {"questions", questions},
      {"verdicts", verdicts},
      {"fallbacks", fallbacks},
      {"queue_lost", queue_lost},
      {"reused", reused},
      {"inspections", parts_.engine->counters().inspect_verdicts.load(std::memory_order_relaxed)},
      {"peers_refused", peers_refused},
      {"rules_loaded", table->rules().size()},
      {"rule_set_version", parts_.rule_set->version},
      {"rules_loaded_at", Rfc3339(parts_.rule_set->loaded_at)},
      {"blocklists", std::move(lists)},
      {"known_names", parts_.engine->known_names()},
      {"flow_log",
       parts_.flow_log ? nlohmann::json(parts_.flow_log->path()) : nlohmann::json(nullptr)},
      {"flow_log_dropped", dropped},
      {"subscribers", parts_.control ? parts_.control->subscriber_count() : 0},
  };
  return Reply::Ok({{"status", std::move(status)}});
}

nlohmann::json DaemonBackend::RuleJson(const analysis::RuleTable& table, size_t index,
                                       const analysis::RuleLoadContext& context) const {
  const analysis::Rule& rule = table.rules()[index];
  nlohmann::json toml = nullptr;
  if (managed_.IsManaged(rule.origin)) {
    if (auto text = managed_.TextOf(rule.name, context)) toml = *text;
  }
  return {{"name", rule.name},
          {"action", ActionName(rule.action)},
          {"priority", rule.priority},
          {"origin", rule.origin},
          {"conditions", table.description(index)},
          {"toml", std::move(toml)},
          {"once_used", rule.once && table.used_up(index)}};
}

Reply DaemonBackend::ListRules() {
  auto table = parts_.engine->Current();
  analysis::RuleLoadContext context = parts_.load_context();
  nlohmann::json rules = nlohmann::json::array();
  for (size_t i = 0; i < table->rules().size(); ++i) rules.push_back(RuleJson(*table, i, context));
  return Reply::Ok({{"rules", std::move(rules)},
                    {"default_action", ActionName(table->default_action())},
                    {"rule_set_version", parts_.rule_set->version}});
}

Reply DaemonBackend::AddRule(const std::string& toml) {
  analysis::RuleLoadContext context = parts_.load_context();
  Expected<std::string> name = managed_.Add(toml, context);
  if (!name) {
    if (name.error().code == ErrorCode::kSystem) {
      return Reply::Error(errors::kReloadFailed, {{"message", name.error().message}});
    }
    return Reply::Error(errors::kRuleInvalid, {{"message", name.error().message}});
  }
  TG_LOG_NOTICE("control: rule \"%s\" added to %s", name->c_str(), managed_.path().c_str());
  auto table = parts_.engine->Current();
  for (size_t i = 0; i < table->rules().size(); ++i) {
    if (table->rules()[i].name == *name) {
      return Reply::Ok(
          {{"rule", RuleJson(*table, i, context)}, {"rule_set_version", parts_.rule_set->version}});
    }
  }
  return Reply::Error(errors::kReloadFailed,
                      {{"message", "rule \"" + *name + "\" was written but is not in force"}});
}

Reply DaemonBackend::RemoveRule(const std::string& name) {
  auto table = parts_.engine->Current();
  const analysis::Rule* found = nullptr;
  for (const analysis::Rule& rule : table->rules()) {
    if (rule.name == name) found = &rule;
  }
  if (found == nullptr) return Reply::Error(errors::kRuleNotFound, {{"name", name}});
  if (!managed_.IsManaged(found->origin)) {
    return Reply::Error(errors::kRuleNotManaged, {{"name", name}, {"origin", found->origin}});
  }
  Status removed = managed_.Remove(name, parts_.load_context());
  if (!removed) {
    if (removed.error().code == ErrorCode::kNotFound) {
      return Reply::Error(errors::kRuleNotFound, {{"name", name}});
    }
    return Reply::Error(errors::kReloadFailed, {{"message", removed.error().message}});
  }
  TG_LOG_NOTICE("control: rule \"%s\" removed from %s", name.c_str(), managed_.path().c_str());
  return Reply::Ok({{"rule_set_version", parts_.rule_set->version}});
}

Reply DaemonBackend::Reload() {
  Status s = parts_.reload();
  if (!s) return Reply::Error(errors::kReloadFailed, {{"message", s.error().message}});
  return Reply::Ok({{"rules_loaded", parts_.engine->Current()->rules().size()},
                    {"rule_set_version", parts_.rule_set->version}});
}

Reply DaemonBackend::TestFlow(const control::FlowSpec& flow) {
  std::string parameter, message;
  std::optional<FlowQuestion> question = control::QuestionFromSpec(flow, &parameter, &message);
  if (!question) {
    return Reply::Error(errors::kInvalidParameter,
                        {{"parameter", parameter}, {"message", message}});
  }
  analysis::Decision decision;
  if (flow.name) {
    std::string name = *flow.name;
    while (!name.empty() && name.back() == '.') name.pop_back();
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name.empty() || name.size() > 253) {
      return Reply::Error(errors::kInvalidParameter,
                          {{"parameter", "flow.name"}, {"message", "must be a host name"}});
    }
    AssumedNameFacts facts(*question, name, parts_.processes);
    decision = parts_.engine->Current()->Decide(facts, /*dry_run=*/true);
  } else {
    decision = parts_.engine->Explain(*question);
  }
  return Reply::Ok(
      {{"action", ActionName(decision.verdict.action)},
       {"rule", decision.rule ? nlohmann::json(decision.rule->name) : nlohmann::json(nullptr)},
       {"reason", decision.verdict.reason}});
}

Reply DaemonBackend::QueryFlows(const flowlog::FlowQuery& query) {
  if (parts_.flow_log == nullptr) {
    return Reply::Error(errors::kFlowLogUnavailable, {{"reason", parts_.flow_log_unavailable}});
  }
  auto records = parts_.flow_log->Query(query);
  if (!records) {
    return Reply::Error(errors::kFlowLogUnavailable, {{"reason", records.error().message}});
  }
  nlohmann::json flows = nlohmann::json::array();
  for (const flowlog::FlowRecord& r : *records) flows.push_back(control::DecisionJson(r));
  return Reply::Ok({{"flows", std::move(flows)}});
}

Reply DaemonBackend::GetMetrics() {
  std::string out;
  const auto& ec = parts_.engine->counters();
  auto n = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };

  out +=
      "# HELP tollgate_verdicts_total Verdicts the engine gave, by action.\n"
      "# TYPE tollgate_verdicts_total counter\n";
  const char* actions[] = {"allow", "deny", "reject", "inspect"};
  for (size_t i = 0; i < 4; ++i) {
    out += "tollgate_verdicts_total{action=\"" + std::string(actions[i]) + "\"} " +
           std::to_string((*parts_.verdicts)[i]) + "\n";
  }
  if (parts_.channel) {
    const ipc::ServerCounters& sc = parts_.channel->counters();
    Counter(out, "tollgate_questions_total", "Flow questions received from filters.", sc.questions);
    const ipc::LatencyHistogram& h = parts_.channel->question_latency();
    out +=
        "# HELP tollgate_question_seconds Time from a question's arrival to its verdict being "
        "sent.\n# TYPE tollgate_question_seconds histogram\n";
    uint64_t cumulative = 0;
    char line[128];
    for (size_t i = 0; i < h.kBounds.size(); ++i) {
      cumulative += h.counts[i];
      std::snprintf(line, sizeof(line), "tollgate_question_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                    h.kBounds[i], cumulative);
      out += line;
    }
    std::snprintf(line, sizeof(line),
                  "tollgate_question_seconds_bucket{le=\"+Inf\"} %" PRIu64
                  "\ntollgate_question_seconds_sum %.9f\ntollgate_question_seconds_count %" PRIu64
                  "\n",
                  h.count, h.sum_seconds, h.count);
    out += line;
    out +=
        "# HELP tollgate_peers_refused_total Connections refused for who the peer is.\n"
        "# TYPE tollgate_peers_refused_total counter\n";
    out += "tollgate_peers_refused_total{socket=\"analysis\"} " + std::to_string(sc.peers_refused) +
           "\n";
    out += "tollgate_peers_refused_total{socket=\"control\"} " +
           std::to_string(parts_.control ? parts_.control->counters().peers_refused : 0) + "\n";
    Counter(out, "tollgate_channel_malformed_total",
            "Analysis channel messages refused as malformed or oversize.",
            sc.malformed_messages + sc.oversize_messages);
    Counter(out, "tollgate_filter_connections", "Clients connected to the analysis socket.",
            parts_.channel->connection_count(), "gauge");
    FilterMetrics(out, parts_.channel->Connections());
  }
  Counter(out, "tollgate_inspections_total", "Inspect verdicts (payload asked for).",
          n(ec.inspect_verdicts));
  Counter(out, "tollgate_dns_replies_total", "DNS replies observed.", n(ec.dns_replies));
  Counter(out, "tollgate_dns_malformed_total", "DNS replies the parser refused.",
          n(ec.dns_malformed));
  Counter(out, "tollgate_process_lookups_total", "Process attributions looked up.",
          n(ec.process_lookups));
  Counter(out, "tollgate_known_names", "Names known from DNS.", parts_.engine->known_names(),
          "gauge");
  Counter(out, "tollgate_rules_loaded", "Rules in force.", parts_.engine->Current()->rules().size(),
          "gauge");
  Counter(out, "tollgate_rule_set_version", "Successful rule loads since start.",
          parts_.rule_set->version, "gauge");
  if (parts_.flow_log) {
    auto fc = parts_.flow_log->counters();
    Counter(out, "tollgate_flow_log_written_total", "Decisions written to the flow log.",
            fc.written);
    Counter(out, "tollgate_flow_log_dropped_total",
            "Decisions that could not be logged (queue full, disk full, locked).",
            fc.dropped_queue_full + fc.dropped_write_error);
  }
  if (parts_.control) {
    const control::ControlCounters& cc = parts_.control->counters();
    Counter(out, "tollgate_control_calls_total", "Control API calls.", cc.calls);
    Counter(out, "tollgate_control_subscribers_dropped_total",
            "Subscribers dropped for falling behind.", cc.subscribers_dropped);
  }
  Counter(out, "tollgate_uptime_seconds", "Seconds since tollgated started.",
          static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                    std::chrono::system_clock::now() - parts_.started)
                                    .count()),
          "gauge");
  return Reply::Ok({{"text", std::move(out)}});
}

}  // namespace tollgate::daemon
