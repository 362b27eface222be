// tollgated: the privileged analysis daemon. Wiring only: configuration, sockets (from systemd or
// bound by hand), blocklists and rules, the analysis engine with its process source (sock_diag)
// and classifier (nDPI), the channel server, the control API server (control.sock) with its
// backend, the flow log, signals and sd_notify.
//
// Lifecycle: started on demand by tollgated.socket (or by hand); answers the filter over
// analysis.sock and operators over control.sock; SIGHUP (or the control API's Reload) reloads
// rules atomically (a broken file keeps the rules in force); SIGTERM or idle_exit_seconds (never
// while an operator client is connected): stop accepting, finish what was accepted, say Goodbye,
// exit.
#include <grp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "analysis/blocklist.h"
#include "analysis/engine.h"
#include "analysis/ndpi_classifier.h"
#include "analysis/rule_table.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "control/control_server.h"
#include "control/records.h"
#include "daemon/daemon_backend.h"
#include "flowlog/flow_log.h"
#include "ipc/channel_server.h"
#include "platform/linux/attribution.h"
#include "platform/linux/peer_credentials.h"
#include "platform/linux/runtime_dir.h"
#include "platform/linux/socket_activation.h"

namespace tollgate::daemon {
namespace {

struct Flags {
  std::string config_path = kDefaultConfigPath;
  bool config_explicit = false;
  std::optional<std::string> runtime_dir;
  std::optional<std::string> group;
  std::optional<std::string> rules_dir;
  std::optional<uint32_t> idle_exit_seconds;
  std::optional<std::string> log_level;
  std::optional<std::string> flow_log;
};

Expected<uint32_t> LookUpGroup(const std::string& name) {
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  int r = getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
  if (r != 0) return Unexpected(Error::System("look up group \"" + name + "\"", r));
  if (found == nullptr) {
    return Unexpected(ErrorCode::kNotFound,
                      "group \"" + name +
                          "\" does not exist: create it (systemd-sysusers, or groupadd --system " +
                          name + ") or set [tollgate] group / --group");
  }
  return static_cast<uint32_t>(found->gr_gid);
}

// Clients are many small sockets; the default soft limit of 1024 would cap them early.
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &lim);
  }
}

std::string CountersLine(const ipc::ServerCounters& c) {
  char line[768];
  std::snprintf(
      line, sizeof(line),
      "accepted=%llu refused=%llu handshakes=%llu version_refused=%llu questions=%llu "
      "verdicts=%llu dns=%llu dns_ignored=%llu malformed=%llu oversize=%llu protocol_errors=%llu "
      "over_limit=%llu handshake_timeouts=%llu filter_reports=%llu reports_ignored=%llu "
      "decided_by_filters=%llu forgets_sent=%llu",
      static_cast<unsigned long long>(c.accepted), static_cast<unsigned long long>(c.peers_refused),
      static_cast<unsigned long long>(c.handshakes),
      static_cast<unsigned long long>(c.version_refused),
      static_cast<unsigned long long>(c.questions), static_cast<unsigned long long>(c.verdicts),
      static_cast<unsigned long long>(c.dns_observations),
      static_cast<unsigned long long>(c.dns_ignored),
      static_cast<unsigned long long>(c.malformed_messages),
      static_cast<unsigned long long>(c.oversize_messages),
      static_cast<unsigned long long>(c.protocol_errors),
      static_cast<unsigned long long>(c.connections_over_limit),
      static_cast<unsigned long long>(c.handshake_timeouts),
      static_cast<unsigned long long>(c.filter_reports),
      static_cast<unsigned long long>(c.reports_ignored),
      static_cast<unsigned long long>(c.decided_by_filters),
      static_cast<unsigned long long>(c.forgets_sent));
  return line;
}

std::string EngineLine(const analysis::EngineCounters& c) {
  auto n = [](const std::atomic<uint64_t>& v) {
    return static_cast<unsigned long long>(v.load(std::memory_order_relaxed));
  };
  char line[512];
  std::snprintf(line, sizeof(line),
                "inspections=%llu dns_replies=%llu dns_malformed=%llu sni=%llu http_host=%llu "
                "unreadable=%llu classified=%llu process_lookups=%llu process_unknown=%llu",
                n(c.inspect_verdicts), n(c.dns_replies), n(c.dns_malformed), n(c.names_from_sni),
                n(c.names_from_http), n(c.payload_unreadable), n(c.classifications),
                n(c.process_lookups), n(c.process_unknown));
  return line;
}

class Daemon {
 public:
  Daemon(Config config, uint32_t group_gid, uint32_t admin_gid)
      : config_(std::move(config)), group_gid_(group_gid), admin_gid_(admin_gid) {}

  // Loads blocklists and rules into a new table and puts it in force; on any error the table in
  // force stays. At start, a missing rules directory means "no rules yet" (a fresh install).
  Status LoadRules(bool at_start) {
    if (!classifier_tried_) {
      classifier_tried_ = true;
      auto classifier = analysis::NdpiClassifier::Create();
      if (classifier) {
        classifier_ = std::move(*classifier);
      } else {
        TG_LOG_WARNING("no protocol classification (rules with app_protocol are refused): %s",
                       classifier.error().message.c_str());
      }
    }
    Expected<Blocklists> lists = LoadBlocklists();
    if (!lists) return Unexpected(lists.error());
    analysis::RuleLoadContext context;
    context.blocklists = &*lists;
    context.classifier = classifier_.get();
    Expected<std::shared_ptr<const analysis::RuleTable>> table =
        analysis::LoadRuleFiles(config_.daemon.rules_dir, config_.daemon.default_action, context);
    if (!table && table.error().code == ErrorCode::kNotFound && at_start) {
      TG_LOG_NOTICE("no rules directory %s: every flow gets the default action (%s)",
                    config_.daemon.rules_dir.c_str(), ActionName(config_.daemon.default_action));
      table = analysis::RuleTable::Empty(config_.daemon.default_action);
    }
    if (!table) return Unexpected(table.error());
    size_t n = (*table)->rules().size();
    if (engine_) {
      engine_->Replace(std::move(*table));
      // Verdicts the filters keep for destinations were made by the old rules.
      if (server_) server_->ForgetAll();
    } else {
      analysis::EngineOptions options;
      options.inspect_max_bytes = config_.filter.inspect_max_bytes;
      engine_ = std::make_unique<analysis::Engine>(std::move(*table), &processes_,
                                                   classifier_.get(), clock_, options);
    }
    lists_ = std::move(*lists);
    ++rule_set_.version;
    rule_set_.loaded_at = std::chrono::system_clock::now();
    rule_set_.blocklists.clear();
    for (const auto& [name, list] : lists_) rule_set_.blocklists[name] = list->size();
    TG_LOG_INFO("%zu rules in force from %s, %zu blocklists", n, config_.daemon.rules_dir.c_str(),
                lists_.size());
    return {};
  }

  using Blocklists = std::map<std::string, std::shared_ptr<const analysis::Blocklist>>;

  // What a rule may refer to with the blocklists in force (the control API's AddRule checks a new
  // rule against it before writing it).
  analysis::RuleLoadContext LoadContext() const {
    analysis::RuleLoadContext context;
    context.blocklists = &lists_;
    context.classifier = classifier_.get();
    return context;
  }

  // Every configured list; a list whose file is unchanged since the last load (same inode, size
  // and modification time) is reused rather than read again, so a reload for a rule edit does not
  // re-read a million-line list.
  Expected<Blocklists> LoadBlocklists() {
    Blocklists out;
    for (const auto& [name, path] : config_.blocklists) {
      struct stat st {};
      const bool stat_ok = ::stat(path.c_str(), &st) == 0;
      auto known = list_files_.find(name);
      auto loaded = lists_.find(name);
      if (stat_ok && known != list_files_.end() && loaded != lists_.end() &&
          known->second.path == path && known->second.inode == st.st_ino &&
          known->second.size == st.st_size && known->second.mtime_ns == MtimeNs(st)) {
        out[name] = loaded->second;
        continue;
      }
      analysis::BlocklistLoadReport report;
      auto list = analysis::Blocklist::LoadFile(path, name, &report);
      if (!list) {
        return Unexpected(list.error().code, "blocklist \"" + name + "\": " + list.error().message);
      }
      TG_LOG_INFO("blocklist %s: %zu names from %s (%zu duplicates, %zu skipped, %zu invalid)",
                  name.c_str(), report.entries, path.c_str(), report.duplicates,
                  report.skipped_junk, report.invalid);
      for (const std::string& problem : report.problems) {
        TG_LOG_WARNING("blocklist %s: %s", name.c_str(), problem.c_str());
      }
      out[name] = *list;
      if (stat_ok) list_files_[name] = ListFile{path, st.st_ino, st.st_size, MtimeNs(st)};
    }
    return out;
  }

  static int64_t MtimeNs(const struct stat& st) {
    return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  }

  Status Run() {
    Expected<platform::ActivatedSockets> activated = platform::TakeActivatedSockets();
    if (!activated) return Unexpected(activated.error());
    UniqueFd analysis_fd = std::move(activated->analysis);
    from_systemd_ = activated->from_systemd;
    if (!analysis_fd.valid()) {
      Expected<platform::RuntimeDir> dir =
          platform::PrepareRuntimeDir(config_.tollgate.runtime_dir, group_gid_);
      if (!dir) return Unexpected(dir.error());
      Expected<UniqueFd> fd =
          platform::BindServiceSocket(*dir, "analysis.sock", SOCK_SEQPACKET, group_gid_);
      if (!fd) return Unexpected(fd.error());
      analysis_fd = std::move(*fd);
      TG_LOG_INFO("listening on %s/analysis.sock (group %s)", config_.tollgate.runtime_dir.c_str(),
                  config_.tollgate.group.c_str());
    } else {
      TG_LOG_INFO("listening on the analysis socket passed by the service manager");
    }

    int r = sd_event_default(&loop_);
    if (r < 0) return Unexpected(Error::System("sd_event_default", -r));
    sigset_t mask;
    sigemptyset(&mask);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, sig);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    sd_event_add_signal(loop_, nullptr, SIGTERM, OnStop, this);
    sd_event_add_signal(loop_, nullptr, SIGINT, OnStop, this);
    sd_event_add_signal(loop_, nullptr, SIGHUP, OnReload, this);
    // Pings the service manager's watchdog at half its interval when WATCHDOG_USEC is set.
    sd_event_set_watchdog(loop_, 1);

    ipc::ServerOptions opts;
    opts.policy.group_gid = group_gid_;
    opts.policy.group_name = config_.tollgate.group;
    for (const auto& e : config_.daemon.allow_exe)
      opts.policy.exe_allowlist.push_back({e.path, e.sha256});
    opts.settings.question_deadline_ms = config_.filter.question_deadline_ms;
    opts.settings.fallback = config_.filter.fallback;
    opts.settings.inspect_max_bytes = config_.filter.inspect_max_bytes;
    if (config_.daemon.idle_exit_seconds > 0) {
      if (from_systemd_) {
        opts.idle_exit = std::chrono::seconds(config_.daemon.idle_exit_seconds);
      } else {
        TG_LOG_NOTICE(
            "idle_exit_seconds ignored: without socket activation nobody would start "
            "tollgated again");
      }
    }
    server_ = std::make_unique<ipc::ChannelServer>(loop_, std::move(analysis_fd), identity_,
                                                   *engine_, opts);
    server_->OnIdle([this] { sd_event_exit(loop_, 0); });
    if (Status s = server_->Start(); !s) return s;

    OpenFlowLog();
    if (Status s = StartControl(std::move(activated->control)); !s) return s;
    server_->SetBusyCheck([this] { return control_ && control_->busy(); });
    engine_->SetObserver([this](const analysis::DecisionRecord& record) { Observe(record); });

    sd_event_add_time_relative(loop_, &status_timer_, CLOCK_MONOTONIC, 0, 1'000'000, OnStatusTimer,
                               this);
    sd_notify(0, "READY=1\nSTATUS=serving");
    TG_LOG_INFO("ready (protocol %u.%u, %s)", ipc::kProtocolMajor, ipc::kProtocolMinor,
                from_systemd_ ? "socket-activated" : "started by hand");
    r = sd_event_loop(loop_);
    sd_notify(0, "STOPPING=1");
    TG_LOG_INFO("exiting: %s %s", CountersLine(server_->counters()).c_str(),
                EngineLine(engine_->counters()).c_str());
    engine_->SetObserver(nullptr);
    if (control_) control_->Shutdown();
    control_.reset();
    server_.reset();
    flow_log_.reset();  // writes what is queued
    sd_event_source_disable_unref(status_timer_);
    sd_event_unref(loop_);
    if (r < 0) return Unexpected(Error::System("event loop", -r));
    return {};
  }

 private:
  static int OnStop(sd_event_source*, const signalfd_siginfo* si, void* self) {
    auto* d = static_cast<Daemon*>(self);
    TG_LOG_INFO("signal %u: stopping", si->ssi_signo);
    d->server_->Shutdown("tollgated stopping");
    if (d->control_) d->control_->Shutdown();
    sd_event_exit(d->loop_, 0);
    return 0;
  }
  static int OnReload(sd_event_source*, const signalfd_siginfo*, void* self) {
    (void)static_cast<Daemon*>(self)->Reload("SIGHUP");
    return 0;
  }
  static int OnStatusTimer(sd_event_source* s, uint64_t usec, void* self) {
    auto* d = static_cast<Daemon*>(self);
    const auto& c = d->server_->counters();
    sd_notifyf(0, "STATUS=%zu clients, %llu questions, %llu refused peers",
               d->server_->connection_count(), static_cast<unsigned long long>(c.questions),
               static_cast<unsigned long long>(c.peers_refused));
    sd_event_source_set_time(s, usec + 10'000'000);
    sd_event_source_set_enabled(s, SD_EVENT_ON);
    return 0;
  }

  // control.sock: from the service manager, or bound by hand next to analysis.sock. Its group is
  // the admin group (root only when that group does not exist).
  Status StartControl(UniqueFd control_fd) {
    if (!control_fd.valid()) {
      if (from_systemd_) {
        TG_LOG_NOTICE(
            "no control socket passed by the service manager (FileDescriptorName=%s): "
            "the control API is off",
            platform::kControlSocketName);
      } else {
        Expected<platform::RuntimeDir> dir =
            platform::PrepareRuntimeDir(config_.tollgate.runtime_dir, group_gid_);
        if (!dir) return Unexpected(dir.error());
        Expected<UniqueFd> fd =
            platform::BindServiceSocket(*dir, "control.sock", SOCK_STREAM, admin_gid_);
        if (!fd) return Unexpected(fd.error());
        control_fd = std::move(*fd);
        TG_LOG_INFO(
            "control API on %s/control.sock (group %s)", config_.tollgate.runtime_dir.c_str(),
            admin_gid_ == platform::kNoGroup ? "root only" : config_.tollgate.admin_group.c_str());
      }
    }
    DaemonParts parts;
    parts.config = &config_;
    parts.started = started_;
    parts.engine = engine_.get();
    parts.processes = &processes_;
    parts.channel = server_.get();
    parts.flow_log = flow_log_.get();
    parts.flow_log_unavailable = flow_log_unavailable_;
    parts.rule_set = &rule_set_;
    parts.verdicts = &verdicts_;
    parts.reload = [this] { return Reload("control API"); };
    parts.load_context = [this] { return LoadContext(); };
    backend_ = std::make_unique<DaemonBackend>(std::move(parts));
    if (!control_fd.valid()) return {};
    control::ControlServerOptions options;
    options.policy.group_gid = admin_gid_;
    options.policy.group_name = config_.tollgate.admin_group;
    control_ = std::make_unique<control::ControlServer>(loop_, std::move(control_fd), identity_,
                                                        *backend_, options);
    backend_->parts().control = control_.get();
    return control_->Start();
  }

  void OpenFlowLog() {
    if (config_.daemon.flow_log.empty()) {
      flow_log_unavailable_ = "the flow log is off (daemon.flow_log = \"\")";
      return;
    }
    flowlog::FlowLogOptions options;
    options.path = config_.daemon.flow_log;
    options.max_age = std::chrono::hours(24) * config_.daemon.flow_log_max_age_days;
    options.max_bytes = uint64_t{config_.daemon.flow_log_max_mb} << 20;
    Expected<std::unique_ptr<flowlog::FlowLog>> log = flowlog::FlowLog::Open(options);
    if (!log) {
      flow_log_unavailable_ = log.error().message;
      TG_LOG_WARNING("no flow log: %s (set daemon.flow_log, or \"\" to turn it off)",
                     log.error().message.c_str());
      return;
    }
    flow_log_ = std::move(*log);
    // The verdict path never waits for /proc: a record whose process no rule asked for is
    // attributed here, on the log's writer thread (the sock_diag source is internally locked).
    flow_log_->SetEnricher([this](flowlog::FlowRecord& record) {
      if (record.pid || !record.exe.empty()) return;
      std::optional<FlowQuestion> q = control::QuestionFromRecord(record);
      if (!q) return;
      analysis::ProcessLookup found = processes_.Find(*q);
      if (found.state != analysis::Attribution::kFound) return;
      record.pid = found.process.pid;
      record.exe = found.process.exe;
      record.user = found.process.user;
      record.unit = found.process.unit;
      if (!record.uid && found.process.uid != kUnknownId) record.uid = found.process.uid;
    });
    TG_LOG_INFO("flow log at %s", flow_log_->path().c_str());
  }

  // Every decision: counted, streamed to subscribers, logged. Runs on the verdict path, so each
  // step only enqueues.
  void Observe(const analysis::DecisionRecord& record) {
    const size_t action = static_cast<size_t>(record.verdict.action);
    if (action < verdicts_.size()) ++verdicts_[action];
    if (control_) control_->Publish(record);
    if (flow_log_) flow_log_->Append(control::ToFlowRecord(record));
  }

  Status Reload(const char* who) {
    sd_notify(0, "RELOADING=1");
    Status s = LoadRules(false);
    if (!s) {
      TG_LOG_ERROR("%s: reload failed, the rules in force stay in force: %s", who,
                   s.error().message.c_str());
    }
    sd_notify(0, "READY=1");
    return s;
  }

  Config config_;
  uint32_t group_gid_;
  uint32_t admin_gid_;
  std::chrono::system_clock::time_point started_ = std::chrono::system_clock::now();
  RuleSetState rule_set_;
  VerdictCounts verdicts_{};
  std::unique_ptr<flowlog::FlowLog> flow_log_;
  std::string flow_log_unavailable_;
  std::unique_ptr<DaemonBackend> backend_;
  std::unique_ptr<control::ControlServer> control_;
  bool from_systemd_ = false;
  sd_event* loop_ = nullptr;
  sd_event_source* status_timer_ = nullptr;
  platform::LinuxPeerIdentity identity_;
  struct ListFile {
    std::string path;
    ino_t inode = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
  };
  std::map<std::string, ListFile> list_files_;
  Blocklists lists_;  // the lists of the table in force
  SteadyClock clock_;
  platform::SockDiagProcessSource processes_;
  bool classifier_tried_ = false;
  std::unique_ptr<analysis::NdpiClassifier> classifier_;
  std::unique_ptr<analysis::Engine> engine_;
  std::unique_ptr<ipc::ChannelServer> server_;
};

int Main(int argc, char** argv) {
  SetLogProgramName("tollgated");
  Flags flags;
  CLI::App app{"tollgated: Tollgate's analysis daemon (normally started by tollgated.socket)"};
  app.set_version_flag("--version", "tollgated " TOLLGATE_VERSION);
  app.add_option("-c,--config", flags.config_path, "settings file")->each([&](const std::string&) {
    flags.config_explicit = true;
  });
  app.add_option("--runtime-dir", flags.runtime_dir,
                 "directory of analysis.sock when started by hand (default /run/<group>)");
  app.add_option("--group", flags.group,
                 "app group whose members may connect (the socket stays at runtime_dir)");
  app.add_option("--rules-dir", flags.rules_dir, "directory of *.toml rule files");
  app.add_option("--idle-exit", flags.idle_exit_seconds, "exit after this many idle seconds");
  app.add_option("--log-level", flags.log_level, "error, warning, notice, info or debug");
  app.add_option("--flow-log", flags.flow_log, "flow log database (\"\" = off)");
  CLI11_PARSE(app, argc, argv);

  Expected<Config> config = LoadConfigOrDefaults(flags.config_path, flags.config_explicit);
  if (!config) {
    TG_LOG_ERROR("%s", config.error().message.c_str());
    return 1;
  }
  // --group changes who may connect, not where the socket is: the filter finds the socket from
  // the same settings file, so moving it here alone would separate the two.
  if (flags.group) config->tollgate.group = *flags.group;
  if (flags.runtime_dir) config->tollgate.runtime_dir = *flags.runtime_dir;
  if (flags.rules_dir) config->daemon.rules_dir = *flags.rules_dir;
  if (flags.idle_exit_seconds) config->daemon.idle_exit_seconds = *flags.idle_exit_seconds;
  if (flags.flow_log) config->daemon.flow_log = *flags.flow_log;
  if (const char* env = std::getenv("TOLLGATE_RUNTIME_DIR"); env && !flags.runtime_dir) {
    config->tollgate.runtime_dir = env;
  }
  LogLevel level = config->daemon.log_level;
  if (flags.log_level) {
    std::optional<LogLevel> parsed = ParseLogLevel(*flags.log_level);
    if (!parsed) {
      TG_LOG_ERROR("--log-level must be error, warning, notice, info or debug, got \"%s\"",
                   flags.log_level->c_str());
      return 2;
    }
    level = *parsed;
  }
  SetLogLevel(level);

  Expected<uint32_t> gid = LookUpGroup(config->tollgate.group);
  if (!gid) {
    TG_LOG_ERROR("%s", gid.error().message.c_str());
    return 1;
  }
  // The admin group may be absent (a machine where nobody was made an operator): root only then.
  uint32_t admin_gid = platform::kNoGroup;
  if (Expected<uint32_t> admin = LookUpGroup(config->tollgate.admin_group); admin) {
    admin_gid = *admin;
  } else {
    TG_LOG_NOTICE("admin group \"%s\" does not exist: only root may use the control API",
                  config->tollgate.admin_group.c_str());
  }
  RaiseFileLimit();
  Daemon daemon(std::move(*config), *gid, admin_gid);
  if (Status s = daemon.LoadRules(true); !s) {
    TG_LOG_ERROR("cannot start: %s", s.error().message.c_str());
    return 1;
  }
  if (Status s = daemon.Run(); !s) {
    TG_LOG_ERROR("cannot start: %s", s.error().message.c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace tollgate::daemon

int main(int argc, char** argv) { return tollgate::daemon::Main(argc, argv); }
