// Tollgate's netfilter ruleset (also in docs/filter-chains.md, keep the two in step).
//
// Goal: only the first packet(s) of a flow reach userspace; the verdict then lives on the
// conntrack entry (ctmark) and the kernel applies it to the rest of the flow.
//
// Mark field: a run of >= 3 bits (default 0x00700000, RulesetOptions::mark_mask) in both the packet
// mark and the conntrack mark, holding a MarkValue: 1 allow, 2 deny, 3 reject, 4 inspect (ctmark),
// 5 pass, 6 observe (packet mark only). Every match uses value/mask, so other users of the marks
// keep their bits.
//
// Why NF_REPEAT and a packet mark: this kernel has no NFQUEUE conntrack glue (NFQA_CT in a
// verdict), so the filter cannot write the ctmark itself. It releases a packet with NF_REPEAT and
// NFQA_MARK = the verdict; NF_REPEAT re-runs the same hook (mangle OUTPUT or INPUT) from its first
// rule, where our chain sees the mark, saves it into the ctmark with CONNMARK --save-mark, and acts
// on it. The same re-run means a repeated packet must carry a field != 0 or it would be queued
// again.
//
// Tables and hooks:
//  mangle OUTPUT -> TOLLGATE-OUT (locally generated packets; jump inserted as rule 1)
//  mangle INPUT  -> TOLLGATE-IN  (packets for this host: DNS replies, inbound flows)
//    mangle runs after conntrack (-200) at -150, so ctstate and ctmark are known there, and it is
//    the table where marks are meant to change (a changed mark re-routes in OUTPUT). NFQUEUE is
//    valid in every table; REJECT is not (filter INPUT/FORWARD/OUTPUT only), hence:
//  filter OUTPUT, filter INPUT -> TOLLGATE-REJECT: ctmark reject -> REJECT (tcp-reset for TCP,
//    icmp(6) admin-prohibited otherwise), only for packets in the flow's ORIGINAL direction: the
//    RST or ICMP error REJECT sends is attached to the same conntrack entry in the REPLY direction,
//    and must not be rejected in turn (REJECT of a RST drops it, and the client would wait
//    instead).
//  We ACCEPT nothing: a decided-allow flow RETURNs, so rules of other software after our jump still
//  run. Deny is a DROP in mangle, as early as possible.
//
// TOLLGATE-OUT, in order:
//  -o <excluded> RETURN
//  mark=0 & ctmark=allow -> RETURN           hot path: almost every packet leaves here
//  mark in {allow,deny,reject,inspect} -> CONNMARK --save-mark   (back from the filter)
//  ctmark=deny -> DROP
//  mark!=0 -> RETURN                          was in userspace already: allow/reject/inspect/pass
//  ctmark=inspect & ctdir ORIGINAL -> NFQUEUE client bytes of flows under inspection
//  tcp|udp|icmp & ctstate NEW & ctmark=0 -> NFQUEUE   (--queue-bypass iff fail_open)
// TOLLGATE-IN: the same, preceded by DNS observations: udp/tcp sport 53, ctstate ESTABLISHED,
//  ctdir REPLY, mark=0 -> MARK observe, then mark=observe -> NFQUEUE --queue-bypass (always: a DNS
//  reply is never held). Same queue as decisions; the filter recognises observations by the mark
//  (unambiguous, unlike ports: an inbound flow may come from port 53 too). The new-flow rules are
//  present only with RulesetOptions::inbound; loopback flows are decided once, in OUTPUT (in INPUT
//  they carry the ctmark, or the mark the filter gave them).
//
// Facts of the kernel that shape this:
//  - A dropped first packet takes its unconfirmed conntrack entry with it: a deny or reject verdict
//    on a SYN is not remembered by the kernel, so a retransmitted SYN or the next UDP datagram is a
//    new NEW entry and is queued again. The filter must remember recent deny/reject verdicts.
//  - ICMPv6 neighbour discovery has no conntrack entry (ctstate INVALID), so it is never queued.
//  - Connections that existed before Install() are ESTABLISHED with ctmark 0 and pass untouched;
//    a conntrack entry deleted later (Forget) comes back as NEW on its next packet and is queued.
//  - ip(6)tables-restore --noflush: ":CHAIN" creates the chain or flushes it if it exists (both
//    backends), which makes install idempotent in one transaction.

#include "platform/linux/iptables.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "common/unique_fd.h"

extern char** environ;

namespace tollgate::platform {
namespace {

constexpr const char* kEnvBackend = "TOLLGATE_IPTABLES_BACKEND";
// iptables-legacy waits this long for /run/xtables.lock; a hung tool is killed a little later.
constexpr int kLockWaitSeconds = 10;
constexpr auto kToolTimeout = std::chrono::seconds(kLockWaitSeconds + 20);

// ---------------------------------------------------------------------------------------------
// Running iptables tools: fork/exec with the restore text on stdin, no shell.

struct ToolResult {
  int exit_code = 0;
  std::string out;
  std::string err;
};

Expected<std::string> FindTool(const std::string& name) {
  // A fixed list instead of $PATH: the filter runs as root, and the tool it execs must not depend
  // on the environment it was started from.
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    std::string path = std::string(dir) + "/" + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return Unexpected(ErrorCode::kNotFound,
                    name +
                        " not found in /usr/sbin, /sbin, /usr/bin, /bin; install the iptables "
                        "package or pick another backend (" +
                        kEnvBackend + "=legacy|nft)");
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

Expected<ToolResult> RunTool(const std::string& path, const std::vector<std::string>& args,
                             std::string_view input) {
  // stdin is a socket rather than a pipe so that writing to a tool that died early gives EPIPE
  // (send with MSG_NOSIGNAL) instead of a SIGPIPE that would kill the filter.
  int in_pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pair) != 0) {
    return Unexpected(Error::System("socketpair for " + path, errno));
  }
  UniqueFd in_parent(in_pair[0]), in_child(in_pair[1]);
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return Unexpected(Error::System("pipe for " + path, errno));
  UniqueFd out_parent(out_pipe[0]), out_child(out_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return Unexpected(Error::System("pipe for " + path, errno));
  UniqueFd err_parent(err_pipe[0]), err_child(err_pipe[1]);

  std::vector<std::string> argv_storage;
  argv_storage.push_back(path);
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  const pid_t pid = fork();
  if (pid < 0) return Unexpected(Error::System("fork for " + path, errno));
  if (pid == 0) {
    // Child: only async-signal-safe calls from here to execve.
    const int fds[3] = {in_child.get(), out_child.get(), err_child.get()};
    for (int target = 0; target < 3; ++target) {
      if (fds[target] == target) {
        fcntl(target, F_SETFD, 0);
      } else if (dup2(fds[target], target) < 0) {
        _exit(126);
      }
    }
    close_range(3, ~0U, 0);  // the netlink sockets and anything else of ours stay with us
    execve(path.c_str(), argv.data(), environ);
    static constexpr char kMsg[] = "tollgate: execve of the iptables tool failed\n";
    (void)!write(2, kMsg, sizeof(kMsg) - 1);
    _exit(127);
  }
  in_child.Reset();
  out_child.Reset();
  err_child.Reset();
  SetNonBlocking(in_parent.get());
  SetNonBlocking(out_parent.get());
  SetNonBlocking(err_parent.get());

  ToolResult result;
  size_t written = 0;
  if (input.empty()) in_parent.Reset();
  const auto deadline = std::chrono::steady_clock::now() + kToolTimeout;
  bool timed_out = false;
  while (out_parent.valid() || err_parent.valid()) {
    pollfd fds[3];
    int n = 0;
    int in_idx = -1, out_idx = -1, err_idx = -1;
    if (in_parent.valid()) in_idx = n, fds[n++] = {in_parent.get(), POLLOUT, 0};
    if (out_parent.valid()) out_idx = n, fds[n++] = {out_parent.get(), POLLIN, 0};
    if (err_parent.valid()) err_idx = n, fds[n++] = {err_parent.get(), POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    const int ready = poll(fds, static_cast<nfds_t>(n), static_cast<int>(left.count()));
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (in_idx >= 0 && fds[in_idx].revents != 0) {
      const ssize_t w = send(in_parent.get(), input.data() + written, input.size() - written,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) written += static_cast<size_t>(w);
      // Done, or the tool stopped reading (it failed; its stderr says why).
      if (written == input.size() || (w < 0 && errno != EAGAIN && errno != EINTR)) {
        in_parent.Reset();
      }
    }
    auto drain = [](UniqueFd& fd, short revents, std::string& sink) {
      if (revents == 0) return;
      char buf[4096];
      const ssize_t r = read(fd.get(), buf, sizeof(buf));
      if (r > 0) {
        sink.append(buf, static_cast<size_t>(r));
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        fd.Reset();
      }
    };
    if (out_idx >= 0) drain(out_parent, fds[out_idx].revents, result.out);
    if (err_idx >= 0) drain(err_parent, fds[err_idx].revents, result.err);
  }
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Unexpected(Error::System("waitpid for " + path, errno));
  }
  if (timed_out) {
    return Unexpected(ErrorCode::kTimeout,
                      path + " did not finish in " + std::to_string(kToolTimeout.count()) +
                          " s and was killed; is another program holding the xtables lock?");
  }
  if (WIFSIGNALED(status)) {
    return Unexpected(ErrorCode::kSystem,
                      path + " was killed by signal " + std::to_string(WTERMSIG(status)));
  }
  result.exit_code = WEXITSTATUS(status);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Backends and their tools.

struct Tools {
  std::string restore;
  std::string save;
};

Tools ToolNames(IptablesBackend backend, IpFamily family) {
  const std::string base = family == IpFamily::kIpv4 ? "iptables" : "ip6tables";
  switch (backend) {
    case IptablesBackend::kNft:
      return {base + "-nft-restore", base + "-nft-save"};
    case IptablesBackend::kLegacy:
      return {base + "-legacy-restore", base + "-legacy-save"};
    default:
      return {base + "-restore", base + "-save"};
  }
}

// Which flavour iptables-save is: "iptables-save v1.8.9 (nf_tables)" or "(legacy)".
Expected<IptablesBackend> ConcreteBackend(IptablesBackend backend) {
  if (backend != IptablesBackend::kSystemDefault) return backend;
  auto path = FindTool("iptables-save");
  if (!path) return Unexpected(path.error());
  auto run = RunTool(*path, {"--version"}, {});
  if (!run) return Unexpected(run.error());
  if (run->out.find("nf_tables") != std::string::npos) return IptablesBackend::kNft;
  if (run->out.find("legacy") != std::string::npos) return IptablesBackend::kLegacy;
  return Unexpected(ErrorCode::kUnavailable,
                    "cannot tell the flavour of " + *path + " from `" + run->out + "`");
}

// ---------------------------------------------------------------------------------------------
// The ruleset as data, rendered to iptables-restore text.

struct TableSpec {
  std::string name;
  std::vector<std::string> chains;  // ours, declared with ":NAME - [0:0]"
  std::vector<std::string> rules;   // "-A ..." lines of our chains
  std::vector<std::string> jumps;   // "-I BUILTIN 1 -j OURS" lines
};

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%x", v);
  return buf;
}

std::vector<TableSpec> BuildRuleset(IpFamily family, const RulesetOptions& o,
                                    const MarkLayout& layout) {
  const bool v4 = family == IpFamily::kIpv4;
  const std::string mask = Hex(layout.mask);
  auto field = [&](MarkValue v) { return Hex(layout.Value(v)) + "/" + mask; };
  const std::string queue =
      o.queue_first == o.queue_last
          ? "--queue-num " + std::to_string(o.queue_first)
          : "--queue-balance " + std::to_string(o.queue_first) + ":" + std::to_string(o.queue_last);
  const std::string to_queue_decide =
      "-j NFQUEUE " + queue + (o.fail_open ? " --queue-bypass" : "");
  const std::string to_queue_observe = "-j NFQUEUE " + queue + " --queue-bypass";
  const std::string none = "-m mark --mark " + field(MarkValue::kNone);
  const std::string some = "-m mark ! --mark " + field(MarkValue::kNone);
  const std::string icmp = v4 ? "icmp" : "ipv6-icmp";

  auto decided_and_new = [&](const std::string& chain, bool queue_new) {
    std::vector<std::string> r;
    const std::string a = "-A " + chain + " ";
    r.push_back(a + none + " -m connmark --mark " + field(MarkValue::kAllow) + " -j RETURN");
    r.push_back(a + some + " -m mark ! --mark " + field(MarkValue::kPass) + " -m mark ! --mark " +
                field(MarkValue::kObserve) + " -j CONNMARK --save-mark --nfmask " + mask +
                " --ctmask " + mask);
    r.push_back(a + "-m connmark --mark " + field(MarkValue::kDeny) + " -j DROP");
    r.push_back(a + some + " -j RETURN");
    r.push_back(a + "-m connmark --mark " + field(MarkValue::kInspect) +
                " -m conntrack --ctdir ORIGINAL " + to_queue_decide);
    if (queue_new) {
      for (const std::string& proto : {std::string("tcp"), std::string("udp"), icmp}) {
        r.push_back(a + "-p " + proto + " -m conntrack --ctstate NEW -m connmark --mark " +
                    field(MarkValue::kNone) + " " + to_queue_decide);
      }
    }
    return r;
  };

  TableSpec mangle{"mangle", {std::string(kChainOut), std::string(kChainIn)}, {}, {}};
  const std::string out = std::string(kChainOut);
  const std::string in = std::string(kChainIn);
  for (const std::string& iface : o.excluded_interfaces) {
    mangle.rules.push_back("-A " + out + " -o " + iface + " -j RETURN");
  }
  for (const std::string& r : decided_and_new(out, true)) mangle.rules.push_back(r);
  for (const std::string& iface : o.excluded_interfaces) {
    mangle.rules.push_back("-A " + in + " -i " + iface + " -j RETURN");
  }
  for (const char* proto : {"udp", "tcp"}) {
    mangle.rules.push_back(
        "-A " + in + " -p " + proto + " -m " + proto + " --sport 53 " + none +
        " -m conntrack --ctstate ESTABLISHED --ctdir REPLY -j MARK --set-xmark " +
        field(MarkValue::kObserve));
  }
  mangle.rules.push_back("-A " + in + " -m mark --mark " + field(MarkValue::kObserve) + " " +
                         to_queue_observe);
  for (const std::string& r : decided_and_new(in, o.inbound)) mangle.rules.push_back(r);
  mangle.jumps = {"-I OUTPUT 1 -j " + out, "-I INPUT 1 -j " + in};

  const std::string rej = std::string(kChainReject);
  TableSpec filter{"filter", {rej}, {}, {}};
  filter.rules = {
      "-A " + rej + " -m connmark ! --mark " + field(MarkValue::kReject) + " -j RETURN",
      "-A " + rej + " -p tcp -m conntrack --ctdir ORIGINAL -j REJECT --reject-with tcp-reset",
      "-A " + rej + " -m conntrack --ctdir ORIGINAL -j REJECT --reject-with " +
          (v4 ? "icmp-admin-prohibited" : "icmp6-adm-prohibited"),
  };
  filter.jumps = {"-I OUTPUT 1 -j " + rej, "-I INPUT 1 -j " + rej};
  return {mangle, filter};
}

// What a previous run (or an older version) left behind in one table.
struct Leftovers {
  std::string table;
  std::vector<std::string> chains;   // our chains that exist
  std::vector<std::string> deletes;  // "-D CHAIN spec" for every rule elsewhere that jumps to ours
};

// Splits an iptables-save rule line into tokens; quoted strings ("...", with \" escapes, as
// iptables-save writes comments) stay one token.
std::vector<std::string_view> Tokenize(std::string_view line) {
  std::vector<std::string_view> tokens;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    if (i >= line.size()) break;
    const size_t start = i;
    bool quoted = false;
    while (i < line.size() && (quoted || line[i] != ' ')) {
      if (line[i] == '\\' && quoted && i + 1 < line.size()) {
        i += 2;
        continue;
      }
      if (line[i] == '"') quoted = !quoted;
      ++i;
    }
    tokens.push_back(line.substr(start, i - start));
  }
  return tokens;
}

bool IsOurs(std::string_view chain) { return chain.substr(0, kChainPrefix.size()) == kChainPrefix; }

std::vector<Leftovers> FindLeftovers(std::string_view save_output) {
  std::vector<Leftovers> tables;
  std::istringstream in{std::string(save_output)};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '*') {
      tables.push_back(Leftovers{line.substr(1), {}, {}});
      continue;
    }
    if (tables.empty()) continue;
    Leftovers& t = tables.back();
    if (line[0] == ':') {
      const std::string chain = line.substr(1, line.find(' ') - 1);
      if (IsOurs(chain)) t.chains.push_back(chain);
      continue;
    }
    if (line.rfind("-A ", 0) != 0) continue;
    const auto tokens = Tokenize(line);
    if (tokens.size() < 2 || IsOurs(tokens[1])) continue;  // rules inside our chains get flushed
    for (size_t i = 2; i + 1 < tokens.size(); ++i) {
      if ((tokens[i] == "-j" || tokens[i] == "-g") && IsOurs(tokens[i + 1])) {
        t.deletes.push_back("-D" + line.substr(2));
        break;
      }
    }
  }
  std::erase_if(tables, [](const Leftovers& t) { return t.chains.empty() && t.deletes.empty(); });
  return tables;
}

// One iptables-restore --noflush document: per table, declare (create-or-flush) our new chains,
// flush our chains that are going away, delete every jump to ours, delete the chains going away,
// then add the rules and the jumps. Either table of a family fails, the tool reports it.
std::string Compose(const std::vector<TableSpec>& ruleset,
                    const std::vector<Leftovers>& leftovers) {
  std::vector<std::string> tables;
  for (const auto& t : ruleset) tables.push_back(t.name);
  for (const auto& l : leftovers) {
    if (std::find(tables.begin(), tables.end(), l.table) == tables.end()) tables.push_back(l.table);
  }
  std::string text;
  for (const std::string& name : tables) {
    const TableSpec* spec = nullptr;
    for (const auto& t : ruleset) spec = t.name == name ? &t : spec;
    const Leftovers* old = nullptr;
    for (const auto& l : leftovers) old = l.table == name ? &l : old;
    std::vector<std::string> going;
    if (old != nullptr) {
      for (const auto& c : old->chains) {
        if (spec == nullptr ||
            std::find(spec->chains.begin(), spec->chains.end(), c) == spec->chains.end()) {
          going.push_back(c);
        }
      }
    }
    text += "*" + name + "\n";
    if (spec != nullptr) {
      for (const auto& c : spec->chains) text += ":" + c + " - [0:0]\n";
    }
    for (const auto& c : going) text += "-F " + c + "\n";
    if (old != nullptr) {
      for (const auto& d : old->deletes) text += d + "\n";
    }
    for (const auto& c : going) text += "-X " + c + "\n";
    if (spec != nullptr) {
      for (const auto& r : spec->rules) text += r + "\n";
      for (const auto& j : spec->jumps) text += j + "\n";
    }
    text += "COMMIT\n";
  }
  return text;
}

// "iptables-restore: line 7 failed: ..." -> the line we sent, so the error names the rule.
std::string ExplainRestoreError(const std::string& err, const std::string& input) {
  std::string message = err;
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  const size_t at = err.find("line ");
  if (at != std::string::npos) {
    unsigned line_no = 0;
    const char* begin = err.data() + at + 5;
    auto [ptr, ec] = std::from_chars(begin, err.data() + err.size(), line_no);
    if (ec == std::errc() && line_no > 0) {
      std::istringstream in(input);
      std::string line;
      for (unsigned i = 0; i < line_no && std::getline(in, line); ++i) {
      }
      message += " [line " + std::to_string(line_no) + ": `" + line + "`]";
    }
  }
  return message;
}

Expected<std::string> Save(IpFamily family, IptablesBackend backend) {
  const Tools names = ToolNames(backend, family);
  auto path = FindTool(names.save);
  if (!path) return Unexpected(path.error());
  auto run = RunTool(*path, {}, {});
  if (!run) return Unexpected(run.error());
  if (run->exit_code != 0) {
    return Unexpected(ErrorCode::kSystem,
                      *path + " failed (exit " + std::to_string(run->exit_code) + "): " + run->err);
  }
  return std::move(run->out);
}

Status Restore(IpFamily family, IptablesBackend backend, const std::string& text) {
  const Tools names = ToolNames(backend, family);
  auto path = FindTool(names.restore);
  if (!path) return Unexpected(path.error());
  auto run = RunTool(*path, {"--noflush", "--wait=" + std::to_string(kLockWaitSeconds)}, text);
  if (!run) return Unexpected(run.error());
  if (run->exit_code != 0) {
    std::string message = *path + " failed (exit " + std::to_string(run->exit_code) +
                          "): " + ExplainRestoreError(run->err, text);
    if (run->err.find("No chain/target/match") != std::string::npos ||
        run->err.find("Could not") != std::string::npos) {
      message +=
          "; the kernel needs NFQUEUE, connmark, CONNMARK, mark, MARK, conntrack and "
          "REJECT support (xt_* / ip(6)t_REJECT modules)";
    }
    return Unexpected(ErrorCode::kSystem, message);
  }
  return {};
}

// Removes leftovers and applies `ruleset` (possibly empty) for one family in one transaction.
Status Apply(IpFamily family, IptablesBackend backend, const std::vector<TableSpec>& ruleset) {
  auto current = Save(family, backend);
  if (!current) return Unexpected(current.error());
  const auto leftovers = FindLeftovers(*current);
  if (ruleset.empty() && leftovers.empty()) return {};
  return Restore(family, backend, Compose(ruleset, leftovers));
}

bool LegacyTablesExist(IpFamily family) {
  // Reading the names avoids running iptables-legacy-save, which would load the legacy modules on
  // a host that never used them.
  std::ifstream names(family == IpFamily::kIpv4 ? "/proc/net/ip_tables_names"
                                                : "/proc/net/ip6_tables_names");
  std::string name;
  return static_cast<bool>(names >> name);
}

// Leftovers in the backend we are not using would still queue packets (both kernel interfaces
// are active at once), so they go too. Best effort: the other flavour may not be installed.
void SweepOtherBackend(IptablesBackend used) {
  auto concrete = ConcreteBackend(used);
  if (!concrete) {
    TG_LOG_WARNING("iptables: not sweeping the other backend: %s",
                   concrete.error().message.c_str());
    return;
  }
  const IptablesBackend other =
      *concrete == IptablesBackend::kLegacy ? IptablesBackend::kNft : IptablesBackend::kLegacy;
  for (IpFamily family : {IpFamily::kIpv4, IpFamily::kIpv6}) {
    if (other == IptablesBackend::kLegacy && !LegacyTablesExist(family)) continue;
    if (!FindTool(ToolNames(other, family).save)) continue;
    auto status = Apply(family, other, {});
    if (!status) {
      TG_LOG_WARNING("iptables: could not remove Tollgate leftovers from the %s backend: %s",
                     BackendName(other), status.error().message.c_str());
    }
  }
}

bool ValidInterfaceName(const std::string& name) {
  // Linux allows almost anything in a name; we allow what real interfaces use, which also keeps
  // anything that could break the restore text (spaces, quotes, newlines) out.
  if (name.empty() || name.size() > 15) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || (c == '+' && i + 1 == name.size());
    if (!ok) return false;
  }
  return name != "." && name != "..";
}

}  // namespace

// -----------------------------------------------------------------------------------------------

Expected<IptablesBackend> ResolveBackend(IptablesBackend backend) {
  if (backend != IptablesBackend::kAuto) return backend;
  const char* env = std::getenv(kEnvBackend);
  if (env == nullptr || *env == '\0' || std::strcmp(env, "default") == 0) {
    return IptablesBackend::kSystemDefault;
  }
  if (std::strcmp(env, "legacy") == 0) return IptablesBackend::kLegacy;
  if (std::strcmp(env, "nft") == 0) return IptablesBackend::kNft;
  return Unexpected(ErrorCode::kInvalidArgument,
                    std::string(kEnvBackend) + "=" + env + " is not one of legacy, nft, default");
}

const char* BackendName(IptablesBackend backend) {
  switch (backend) {
    case IptablesBackend::kAuto:
      return "auto";
    case IptablesBackend::kSystemDefault:
      return "default";
    case IptablesBackend::kNft:
      return "nft";
    case IptablesBackend::kLegacy:
      return "legacy";
  }
  return "?";
}

Expected<MarkLayout> MarkLayout::FromMask(uint32_t mask) {
  const uint32_t low = mask & (~mask + 1);
  // Contiguous: adding the lowest bit carries through the whole run and leaves no bit of it.
  const bool contiguous = mask != 0 && ((mask + low) & mask) == 0;
  if (!contiguous || __builtin_popcount(mask) < 3) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "mark mask " + Hex(mask) +
                          " must be one run of at least 3 contiguous bits (default " +
                          Hex(kDefaultMarkMask) + ")");
  }
  return MarkLayout{mask};
}

MarkValue MarkLayout::Classify(uint32_t mark) const {
  const uint32_t low = mask & (~mask + 1);
  const uint32_t v = (mark & mask) / low;
  return v <= static_cast<uint32_t>(MarkValue::kObserve) ? static_cast<MarkValue>(v)
                                                         : MarkValue::kNone;
}

MarkValue MarkLayout::ForAction(Action action) {
  switch (action) {
    case Action::kAllow:
      return MarkValue::kAllow;
    case Action::kDeny:
      return MarkValue::kDeny;
    case Action::kReject:
      return MarkValue::kReject;
    case Action::kInspect:
      return MarkValue::kInspect;
  }
  return MarkValue::kDeny;
}

Status ValidateRulesetOptions(const RulesetOptions& options) {
  if (options.queue_first > options.queue_last) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "queue range " + std::to_string(options.queue_first) + "-" +
                          std::to_string(options.queue_last) + " is empty; write it low-high");
  }
  auto layout = MarkLayout::FromMask(options.mark_mask);
  if (!layout) return Unexpected(layout.error());
  for (const std::string& iface : options.excluded_interfaces) {
    if (!ValidInterfaceName(iface)) {
      return Unexpected(
          ErrorCode::kInvalidArgument,
          "excluded interface `" + iface +
              "` is not a valid name (1-15 of A-Z a-z 0-9 . _ -, optional trailing +)");
    }
  }
  return {};
}

Expected<std::string> RenderRuleset(IpFamily family, const RulesetOptions& options) {
  auto valid = ValidateRulesetOptions(options);
  if (!valid) return Unexpected(valid.error());
  return Compose(BuildRuleset(family, options, MarkLayout{options.mark_mask}), {});
}

Status Install(const RulesetOptions& options) {
  auto valid = ValidateRulesetOptions(options);
  if (!valid) return Unexpected(valid.error());
  auto resolved = ResolveBackend(options.backend);
  if (!resolved) return Unexpected(resolved.error());
  const IptablesBackend backend = *resolved;
  const MarkLayout layout{options.mark_mask};

  auto v4 = Apply(IpFamily::kIpv4, backend, BuildRuleset(IpFamily::kIpv4, options, layout));
  if (!v4) return v4;
  if (options.ipv6) {
    auto v6 = Apply(IpFamily::kIpv6, backend, BuildRuleset(IpFamily::kIpv6, options, layout));
    if (!v6) {
      // Half a ruleset (IPv4 filtered, IPv6 not) is worse than none; the caller decides.
      auto undo = Apply(IpFamily::kIpv4, backend, {});
      if (!undo) {
        TG_LOG_ERROR("iptables: removing the IPv4 rules after the IPv6 failure failed too: %s",
                     undo.error().message.c_str());
      }
      return v6;
    }
  } else {
    // IPv6 switched off now but maybe not in the last run: its leftovers must not keep queueing.
    auto v6 = Apply(IpFamily::kIpv6, backend, {});
    if (!v6) TG_LOG_WARNING("iptables: IPv6 cleanup failed: %s", v6.error().message.c_str());
  }
  SweepOtherBackend(backend);
  return {};
}

Status Remove(IptablesBackend requested) {
  auto backend = ResolveBackend(requested);
  if (!backend) return Unexpected(backend.error());
  Status first_error;
  for (IpFamily family : {IpFamily::kIpv4, IpFamily::kIpv6}) {
    auto status = Apply(family, *backend, {});
    if (!status && first_error) first_error = status;  // keep going: remove what we can
  }
  SweepOtherBackend(*backend);
  return first_error;
}

Expected<bool> Installed(IptablesBackend requested) {
  auto backend = ResolveBackend(requested);
  if (!backend) return Unexpected(backend.error());
  for (IpFamily family : {IpFamily::kIpv4, IpFamily::kIpv6}) {
    auto saved = Save(family, *backend);
    if (!saved) return Unexpected(saved.error());
    for (const Leftovers& t : FindLeftovers(*saved)) {
      if (!t.chains.empty()) return true;
    }
  }
  return false;
}

Expected<std::string> SaveRules(IpFamily family, IptablesBackend requested) {
  auto backend = ResolveBackend(requested);
  if (!backend) return Unexpected(backend.error());
  return Save(family, *backend);
}

}  // namespace tollgate::platform
