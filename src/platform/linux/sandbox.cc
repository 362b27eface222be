#include "platform/linux/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/landlock.h>
#include <linux/securebits.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/unique_fd.h"

// Landlock UAPI beyond Debian 12's linux-libc-dev (6.1, ABI 3): the kernel we run on has ABI 7.
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif
#ifndef LANDLOCK_ACCESS_FS_MAKE_SYM
#define LANDLOCK_ACCESS_FS_MAKE_SYM (1ULL << 12)  // the last right of ABI 1 (bits 0..12)
#endif
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13)  // ABI 2
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)  // ABI 3
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)  // ABI 5
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP (1ULL << 0)  // ABI 4
#endif
#ifndef LANDLOCK_ACCESS_NET_CONNECT_TCP
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1)  // ABI 4
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)  // ABI 6
#endif
#ifndef LANDLOCK_SCOPE_SIGNAL
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)  // ABI 6
#endif

namespace tollgate::platform {
namespace {

// struct landlock_ruleset_attr as of ABI 6 (the 6.1 header has only the first field). Older
// kernels accept this larger struct as long as the fields they do not know are zero.
struct LandlockRulesetAttr {
  uint64_t handled_access_fs = 0;
  uint64_t handled_access_net = 0;
  uint64_t scoped = 0;
};

constexpr uint64_t CapBit(int cap) { return uint64_t{1} << cap; }

// NOROOT: uid 0 gains no capabilities by exec; the locks keep anyone from undoing that, from
// turning keep-caps back on, or from raising ambient capabilities (exec is forbidden anyway).
constexpr unsigned long kLockedSecurebits =
    SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
    SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

// ---------------------------------------------------------------------------------------------
// The SIGSYS handler: everything it reads is prepared before the filter is loaded, so it only
// formats into a stack buffer and calls write(2), which is async-signal-safe and allowed.

constexpr int kNamedSyscalls = 512;
char g_syscall_names[kNamedSyscalls][32];
char g_log_prefix[160];
size_t g_log_prefix_len = 0;
uint32_t g_native_arch = 0;

void Append(char* buf, size_t cap, size_t& len, const char* s) {
  while (*s != '\0' && len + 1 < cap) buf[len++] = *s++;
}

void AppendNumber(char* buf, size_t cap, size_t& len, uint64_t v, unsigned base) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v != 0 && n < static_cast<int>(sizeof(digits)));
  while (n > 0 && len + 1 < cap) buf[len++] = digits[--n];
}

void OnForbiddenSyscall(int /*sig*/, siginfo_t* info, void* /*context*/) {
  char line[256];
  size_t len = 0;
  std::memcpy(line, g_log_prefix, g_log_prefix_len);
  len = g_log_prefix_len;
  const int nr = info->si_syscall;
  const uint32_t arch = info->si_arch;
  if (arch == g_native_arch && nr >= 0 && nr < kNamedSyscalls && g_syscall_names[nr][0] != 0) {
    Append(line, sizeof(line), len, g_syscall_names[nr]);
    Append(line, sizeof(line), len, " (nr ");
    AppendNumber(line, sizeof(line), len, static_cast<uint32_t>(nr), 10);
    Append(line, sizeof(line), len, ")");
  } else {
    Append(line, sizeof(line), len, "nr ");
    AppendNumber(line, sizeof(line), len, static_cast<uint32_t>(nr), 10);
    if (arch != g_native_arch) {
      Append(line, sizeof(line), len, " of foreign architecture 0x");
      AppendNumber(line, sizeof(line), len, arch, 16);
    }
  }
  Append(line, sizeof(line), len, "; exiting\n");
  ssize_t ignored = write(STDERR_FILENO, line, len);
  (void)ignored;
  // SA_RESETHAND restored the default action (terminate, core) and SA_NODEFER left SIGSYS
  // unblocked: the process dies "killed by SIGSYS", the usual seccomp signature for systemd.
  syscall(SYS_tgkill, getpid(), gettid(), SIGSYS);
  _exit(128 + SIGSYS);
}

void PrepareViolationLog(const std::string& program_name) {
  const char* name = program_name.empty() ? program_invocation_short_name : program_name.c_str();
  const int n = std::snprintf(g_log_prefix, sizeof(g_log_prefix),
                              "<2>%s: sandbox: forbidden system call ", name);
  g_log_prefix_len = n < 0 ? 0 : std::min(static_cast<size_t>(n), sizeof(g_log_prefix) - 1);
  g_native_arch = seccomp_arch_native();
  // seccomp_syscall_resolve_num_arch() allocates, so it cannot run in the handler.
  for (int nr = 0; nr < kNamedSyscalls; ++nr) {
    char* resolved = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    g_syscall_names[nr][0] = 0;
    if (resolved != nullptr) {
      std::snprintf(g_syscall_names[nr], sizeof(g_syscall_names[nr]), "%s", resolved);
      std::free(resolved);
    }
  }
}

Status InstallViolationHandler() {
  struct sigaction sa {};
  sa.sa_sigaction = OnForbiddenSyscall;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSYS, &sa, nullptr) != 0) {
    return Unexpected(Error::System("sandbox: sigaction(SIGSYS)", errno));
  }
  // A blocked SIGSYS would make the kernel kill us silently, without the log line.
  sigset_t sys;
  sigemptyset(&sys);
  sigaddset(&sys, SIGSYS);
  if (sigprocmask(SIG_UNBLOCK, &sys, nullptr) != 0) {
    return Unexpected(Error::System("sandbox: unblocking SIGSYS", errno));
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Preconditions and capabilities.

// Capabilities, Landlock and a seccomp filter without TSYNC apply to the calling thread only.
Expected<int> CountThreads() {
  UniqueFd fd(open("/proc/self/status", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return 1;  // no /proc: nothing to check against; the caller documents the rule
  std::string status;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd.get(), buf, sizeof(buf))) > 0) status.append(buf, static_cast<size_t>(n));
  const size_t at = status.find("\nThreads:");
  if (at == std::string::npos) return 1;
  return std::atoi(status.c_str() + at + std::strlen("\nThreads:"));
}

// The highest capability the kernel knows. Probing PR_CAPBSET_READ (EINVAL past the last one)
// gives the same answer as /proc/sys/kernel/cap_last_cap without needing /proc.
int LastCapability() {
  int last = -1;
  for (int cap = 0; cap < 64; ++cap) {
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0) break;
    last = cap;
  }
  return last;
}

struct CapabilitySets {
  uint64_t effective = 0;
  uint64_t permitted = 0;
  uint64_t inheritable = 0;
};

Expected<CapabilitySets> GetCapabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) {
    return Unexpected(Error::System("sandbox: capget", errno));
  }
  CapabilitySets s;
  s.effective = data[0].effective | (uint64_t{data[1].effective} << 32);
  s.permitted = data[0].permitted | (uint64_t{data[1].permitted} << 32);
  s.inheritable = data[0].inheritable | (uint64_t{data[1].inheritable} << 32);
  return s;
}

Status SetCapabilities(const CapabilitySets& s) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  data[0].effective = static_cast<uint32_t>(s.effective);
  data[1].effective = static_cast<uint32_t>(s.effective >> 32);
  data[0].permitted = static_cast<uint32_t>(s.permitted);
  data[1].permitted = static_cast<uint32_t>(s.permitted >> 32);
  data[0].inheritable = static_cast<uint32_t>(s.inheritable);
  data[1].inheritable = static_cast<uint32_t>(s.inheritable >> 32);
  if (syscall(SYS_capset, &header, data) != 0) {
    return Unexpected(Error::System("sandbox: capset", errno));
  }
  return {};
}

uint64_t BoundingSet(int last_cap) {
  uint64_t set = 0;
  for (int cap = 0; cap <= last_cap; ++cap) {
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) set |= CapBit(cap);
  }
  return set;
}

// True when the process already runs as exactly the requested user, groups included (systemd's
// User=, Group=, SupplementaryGroups= did it); switching again would need CAP_SETUID/CAP_SETGID.
bool AlreadyRunsAs(const SandboxOptions& options) {
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0) return false;
  if (options.uid && (ru != *options.uid || eu != *options.uid || su != *options.uid)) return false;
  if (rg != *options.gid || eg != *options.gid || sg != *options.gid) return false;
  const int n = getgroups(0, nullptr);
  if (n < 0) return false;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  if (getgroups(n, groups.data()) != n) return false;
  return std::set<gid_t>(groups.begin(), groups.end()) ==
         std::set<gid_t>(options.supplementary_groups.begin(), options.supplementary_groups.end());
}

Status SwitchUser(const SandboxOptions& options) {
  if (!options.gid || AlreadyRunsAs(options)) return {};
  const gid_t gid = *options.gid;
  // Keep the permitted set across setresuid: CAP_NET_ADMIN stays, and CAP_SETPCAP is needed
  // afterwards to clear the bounding set and lock the securebits.
  if (options.uid && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) {
    return Unexpected(Error::System("sandbox: prctl(PR_SET_KEEPCAPS)", errno));
  }
  if (setgroups(options.supplementary_groups.size(), options.supplementary_groups.data()) != 0) {
    return Unexpected(Error::System(
        "sandbox: setgroups (tollgate-filter must start as root to switch user)", errno));
  }
  if (setresgid(gid, gid, gid) != 0) {
    return Unexpected(Error::System("sandbox: setresgid(" + std::to_string(gid) + ")", errno));
  }
  if (options.uid) {
    const uid_t uid = *options.uid;
    if (setresuid(uid, uid, uid) != 0) {
      return Unexpected(Error::System("sandbox: setresuid(" + std::to_string(uid) + ")", errno));
    }
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
  }
  // A failed set*id that reported success is the classic privilege-drop bug: check the result.
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0 || rg != gid || eg != gid ||
      sg != gid ||
      (options.uid && (ru != *options.uid || eu != *options.uid || su != *options.uid))) {
    return Unexpected(ErrorCode::kSystem, "sandbox: the user switch did not take effect");
  }
  return {};
}

// Leaves permitted = effective = `keep`, nothing inheritable or ambient; with CAP_SETPCAP also the
// bounding set reduced to `keep` and the securebits locked.
Status ReduceCapabilities(uint64_t keep, int last_cap) {
  auto current = GetCapabilities();
  if (!current) return Unexpected(current.error());
  if ((current->permitted & keep) != keep) {
    return Unexpected(ErrorCode::kPermissionDenied,
                      "sandbox: CAP_NET_ADMIN is not in the permitted set after the user switch; "
                      "start tollgate-filter as root (or with AmbientCapabilities=CAP_NET_ADMIN)");
  }
  if ((current->permitted & CapBit(CAP_SETPCAP)) != 0) {
    const uint64_t working = keep | CapBit(CAP_SETPCAP);
    if (auto st = SetCapabilities({working, working, 0}); !st) return st;
    for (int cap = 0; cap <= last_cap; ++cap) {
      if ((keep & CapBit(cap)) != 0 || prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
        return Unexpected(Error::System(
            "sandbox: dropping capability " + std::to_string(cap) + " from the bounding set",
            errno));
      }
    }
    if (prctl(PR_SET_SECUREBITS, kLockedSecurebits, 0, 0, 0) != 0) {
      return Unexpected(Error::System("sandbox: prctl(PR_SET_SECUREBITS)", errno));
    }
  }
  // EINVAL: a kernel before 4.3 has no ambient set to clear.
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return Unexpected(Error::System("sandbox: clearing the ambient capabilities", errno));
  }
  if (auto st = SetCapabilities({keep, keep, 0}); !st) return st;
  auto after = GetCapabilities();
  if (!after) return Unexpected(after.error());
  if (after->effective != keep || after->permitted != keep || after->inheritable != 0) {
    return Unexpected(ErrorCode::kSystem,
                      "sandbox: the capability sets did not take the values set");
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Landlock.

struct LandlockPlan {
  int abi = 0;
  UniqueFd ruleset;
  LandlockRulesetAttr attr;
  std::string unavailable;  // why Landlock is not used, when ruleset is not valid
};

uint64_t HandledFsAccess(int abi) {
  uint64_t fs = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: execute .. make_sym
  if (abi >= 2) fs |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
  if (abi >= 5) fs |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
  return fs;
}

// Creates the ruleset (this restricts nothing yet): every access right the ABI knows is handled
// and no rule grants any, so all of them are refused once it is enforced.
Expected<LandlockPlan> PrepareLandlock() {
  LandlockPlan plan;
  const long abi =
      syscall(__NR_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 0) {
    if (errno == ENOSYS) {
      plan.unavailable = "the kernel has no Landlock (CONFIG_SECURITY_LANDLOCK)";
    } else if (errno == EOPNOTSUPP) {
      plan.unavailable = "Landlock is disabled at boot (add landlock to the lsm= kernel parameter)";
    } else if (errno == EPERM) {
      // The kernel never answers a version query with EPERM: a seccomp filter of whoever started
      // us did (systemd-nspawn's default, some container runtimes). Our own seccomp allowlist
      // still refuses every open, so the sandbox holds without it.
      plan.unavailable =
          "Landlock is blocked by a seccomp filter of the container or service manager (allow "
          "landlock_create_ruleset, landlock_add_rule and landlock_restrict_self there)";
    } else {
      return Unexpected(Error::System("sandbox: querying the Landlock ABI", errno));
    }
    return plan;
  }
  plan.abi = static_cast<int>(abi);
  plan.attr.handled_access_fs = HandledFsAccess(plan.abi);
  if (plan.abi >= 4) {
    plan.attr.handled_access_net = LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP;
  }
  // Pathname unix sockets (the daemon's channel, sd_notify) are not affected: Landlock has no
  // right for connect() or sendto() to them, only for creating one (MAKE_SOCK, on bind).
  if (plan.abi >= 6) {
    plan.attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL;
  }
  plan.ruleset.Reset(
      static_cast<int>(syscall(__NR_landlock_create_ruleset, &plan.attr, sizeof(plan.attr), 0)));
  if (!plan.ruleset.valid()) {
    return Unexpected(Error::System(
        "sandbox: creating the Landlock ruleset (ABI " + std::to_string(plan.abi) + ")", errno));
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------
// seccomp.

// Allowed with any arguments: what an sd-event loop with netlink and AF_UNIX sockets, malloc and
// stderr logging needs. Names missing on an architecture (poll on arm64) are skipped there.
constexpr const char* kAllowedSyscalls[] = {
    // I/O on descriptors opened before the sandbox, and the event loop.
    "read",
    "write",
    "readv",
    "writev",
    "close",
    "fcntl",
    "fstat",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "signalfd4",
    // Time (normally the vDSO; these are its fallbacks).
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    // Signals (kill and tgkill are restricted to ourselves below). sigaltstack: ASan's exit path
    // and crash handlers query or set the alternate signal stack of their own thread.
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "restart_syscall",
    "sigaltstack",
    // Identity, synchronisation, randomness.
    "getpid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "futex",
    "sched_yield",
    "getrandom",
    // Memory (mmap and mprotect are restricted below).
    "brk",
    "munmap",
    "mremap",
    "madvise",
    // Sockets (socket and socketpair are restricted below). Only AF_UNIX and AF_NETLINK sockets
    // can exist, so connect/bind reach nothing else; Landlock refuses bind on a new path.
    "connect",
    "bind",
    "shutdown",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    // Leaving.
    "exit",
    "exit_group",
#ifdef TOLLGATE_SANITIZER_BUILD
    // Sanitizer builds only: the sanitizer runtime probes whether memory is readable by writing
    // it into a pipe (IsAccessibleMemoryRange), which would otherwise kill the sandboxed process.
    "pipe2",
#endif
};

// Allowed only with the argument filters added in BuildFilter(); extra_syscalls may not name them,
// because an unconditional rule in libseccomp overrides the conditional ones.
constexpr const char* kFilteredSyscalls[] = {
    "socket", "socketpair", "kill", "tgkill", "mmap", "mprotect", "prctl", "openat", "newfstatat"};

// prctl options that only read state (glibc, libsystemd or a debugging hook may ask).
constexpr int kAllowedPrctls[] = {PR_GET_DUMPABLE, PR_GET_NAME,       PR_GET_NO_NEW_PRIVS,
                                  PR_GET_SECCOMP,  PR_GET_SECUREBITS, PR_GET_KEEPCAPS,
                                  PR_CAPBSET_READ};

// One argument comparison. libseccomp's SCMP_A0() macros are C compound literals that leave
// datum_b unset, which clang rejects under -Wextra.
scmp_arg_cmp Arg(unsigned index, scmp_compare op, scmp_datum_t a, scmp_datum_t b = 0) {
  scmp_arg_cmp cmp{};
  cmp.arg = index;
  cmp.op = op;
  cmp.datum_a = a;
  cmp.datum_b = b;
  return cmp;
}

class SeccompFilter {
 public:
  SeccompFilter() : ctx_(seccomp_init(SCMP_ACT_TRAP)) {}
  SeccompFilter(const SeccompFilter&) = delete;
  SeccompFilter& operator=(const SeccompFilter&) = delete;
  ~SeccompFilter() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  scmp_filter_ctx get() const { return ctx_; }

  // Adds a rule for `name`; ALLOW rules also count towards the allowlist's size.
  Status Add(uint32_t action, const char* name, std::initializer_list<scmp_arg_cmp> args = {}) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        std::string("sandbox: unknown system call name '") + name + "'");
    }
    if (nr < 0) return {};  // not a system call of this architecture
    const int r = seccomp_rule_add_array(ctx_, action, nr, static_cast<unsigned>(args.size()),
                                         args.size() == 0 ? nullptr : args.begin());
    if (r != 0) {
      return Unexpected(Error::System(std::string("sandbox: seccomp rule for ") + name, -r));
    }
    if (action == SCMP_ACT_ALLOW) allowed_.insert(nr);
    return {};
  }
  int allowed_count() const { return static_cast<int>(allowed_.size()); }

 private:
  scmp_filter_ctx ctx_;
  std::set<int> allowed_;
};

Status AddSocketRules(SeccompFilter& f) {
  // Any other domain is refused with EAFNOSUPPORT, so the caller sees an error instead of dying.
  // libseccomp takes one comparison per argument in a rule, hence one rule per refused range.
  const uint32_t refuse = SCMP_ACT_ERRNO(EAFNOSUPPORT);
  for (const char* name : {"socket", "socketpair"}) {
    const bool is_socket = std::strcmp(name, "socket") == 0;
    const int last_allowed = is_socket ? AF_NETLINK : AF_UNIX;
    if (auto st = f.Add(SCMP_ACT_ALLOW, name, {Arg(0, SCMP_CMP_EQ, AF_UNIX)}); !st) return st;
    if (is_socket) {
      if (auto st = f.Add(SCMP_ACT_ALLOW, name, {Arg(0, SCMP_CMP_EQ, AF_NETLINK)}); !st) return st;
    }
    if (auto st = f.Add(refuse, name, {Arg(0, SCMP_CMP_LT, AF_UNIX)}); !st) return st;
    for (int domain = AF_UNIX + 1; domain < last_allowed; ++domain) {
      if (domain == AF_NETLINK) continue;
      if (auto st = f.Add(refuse, name, {Arg(0, SCMP_CMP_EQ, domain)}); !st) return st;
    }
    if (auto st = f.Add(refuse, name, {Arg(0, SCMP_CMP_GT, last_allowed)}); !st) return st;
  }
  return {};
}

Expected<int> ResolveExtraSyscall(const std::string& name) {
  const int nr = seccomp_syscall_resolve_name(name.c_str());
  if (nr == __NR_SCMP_ERROR) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "sandbox: extra_syscalls names '" + name +
                          "', which is not a system call libseccomp knows; check the spelling");
  }
  if (nr < 0) {
    return Unexpected(ErrorCode::kInvalidArgument, "sandbox: extra_syscalls names '" + name +
                                                       "', which this architecture does not have");
  }
  for (const char* filtered : kFilteredSyscalls) {
    if (name == filtered) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        "sandbox: extra_syscalls names '" + name +
                            "', which the sandbox already allows with argument restrictions; "
                            "allowing it fully would drop them");
    }
  }
  return nr;
}

// `landlock_enforced` decides openat: with Landlock the kernel refuses every open itself (EACCES,
// and its audit log records the attempt); without it seccomp returns the same EACCES.
Status BuildFilter(SeccompFilter& f, const SandboxOptions& options, bool landlock_enforced) {
  if (f.get() == nullptr) return Unexpected(ErrorCode::kSystem, "sandbox: seccomp_init failed");
  // Foreign-architecture calls (int 0x80 on x86_64) trap and log too instead of a silent kill.
  if (int r = seccomp_attr_set(f.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_TRAP); r != 0) {
    return Unexpected(Error::System("sandbox: seccomp bad-architecture action", -r));
  }
  for (const char* name : kAllowedSyscalls) {
    if (auto st = f.Add(SCMP_ACT_ALLOW, name); !st) return st;
  }
  if (auto st = AddSocketRules(f); !st) return st;
  // Signals to ourselves only (raise, abort, a self-pipe); the pid cannot change, fork is banned.
  const auto self = static_cast<scmp_datum_t>(getpid());
  if (auto st = f.Add(SCMP_ACT_ALLOW, "kill", {Arg(0, SCMP_CMP_EQ, self)}); !st) return st;
  if (auto st = f.Add(SCMP_ACT_ALLOW, "tgkill", {Arg(0, SCMP_CMP_EQ, self)}); !st) return st;
  // No executable memory: the usual exploit step (mprotect a buffer RWX) dies instead.
  for (const char* name : {"mmap", "mprotect"}) {
    if (auto st = f.Add(SCMP_ACT_ALLOW, name, {Arg(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)}); !st) {
      return st;
    }
  }
  for (int option : kAllowedPrctls) {
    if (auto st = f.Add(SCMP_ACT_ALLOW, "prctl", {Arg(0, SCMP_CMP_EQ, option)}); !st) {
      return st;
    }
  }
  if (auto st = f.Add(landlock_enforced ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(EACCES), "openat"); !st) {
    return st;
  }
  // fstat() in glibc is newfstatat(fd, "", AT_EMPTY_PATH); stdio calls it on first use of a stream.
  // A stat by path is refused like an open.
  if (auto st = f.Add(SCMP_ACT_ALLOW, "newfstatat",
                      {Arg(3, SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH)});
      !st) {
    return st;
  }
  if (auto st = f.Add(SCMP_ACT_ERRNO(EACCES), "newfstatat",
                      {Arg(3, SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, 0)});
      !st) {
    return st;
  }
  for (const std::string& name : options.extra_syscalls) {
    auto nr = ResolveExtraSyscall(name);
    if (!nr) return Unexpected(nr.error());
    if (auto st = f.Add(SCMP_ACT_ALLOW, name.c_str()); !st) return st;
  }
  return {};
}

std::string Summarize(const SandboxOptions& options, const SandboxReport& report,
                      const LandlockPlan& landlock, bool bounding_cleared, bool securebits_locked) {
  std::string s = "uid " + std::to_string(getuid()) + " gid " + std::to_string(getgid());
  s += options.keep_net_admin ? "; capabilities: cap_net_admin only" : "; capabilities: none";
  if (report.capabilities_locked) {
    s += " (bounding set cleared, securebits locked)";
  } else {
    s += std::string(" (") + (bounding_cleared ? "" : "bounding set NOT cleared, ") +
         (securebits_locked ? "" : "securebits NOT locked, ") + "for lack of CAP_SETPCAP)";
  }
  s += "; no_new_privs";
  if (report.landlock_enforced) {
    s += "; Landlock ABI " + std::to_string(report.landlock_abi) + ": no file access";
    s += report.landlock_net_enforced ? ", no TCP bind/connect" : "";
    s += report.landlock_scoped ? ", abstract unix sockets and signals scoped" : "";
  } else {
    s += "; Landlock NOT enforced (" + landlock.unavailable + "), seccomp refuses openat instead";
  }
  s += "; seccomp: " + std::to_string(report.allowed_syscalls) +
       " system calls allowed, any other kills the process";
  return s;
}

}  // namespace

int LandlockAbiVersion() {
  const long abi =
      syscall(__NR_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

Expected<SandboxReport> EnterSandbox(const SandboxOptions& options) {
  // Everything that can fail without changing the process comes first.
  if (options.uid && !options.gid) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "sandbox: a uid to switch to needs a gid too, or root's group would stay");
  }
  auto threads = CountThreads();
  if (!threads) return Unexpected(threads.error());
  if (*threads != 1) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "sandbox: must be entered while single-threaded, the process has " +
                          std::to_string(*threads) + " threads");
  }
  const uint64_t keep = options.keep_net_admin ? CapBit(CAP_NET_ADMIN) : 0;
  auto caps = GetCapabilities();
  if (!caps) return Unexpected(caps.error());
  if ((caps->permitted & keep) != keep) {
    return Unexpected(ErrorCode::kPermissionDenied,
                      "sandbox: keep_net_admin is set but the process does not hold CAP_NET_ADMIN; "
                      "start tollgate-filter as root (or with AmbientCapabilities=CAP_NET_ADMIN)");
  }
  const int last_cap = LastCapability();
  auto landlock = PrepareLandlock();
  if (!landlock) return Unexpected(landlock.error());
  SeccompFilter filter;
  if (auto st = BuildFilter(filter, options, landlock->ruleset.valid()); !st) {
    return Unexpected(st.error());
  }
  PrepareViolationLog(options.program_name);

  // From here on the process changes; an error leaves it partly sandboxed.
  if (auto st = SwitchUser(options); !st) return Unexpected(st.error());
  if (auto st = ReduceCapabilities(keep, last_cap); !st) return Unexpected(st.error());
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return Unexpected(Error::System("sandbox: prctl(PR_SET_NO_NEW_PRIVS)", errno));
  }
  SandboxReport report;
  report.landlock_abi = landlock->abi;
  if (landlock->ruleset.valid()) {
    if (syscall(__NR_landlock_restrict_self, landlock->ruleset.get(), 0) != 0) {
      return Unexpected(Error::System("sandbox: landlock_restrict_self", errno));
    }
    landlock->ruleset.Reset();
    report.landlock_enforced = true;
    report.landlock_net_enforced = landlock->attr.handled_access_net != 0;
    report.landlock_scoped = landlock->attr.scoped != 0;
  }
  // The bounding set and securebits may also have been locked by whoever started us (systemd's
  // CapabilityBoundingSet= and SecureBits=): report what holds, not what we did.
  const bool bounding_cleared = (BoundingSet(last_cap) & ~keep) == 0;
  const long securebits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
  const bool securebits_locked = securebits >= 0 && (static_cast<unsigned long>(securebits) &
                                                     (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED)) ==
                                                        (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED);
  report.capabilities_locked = bounding_cleared && securebits_locked;
  if (auto st = InstallViolationHandler(); !st) return Unexpected(st.error());
  if (int r = seccomp_load(filter.get()); r != 0) {
    return Unexpected(Error::System("sandbox: loading the seccomp filter", -r));
  }
  report.allowed_syscalls = filter.allowed_count();
  report.summary = Summarize(options, report, *landlock, bounding_cleared, securebits_locked);
  return report;
}

}  // namespace tollgate::platform
