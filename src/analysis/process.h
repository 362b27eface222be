// Process attribution: which process owns the local end of a flow. The analysis engine asks a
// ProcessSource only when a rule needs it (exe, unit, user of a flow whose uid the kernel did not
// report), so a rule set without such conditions never pays for the lookup. The Linux source
// (src/platform/linux/attribution.h) uses netlink sock_diag and /proc; an eBPF source can be a
// second implementation of the same interface. Tests use fakes.
#pragma once

#include <cstdint>
#include <string>

#include "common/flow.h"

namespace tollgate::analysis {

struct ProcessInfo {
  uint32_t pid = 0;
  uint32_t ppid = 0;
  uint32_t uid = kUnknownId;  // real uid of the process
  std::string user;           // name from the password database; "" when it has none
  std::string exe;            // the executable's path (the /proc/<pid>/exe link on Linux)
  std::string cmdline;        // argv joined by spaces, at most 4 KiB, "" for kernel threads
  std::string unit;           // systemd unit from the cgroup ("sshd.service"); "" when none
};

enum class Attribution : uint8_t {
  kFound,        // `process` is filled in
  kGone,         // the socket was found but no live process holds it any more (exited, or passed)
  kNotFound,     // no local socket matches the flow (not ours, or already closed)
  kUnavailable,  // the lookup itself failed (no permission, netlink error); `detail` says why
};

struct ProcessLookup {
  Attribution state = Attribution::kUnavailable;
  ProcessInfo process;
  std::string detail;  // for logs and reasons when state != kFound
};

class ProcessSource {
 public:
  virtual ~ProcessSource() = default;
  // The process owning the local socket of `question`'s flow: for an outbound flow the socket
  // bound to tuple.src/src_port and connected to tuple.dst/dst_port, for an inbound one the socket
  // (often a listener) at tuple.dst/dst_port. Must not throw; may block briefly on local kernel
  // interfaces (netlink, /proc), never on the network.
  virtual ProcessLookup Find(const FlowQuestion& question) = 0;
};

}  // namespace tollgate::analysis
