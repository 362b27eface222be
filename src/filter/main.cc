// tollgate-filter: the filter provider (the macOS network extension's counterpart). Wiring only:
// NFQUEUE reader, our iptables chains, the flow table, the channel client to tollgated, and the
// sandbox it runs in after start-up.
//
// Start-up order matters:
//   1. fork the rules keeper (before any socket exists, so it holds none: a keeper holding the
//      queue socket would keep the queue "bound" and defeat --queue-bypass after a crash);
//   2. bind the queue, then install the chains (never chains without a reader behind them);
//   3. everything that needs files or randomness (event loop, hash keys), then the sandbox;
//   4. connect to the daemon from inside the sandbox, as every later reconnect will.
// On SIGTERM: every held packet gets its fallback, the keeper removes our chains, we exit. On a
// crash the chains stay, so the policy holds: --queue-bypass (fail_open) or drop (fail_closed).
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "analysis/dns.h"
#include "common/config.h"
#include "common/log.h"
#include "flow/flow_table.h"
#include "flow/packet.h"
#include "flow/verdict_cache.h"
#include "ipc/channel_client.h"
#include "ipc/event_time.h"
#include "platform/linux/iptables.h"
#include "platform/linux/nfqueue.h"
#include "platform/linux/peer_credentials.h"
#include "platform/linux/sandbox.h"

namespace tollgate::filter {
namespace {

struct Flags {
  std::string config_path = kDefaultConfigPath;
  bool config_explicit = false;
  std::optional<std::string> runtime_dir;
  std::optional<std::string> socket;
  std::optional<std::string> queues;
  std::optional<std::string> fallback;
  std::optional<uint32_t> deadline_ms;
  std::optional<uint32_t> max_pending;
  bool inbound = false;
  bool no_reuse = false;
  bool no_ipv6 = false;
  bool no_sandbox = false;
  bool connect_at_start = false;
  bool keep_rules = false;
  std::optional<std::string> user;
  std::optional<std::string> log_level;
  std::string test_sandbox_probe;
};

// Runs as a separate process from before the first socket until the filter exits. It keeps the
// privileges the sandboxed filter gives up, for one job: remove our chains on a clean exit.
class RulesKeeper {
 public:
  Status Start(platform::IptablesBackend backend) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return Unexpected(Error::System("pipe", errno));
    pid_t pid = fork();
    if (pid < 0) return Unexpected(Error::System("fork rules keeper", errno));
    if (pid == 0) {
      close(fds[1]);
      // Hold nothing of the filter's: only the pipe and stderr stay open.
      if (fds[0] != 3) {
        dup2(fds[0], 3);
        close(fds[0]);
      }
      syscall(SYS_close_range, 4, ~0U, 0);
      // systemd signals the whole unit on stop; the keeper waits for its instruction instead.
      signal(SIGTERM, SIG_IGN);
      signal(SIGINT, SIG_IGN);
      prctl(PR_SET_NAME, "tollgate-keeper");
      char command = 0;
      ssize_t n;
      do {
        n = read(3, &command, 1);
      } while (n < 0 && errno == EINTR);
      if (n == 1 && command == 'R') {
        Status s = platform::Remove(backend);
        if (!s) {
          TG_LOG_ERROR("removing the chains failed: %s", s.error().message.c_str());
          _exit(1);
        }
        TG_LOG_INFO("chains removed");
      }
      // EOF without 'R': the filter died. The chains stay, so the fallback policy holds.
      _exit(0);
    }
    close(fds[0]);
    pipe_.Reset(fds[1]);
    pid_ = pid;
    return {};
  }

  // Tells the keeper to remove the chains (or just to go) and waits for it.
  void Finish(bool remove_rules) {
    if (pid_ <= 0) return;
    if (remove_rules) {
      char r = 'R';
      (void)!write(pipe_.get(), &r, 1);
    }
    pipe_.Reset();
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

 private:
  UniqueFd pipe_;
  pid_t pid_ = -1;
};

// Turns the flow table's release decisions into NFQUEUE verdicts and marks.
class QueueSink final : public flow::PacketSink {
 public:
  QueueSink(platform::NfQueue& queue, platform::MarkLayout layout)
      : queue_(queue), layout_(layout) {}

  void ReleasePacket(const flow::PacketRef& p, flow::Release how) override {
    using platform::MarkValue;
    using platform::PacketVerdict;
    Status s;
    switch (how) {
      case flow::Release::kAllow:
        s = Repeat(p, MarkValue::kAllow);
        break;
      case flow::Release::kPass:
        s = Repeat(p, MarkValue::kPass);
        break;
      case flow::Release::kDeny:
        s = Repeat(p, MarkValue::kDeny);
        break;
      case flow::Release::kReject:
        s = Repeat(p, MarkValue::kReject);
        break;
      case flow::Release::kInspect:
        s = Repeat(p, MarkValue::kInspect);
        break;
      case flow::Release::kDrop:
        s = queue_.Verdict(p.queue, p.packet_id, PacketVerdict::kDrop);
        break;
    }
    if (!s) ++verdict_failures;
    dirty = true;
  }

  bool dirty = false;
  uint64_t verdict_failures = 0;

 private:
  // NF_REPEAT with the verdict in our mark bits: the chain saves it on the conntrack entry (the
  // kernel here cannot take a conntrack mark with the verdict itself) and acts on it.
  Status Repeat(const flow::PacketRef& p, platform::MarkValue v) {
    return queue_.Verdict(p.queue, p.packet_id, platform::PacketVerdict::kRepeat,
                          layout_.ReleaseMark(p.mark, v));
  }
  platform::NfQueue& queue_;
  platform::MarkLayout layout_;
};

struct FilterCounters {
  uint64_t dns_observations = 0;
  uint64_t dns_skipped = 0;
  uint64_t unparsable = 0;
};

class Filter {
 public:
  Filter(Config config, Flags flags) : config_(std::move(config)), flags_(std::move(flags)) {}

  Status Run() {
    platform::RulesetOptions rules;
    rules.queue_first = config_.filter.queues.first;
    rules.queue_last = config_.filter.queues.last;
    rules.fail_open = config_.filter.fallback == FallbackPolicy::kFailOpen;
    rules.inbound = config_.filter.inbound;
    rules.ipv6 = !flags_.no_ipv6;
    Expected<platform::MarkLayout> layout = platform::MarkLayout::FromMask(rules.mark_mask);
    if (!layout) return Unexpected(layout.error());

    if (Status s = keeper_.Start(rules.backend); !s) return s;

    platform::NfQueueOptions qopts;
    // Headers plus what an inspection may need; never whole GSO super-packets.
    qopts.copy_range = 256 + config_.filter.inspect_max_bytes;
    qopts.fail_open = rules.fail_open;
    // Room for every packet the flow table may hold, so max_pending_flows (not the kernel's
    // default of 1024 queued packets) decides when new flows overflow.
    qopts.max_queue_len = platform::QueueLengthFor(
        uint64_t{config_.filter.max_pending_flows} * flow::FlowTableOptions{}.max_held_per_flow,
        qopts);
    Expected<platform::NfQueue> queue =
        platform::NfQueue::Open(rules.queue_first, rules.queue_last, qopts);
    if (!queue) return Unexpected(queue.error());
    queue_ = std::make_unique<platform::NfQueue>(std::move(*queue));

    if (Status s = platform::Install(rules); !s) return s;
    installed_ = true;
    TG_LOG_INFO("chains installed: queues %u-%u, %s, inbound %s", rules.queue_first,
                rules.queue_last, FallbackPolicyName(config_.filter.fallback),
                rules.inbound ? "on" : "off");

    sink_ = std::make_unique<QueueSink>(*queue_, *layout);
    flow::FlowTableOptions fopts;
    fopts.max_pending = config_.filter.max_pending_flows;
    fopts.fallback = config_.filter.fallback;
    fopts.inspect_max_bytes = config_.filter.inspect_max_bytes;
    table_ = std::make_unique<flow::FlowTable>(fopts, *sink_);
    layout_ = *layout;
    spin_ = std::chrono::microseconds(config_.filter.reply_spin_us);

    int r = sd_event_default(&loop_);
    if (r < 0) return Unexpected(Error::System("sd_event_default", -r));
    sigset_t mask;
    sigemptyset(&mask);
    for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP}) sigaddset(&mask, sig);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    sd_event_add_signal(loop_, nullptr, SIGTERM, OnStop, this);
    sd_event_add_signal(loop_, nullptr, SIGINT, OnStop, this);
    sd_event_add_signal(loop_, nullptr, SIGUSR1, OnReport, this);
    sd_event_add_signal(loop_, nullptr, SIGHUP, OnReport, this);
    sd_event_set_watchdog(loop_, 1);
    sd_event_add_io(loop_, &queue_source_, queue_->fd(), EPOLLIN, OnQueue, this);
    sd_event_add_defer(loop_, &flush_source_, OnFlush, this);
    sd_event_source_set_enabled(flush_source_, SD_EVENT_OFF);
    sd_event_add_time(loop_, &table_timer_, CLOCK_MONOTONIC, UINT64_MAX, 1000, OnTableTimer, this);
    sd_event_source_set_enabled(table_timer_, SD_EVENT_OFF);

    ipc::ClientOptions copts;
    copts.socket_path =
        flags_.socket ? *flags_.socket : config_.tollgate.runtime_dir + "/analysis.sock";
    copts.deadline = std::chrono::milliseconds(config_.filter.question_deadline_ms);
    copts.fallback = config_.filter.fallback;
    copts.daemon_uid = config_.daemon.daemon_uid;
    copts.role = ipc::Role::kFilter;
    copts.build = "tollgate-filter " TOLLGATE_VERSION;
    copts.max_pending = config_.filter.max_pending_flows;
    client_ = std::make_unique<ipc::ChannelClient>(
        loop_, identity_, copts, [this](const ipc::Decision& d) { OnDecision(d); });
    // Verdicts for a batch of answers go to the kernel in the same loop turn, in one sendmsg.
    client_->OnReceiveDone([this] { FlushVerdicts(); });
    // After a rule change the daemon says which kept verdicts no longer hold.
    client_->OnForget([this](const ForgetSelector& selector) { verdicts_.Forget(selector); });
    StartReports();

    if (flags_.no_sandbox) {
      TG_LOG_WARNING(
          "*** --no-sandbox: running WITHOUT seccomp, Landlock or dropped "
          "capabilities. For debugging only; never in production. ***");
    } else if (Status s = EnterSandbox(); !s) {
      return s;
    }

    // On demand by default: the first question connects (DNS observations never do), and that is
    // what makes systemd start tollgated through tollgated.socket. A filter started at boot must
    // not start the daemon before anything needs it (docs/operations.md, "At boot").
    if (flags_.connect_at_start) client_->Start();
#ifdef TOLLGATE_TEST_HOOKS
    if (!flags_.test_sandbox_probe.empty()) {
      sd_event_add_time_relative(loop_, nullptr, CLOCK_MONOTONIC, 100'000, 1000, OnSandboxProbe,
                                 this);
    }
#endif
    sd_notify(0, "READY=1\nSTATUS=filtering");
    TG_LOG_INFO("filtering; daemon at %s, deadline %u ms, fallback %s", copts.socket_path.c_str(),
                config_.filter.question_deadline_ms, FallbackPolicyName(config_.filter.fallback));
    r = sd_event_loop(loop_);
    Shutdown();
    if (r < 0) return Unexpected(Error::System("event loop", -r));
    return {};
  }

  // Called when a start-up step fails after the chains went in: take them out again.
  void AbortCleanup() {
    queue_.reset();
    keeper_.Finish(installed_ && !flags_.keep_rules);
  }

 private:
  Status EnterSandbox() {
    platform::SandboxOptions s;
    if (flags_.user) {
      std::vector<char> buf(16384);
      passwd pw{};
      passwd* found = nullptr;
      if (getpwnam_r(flags_.user->c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) {
        return Unexpected(ErrorCode::kNotFound, "user \"" + *flags_.user + "\" does not exist");
      }
      s.uid = found->pw_uid;
      s.gid = found->pw_gid;
      // Keep membership of the app group so the daemon admits us.
      group gr{};
      group* g = nullptr;
      if (getgrnam_r(config_.tollgate.group.c_str(), &gr, buf.data(), buf.size(), &g) == 0 && g) {
        s.supplementary_groups.push_back(g->gr_gid);
      }
    }
    s.extra_syscalls = {"wait4"};  // the keeper is reaped at exit
    s.program_name = "tollgate-filter";
    Expected<platform::SandboxReport> report = platform::EnterSandbox(s);
    if (!report) return Unexpected(report.error());
    TG_LOG_INFO("sandbox: %s", report->summary.c_str());
    return {};
  }

  static int OnQueue(sd_event_source*, int, uint32_t, void* self) {
    auto* f = static_cast<Filter*>(self);
    MonoTime now = f->Now();
    Expected<size_t> n = f->queue_->Receive(
        [f, now](const platform::QueuedPacket& p) { f->OnPacket(p, now); }, 4096);
    if (!n) TG_LOG_WARNING("queue receive: %s", n.error().message.c_str());
    f->FlushVerdicts();  // what was decided locally (remembered, overflow) goes first
    f->client_->Flush();
    f->client_->AwaitReplies(f->spin_);
    return 0;
  }

  void OnPacket(const platform::QueuedPacket& p, MonoTime now) {
    flow::PacketRef ref{p.queue, p.packet_id, p.mark};
    Expected<flow::ParsedPacket> parsed = flow::ParsePacket(p.payload);
    if (layout_.Classify(p.mark) == platform::MarkValue::kObserve) {
      // DNS replies are observed, never held.
      if (parsed) Observe(*parsed);
      sink_->ReleasePacket(ref, flow::Release::kPass);
      return;
    }
    if (!parsed || !parsed->has_transport) {
      // Nothing to decide on (malformed, or a fragment without its header): the policy decides.
      ++counters_.unparsable;
      sink_->ReleasePacket(ref, config_.filter.fallback == FallbackPolicy::kFailOpen
                                    ? flow::Release::kPass
                                    : flow::Release::kDrop);
      return;
    }
    flow::PacketContext ctx;
    bool inbound =
        p.hook == platform::QueueHook::kLocalIn || p.hook == platform::QueueHook::kPreRouting;
    ctx.direction = inbound ? Direction::kInbound : Direction::kOutbound;
    ctx.iface = inbound ? p.in_iface : p.out_iface;
    ctx.uid = p.uid;
    ctx.gid = p.gid;
    std::optional<FlowQuestion> q = table_->OnPacket(*parsed, ref, ctx, now);
    if (q) AskOrReuse(std::move(*q), now);
    ArmTableTimer();
  }

  // A new flow whose destination has a reusable verdict is decided here, and the daemon is told
  // afterwards (for its log); anything else is asked.
  void AskOrReuse(FlowQuestion q, MonoTime now) {
    if (config_.filter.reuse_verdicts) {
      if (std::optional<Action> kept = verdicts_.Find(q, now)) {
        table_->OnDecision(q.id, *kept, 0, CacheScope::kFlow, now);
        client_->Decided(q, *kept);
        return;
      }
    }
    client_->Ask(std::move(q));
  }

  void Observe(const flow::ParsedPacket& p) {
    std::span<const uint8_t> dns = p.payload;
    if (p.tuple.protocol == ipproto::kTcp) {
      // DNS over TCP: a 2-byte length, then the message. Only whole messages in one segment.
      if (dns.size() < 2 || static_cast<size_t>((dns[0] << 8) | dns[1]) != dns.size() - 2) {
        ++counters_.dns_skipped;
        return;
      }
      dns = dns.subspan(2);
    }
    if (dns.empty() || p.truncated) {
      ++counters_.dns_skipped;
      return;
    }
    ++counters_.dns_observations;
    if (config_.filter.reuse_verdicts) ForgetRenamed(dns);
    client_->Observe(dns);
  }

  // The daemon will learn the names this reply gives (if it parses it as we do): a kept verdict
  // that used the names of one of its addresses may be wrong from now on. The reply is still
  // held, so no flow can use the new name before this runs.
  void ForgetRenamed(std::span<const uint8_t> dns) {
    auto reply = analysis::ParseDnsReply(dns);
    if (!reply) return;  // the daemon cannot read it either
    for (const analysis::DnsRecord& r : reply->answers) {
      if (r.type != analysis::DnsRecord::Type::kCname) {
        verdicts_.NamedByDns(r.address, table_->last_question_id());
      }
    }
  }

  void OnDecision(const ipc::Decision& d) {
    const MonoTime now = Now();
    // The flow itself is stamped as for kFlow; the verdict is kept for its destination too.
    if (d.cache == CacheScope::kDestination && config_.filter.reuse_verdicts &&
        d.source == ipc::DecisionSource::kDaemon && d.question != nullptr) {
      verdicts_.Insert(*d.question, d.action, std::chrono::milliseconds(d.cache_ttl_ms), now,
                       d.cache_until_dns);
    }
    table_->OnDecision(d.id, d.action, d.inspect_bytes, d.cache, now);
    ArmFlush();
    ArmTableTimer();
  }

  void ArmFlush() {
    if (sink_->dirty) sd_event_source_set_enabled(flush_source_, SD_EVENT_ONESHOT);
  }
  static int OnFlush(sd_event_source*, void* self) {
    static_cast<Filter*>(self)->FlushVerdicts();
    return 0;
  }
  void FlushVerdicts() {
    if (!sink_->dirty) return;
    sink_->dirty = false;
    sd_event_source_set_enabled(flush_source_, SD_EVENT_OFF);
    if (Status s = queue_->FlushVerdicts(); !s) {
      TG_LOG_WARNING("sending verdicts: %s", s.error().message.c_str());
    }
  }

  void ArmTableTimer() {
    std::optional<MonoTime> next = table_->NextTimer();
    if (next) ipc::ArmNoLaterThan(table_timer_, *next);
  }
  static int OnTableTimer(sd_event_source*, uint64_t, void* self) {
    auto* f = static_cast<Filter*>(self);
    for (FlowQuestion& q : f->table_->OnTimer(f->Now())) f->client_->Ask(std::move(q));
    f->client_->Flush();
    f->ArmTableTimer();
    return 0;
  }

  static int OnStop(sd_event_source*, const signalfd_siginfo* si, void* self) {
    TG_LOG_INFO("signal %u: stopping", si->ssi_signo);
    sd_event_exit(static_cast<Filter*>(self)->loop_, 0);
    return 0;
  }
  static int OnReport(sd_event_source*, const signalfd_siginfo*, void* self) {
    static_cast<Filter*>(self)->LogCounters("counters");
    return 0;
  }

#ifdef TOLLGATE_TEST_HOOKS
  // Test builds only: after start-up, try one thing the sandbox must refuse, and say what
  // happened. exec and ptrace end the process through the seccomp trap (its own log line).
  static int OnSandboxProbe(sd_event_source*, uint64_t, void* self) {
    auto* f = static_cast<Filter*>(self);
    const std::string& what = f->flags_.test_sandbox_probe;
    int result = -1;
    errno = 0;
    if (what == "open") {
      result = open("/etc/hostname", O_RDONLY | O_CLOEXEC);
    } else if (what == "socket") {
      result = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    } else if (what == "exec") {
      char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
      result = execve("/bin/true", argv, environ);
    } else if (what == "ptrace") {
      result = static_cast<int>(ptrace(PTRACE_TRACEME, 0, nullptr, nullptr));
    }
    if (result >= 0) {
      TG_LOG_ERROR("sandbox probe %s: ALLOWED", what.c_str());
    } else {
      TG_LOG_NOTICE("sandbox probe %s: refused (%s)", what.c_str(), std::strerror(errno));
    }
    return 0;
  }
#endif

  void LogCounters(const char* what) {
    const auto& t = table_->counters();
    const auto& q = queue_->counters();
    const auto& c = client_->status();
    TG_LOG_INFO(
        "%s: packets=%llu new_flows=%llu joined=%llu questions=%llu answered=%llu "
        "fallbacks=%llu late=%llu allow=%llu pass=%llu deny=%llu drop=%llu reject=%llu "
        "inspect=%llu remembered_hits=%llu overflow=%llu pending=%zu dns_observations=%llu "
        "nfq_lost=%llu nfq_parse_errors=%llu verdict_errors=%llu channel_dropped=%llu "
        "reused=%llu reuse_kept=%zu reuse_renamed=%llu decided_sent=%llu decided_dropped=%llu "
        "channel=%s",
        what, ULL(t.packets), ULL(t.new_flows), ULL(t.joined), ULL(t.questions), ULL(c.answered),
        ULL(c.fallbacks()), ULL(c.late_verdicts), ULL(t.released[0]), ULL(t.released[1]),
        ULL(t.released[2]), ULL(t.released[3]), ULL(t.released[4]), ULL(t.released[5]),
        ULL(t.remembered_hits), ULL(t.overflow), table_->pending(), ULL(counters_.dns_observations),
        ULL(q.lost), ULL(q.parse_errors), ULL(q.verdict_errors), ULL(c.messages_dropped),
        ULL(verdicts_.counters().hits), verdicts_.size(), ULL(verdicts_.counters().renamed),
        ULL(c.decided_sent), ULL(c.decided_dropped), ipc::ChannelStateName(c.state));
  }
  static unsigned long long ULL(uint64_t v) { return static_cast<unsigned long long>(v); }

  // Our counters for the daemon's status and metrics (FilterReport): right after every handshake,
  // then once a second while they change. A report rides with the next batch and is never waited
  // for; one the channel cannot take now is skipped, and the next carries the newer totals.
  static constexpr uint64_t kReportIntervalUsec = 1'000'000;
  void StartReports() {
    client_->OnConnected([this] { SendReport(/*force=*/true); });
    sd_event_add_time_relative(loop_, &report_timer_, CLOCK_MONOTONIC, kReportIntervalUsec, 100'000,
                               OnReportTimer, this);
  }
  static int OnReportTimer(sd_event_source* s, uint64_t, void* self) {
    static_cast<Filter*>(self)->SendReport(/*force=*/false);
    sd_event_source_set_time_relative(s, kReportIntervalUsec);
    sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
    return 0;
  }
  void SendReport(bool force) {
    ipc::FilterReport report = MakeReport();
    if (!force && report == last_report_) return;
    if (client_->Report(report)) last_report_ = report;
  }
  ipc::FilterReport MakeReport() const {
    const auto& t = table_->counters();
    const auto& q = queue_->counters();
    const auto& c = client_->status();
    ipc::FilterReport r;
    r.packets = q.received;
    r.questions = t.questions;
    r.answered = c.answered;
    r.fallbacks_deadline = c.fallbacks_deadline;
    r.fallbacks_daemon_away = c.fallbacks_unavailable;
    // Past max_pending the flow table gives the fallback without asking; the channel's own bound
    // (the same number) is the rarer second line.
    r.fallbacks_overflow = t.overflow + c.fallbacks_overload;
    r.late_answers = c.late_verdicts;
    r.pending = static_cast<uint32_t>(std::min<size_t>(table_->pending(), UINT32_MAX));
    r.max_pending = config_.filter.max_pending_flows;
    r.queue_lost = q.lost;
    r.queue_enobufs = q.enobufs;
    r.verdict_errors = q.verdict_errors;
    r.channel_dropped = c.messages_dropped;
    r.first_queue = config_.filter.queues.first;
    r.last_queue = config_.filter.queues.last;
    r.fail_open = config_.filter.fallback == FallbackPolicy::kFailOpen;
    r.reused = verdicts_.counters().hits;
    return r;
  }

  void Shutdown() {
    sd_notify(0, "STOPPING=1");
    // Every question still open gets its fallback, and every held packet with it.
    client_->Stop();
    table_->ReleaseAll();
    FlushVerdicts();
    LogCounters("exiting");
    sd_event_source_disable_unref(queue_source_);
    sd_event_source_disable_unref(flush_source_);
    sd_event_source_disable_unref(table_timer_);
    sd_event_source_disable_unref(report_timer_);
    client_.reset();
    queue_.reset();
    keeper_.Finish(installed_ && !flags_.keep_rules);
    sd_event_unref(loop_);
  }

  MonoTime Now() const { return ipc::LoopNow(loop_); }

  Config config_;
  Flags flags_;
  RulesKeeper keeper_;
  bool installed_ = false;
  platform::MarkLayout layout_;
  std::unique_ptr<platform::NfQueue> queue_;
  std::unique_ptr<QueueSink> sink_;
  std::unique_ptr<flow::FlowTable> table_;
  platform::LinuxPeerIdentity identity_;
  std::unique_ptr<ipc::ChannelClient> client_;
  sd_event* loop_ = nullptr;
  sd_event_source* queue_source_ = nullptr;
  sd_event_source* flush_source_ = nullptr;
  sd_event_source* table_timer_ = nullptr;
  sd_event_source* report_timer_ = nullptr;
  ipc::FilterReport last_report_;  // the last one the channel took
  FilterCounters counters_;
  Duration spin_{0};
  flow::VerdictCache verdicts_;  // reusable verdicts by destination ([filter] reuse_verdicts)
};

Expected<QueueRange> ParseQueues(const std::string& text) {
  auto dash = text.find('-');
  auto num = [](const std::string& s) -> std::optional<uint16_t> {
    if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string::npos) {
      return std::nullopt;
    }
    unsigned long v = std::stoul(s);
    if (v > 65535) return std::nullopt;
    return static_cast<uint16_t>(v);
  };
  auto first = num(text.substr(0, dash));
  auto last = dash == std::string::npos ? first : num(text.substr(dash + 1));
  if (!first || !last || *last < *first) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "--queues must be N or A-B with A <= B <= 65535, got \"" + text + "\"");
  }
  return QueueRange{*first, *last};
}

int Main(int argc, char** argv) {
  SetLogProgramName("tollgate-filter");
  Flags flags;
  CLI::App app{"tollgate-filter: sees every new flow, asks tollgated, applies the verdict"};
  app.set_version_flag("--version", "tollgate-filter " TOLLGATE_VERSION);
  app.add_option("-c,--config", flags.config_path, "settings file")->each([&](const std::string&) {
    flags.config_explicit = true;
  });
  app.add_option("--runtime-dir", flags.runtime_dir, "where tollgated's analysis.sock is");
  app.add_option("--socket", flags.socket, "path of tollgated's analysis socket");
  app.add_option("--queues", flags.queues, "NFQUEUE number or range, e.g. 0 or 0-1");
  app.add_option("--fallback", flags.fallback, "fail_open or fail_closed");
  app.add_option("--deadline-ms", flags.deadline_ms, "how long a question may wait");
  app.add_option("--max-pending", flags.max_pending, "flows waiting for a verdict at most");
  app.add_flag("--inbound", flags.inbound, "also ask about new inbound flows");
  app.add_flag("--no-reuse", flags.no_reuse,
               "ask the daemon about every new flow (reuse_verdicts = false)");
  app.add_flag("--no-ipv6", flags.no_ipv6, "leave IPv6 alone");
  app.add_flag("--no-sandbox", flags.no_sandbox, "DEBUGGING ONLY: run without the sandbox");
  app.add_flag("--connect-at-start", flags.connect_at_start,
               "connect to the daemon at once instead of at the first question");
  app.add_flag("--keep-rules", flags.keep_rules, "leave the chains installed at exit");
  app.add_option("--user", flags.user, "run as this user after start-up (keeps CAP_NET_ADMIN)");
  app.add_option("--log-level", flags.log_level, "error, warning, notice, info or debug");
#ifdef TOLLGATE_TEST_HOOKS
  app.add_option("--test-sandbox-probe", flags.test_sandbox_probe,
                 "TEST BUILDS: try open|socket|exec|ptrace after start-up");
#endif
  CLI11_PARSE(app, argc, argv);

  Expected<Config> config = LoadConfigOrDefaults(flags.config_path, flags.config_explicit);
  if (!config) {
    TG_LOG_ERROR("%s", config.error().message.c_str());
    return 1;
  }
  if (flags.runtime_dir) config->tollgate.runtime_dir = *flags.runtime_dir;
  if (const char* env = std::getenv("TOLLGATE_RUNTIME_DIR"); env && !flags.runtime_dir) {
    config->tollgate.runtime_dir = env;
  }
  if (flags.queues) {
    Expected<QueueRange> q = ParseQueues(*flags.queues);
    if (!q) {
      TG_LOG_ERROR("%s", q.error().message.c_str());
      return 2;
    }
    config->filter.queues = *q;
  }
  if (flags.fallback) {
    auto p = ParseFallbackPolicy(*flags.fallback);
    if (!p) {
      TG_LOG_ERROR("--fallback must be fail_open or fail_closed, got \"%s\"",
                   flags.fallback->c_str());
      return 2;
    }
    config->filter.fallback = *p;
  }
  if (flags.deadline_ms) config->filter.question_deadline_ms = *flags.deadline_ms;
  if (flags.max_pending) config->filter.max_pending_flows = *flags.max_pending;
  if (flags.inbound) config->filter.inbound = true;
  if (flags.no_reuse) config->filter.reuse_verdicts = false;
  if (flags.log_level) {
    std::optional<LogLevel> level = ParseLogLevel(*flags.log_level);
    if (!level) {
      TG_LOG_ERROR("--log-level must be error, warning, notice, info or debug, got \"%s\"",
                   flags.log_level->c_str());
      return 2;
    }
    SetLogLevel(*level);
  }

  Filter filter(std::move(*config), std::move(flags));
  if (Status s = filter.Run(); !s) {
    TG_LOG_ERROR("cannot run: %s", s.error().message.c_str());
    filter.AbortCleanup();
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace tollgate::filter

#ifdef TOLLGATE_SANITIZER_BUILD
// LeakSanitizer's exit-time check stops the process's threads with ptrace, which the sandbox
// forbids by design; in sanitizer builds the filter leaves leak checking to the unit tests of its
// parts, which run unsandboxed. ASan and UBSan stay fully on.
extern "C" const char* __lsan_default_options() { return "detect_leaks=0"; }
#endif

int main(int argc, char** argv) { return tollgate::filter::Main(argc, argv); }
