// The least-privilege sandbox tollgate-filter enters once start-up is done (its netlink sockets,
// NFQUEUE binding and the daemon channel are open): it becomes its own user keeping only
// CAP_NET_ADMIN, sets no_new_privs, forbids all file system access and TCP with Landlock, and
// installs a seccomp allowlist in which any other system call kills the process after one log
// line on stderr. tollgate-filter's main calls EnterSandbox() exactly once, while it is still
// single-threaded; nothing here can be undone, so tests call it in forked children.
// docs/sandbox.md lists what is allowed and why.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace tollgate::platform {

struct SandboxOptions {
  // Switch to this user and group (setgroups, setresgid, setresuid). Unset keeps the current ones.
  // A uid without a gid is refused: the process would keep root's group.
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::vector<gid_t> supplementary_groups;  // replaces the current list whenever gid is set
  // Keep CAP_NET_ADMIN (NFQUEUE verdicts, conntrack marks, SO_RCVBUFFORCE) across the switch; every
  // other capability goes. When true and the process does not hold it, EnterSandbox fails.
  bool keep_net_admin = true;
  // System calls the process needs after start-up beyond the built-in allowlist, by name
  // ("uname"). An unknown name, or one the allowlist already restricts by argument (socket, kill,
  // mmap, ...), is an error: widening those would silently drop their argument filter.
  std::vector<std::string> extra_syscalls;
  // Program name in the log line written when a forbidden system call kills the process; empty:
  // the executable's name (program_invocation_short_name).
  std::string program_name;
};

// What the kernel enforces after EnterSandbox() succeeded. seccomp and no_new_privs are always
// enforced (EnterSandbox fails otherwise); the rest depends on the kernel and on privileges, and
// the caller decides whether a gap is fatal.
struct SandboxReport {
  int landlock_abi = 0;                // 0: no Landlock in this kernel, or disabled at boot
  bool landlock_enforced = false;      // all file access refused by Landlock
  bool landlock_net_enforced = false;  // TCP bind/connect refused by Landlock too (ABI >= 4)
  bool landlock_scoped = false;        // abstract unix sockets and signals scoped to us (ABI >= 6)
  // Bounding set reduced to what is kept and securebits locked (needs CAP_SETPCAP, i.e. root).
  bool capabilities_locked = false;
  int allowed_syscalls = 0;  // distinct system calls in the seccomp allowlist
  std::string summary;       // one line for the start-up log, e.g. after "sandbox: "
};

// Enters the sandbox: user switch, capabilities, no_new_privs, Landlock, seccomp, in that order.
// Options are validated and everything that can fail without changing the process (syscall
// names, the Landlock ruleset, the seccomp filter) is prepared first; an error after that point
// leaves the process partly sandboxed, and the caller must exit.
Expected<SandboxReport> EnterSandbox(const SandboxOptions& options);

// The Landlock ABI version of the running kernel; 0 when Landlock is unavailable.
int LandlockAbiVersion();

}  // namespace tollgate::platform
