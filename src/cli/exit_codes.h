// Exit codes shared by every `tollgate` command, so scripts and CI can tell "something is wrong
// with what you checked" from "you called me wrongly" from "I could not read it", and, for the
// commands that talk to tollgated, which of the ways of not getting an answer happened.
// docs/cli.md lists them; they are part of the CLI's interface, so never renumber one.
#pragma once

namespace tollgate::cli {

inline constexpr int kExitClean = 0;         // success; for checks: nothing is wrong
inline constexpr int kExitFindings = 1;      // a check reported at least one finding
inline constexpr int kExitUsage = 2;         // bad command line or option value
inline constexpr int kExitUnreadable = 3;    // the input could not be read or is not what was asked
                                             // for (or the output could not be written)
inline constexpr int kExitNotInstalled = 4;  // no tollgated binary and no tollgated.socket unit
inline constexpr int kExitNotRunning = 5;    // no control socket, or nobody listening on it
inline constexpr int kExitNoPermission = 6;  // the socket refused us (EACCES/EPERM on connect)
inline constexpr int kExitRefused = 7;       // the daemon answered NotAuthorized
inline constexpr int kExitDaemonError = 8;   // the daemon answered another varlink error
inline constexpr int kExitTimeout = 9;       // no (complete) answer within --timeout
inline constexpr int kExitBadReply = 10;     // the answer was malformed, too large, or cut off
inline constexpr int kExitPartial = 11;      // `rules import`: some rules were not converted
                                             // (or, with --apply, not added)

}  // namespace tollgate::cli
