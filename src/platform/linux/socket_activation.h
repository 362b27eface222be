// Listening sockets handed over by systemd (tollgated.socket) or systemd-socket-activate. tollgated
// calls TakeActivatedSockets once at start-up, before binding anything itself: sockets that came
// from systemd are used as they are, missing ones are bound by hand (runtime_dir.h).
//
// Sockets are matched by FileDescriptorName=: "analysis" (ListenSequentialPacket=, for the
// filter) and "control" (ListenStream=, for the CLI). A single fd without a name ("unknown", which
// is what `systemd-socket-activate -l PATH --seqpacket` passes without --fdname) is taken as the
// analysis socket, so the daemon can be tried out by hand.
#pragma once

#include "common/error.h"
#include "common/unique_fd.h"

namespace tollgate::platform {

inline constexpr char kAnalysisSocketName[] = "analysis";
inline constexpr char kControlSocketName[] = "control";

struct ActivatedSockets {
  UniqueFd analysis;  // listening AF_UNIX SOCK_SEQPACKET, non-blocking; invalid if not passed
  UniqueFd control;   // listening AF_UNIX SOCK_STREAM, non-blocking; invalid if not passed
  bool from_systemd = false;  // true when at least one fd was passed
};

// Takes the passed fds and clears LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES so children do not inherit
// them. No activation is not an error (from_systemd = false). An fd with an unexpected name, a
// repeated name, or of the wrong socket type is an error naming every fd that was received; the
// passed fds are closed in that case.
Expected<ActivatedSockets> TakeActivatedSockets();

}  // namespace tollgate::platform
