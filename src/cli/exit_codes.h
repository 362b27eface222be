// Exit codes shared by every `tollgate` command, so scripts and CI can tell "something is wrong
// with what you checked" from "you called me wrongly" from "I could not read it".
#pragma once

namespace tollgate::cli {

inline constexpr int kExitClean = 0;       // success; for checks: nothing is wrong
inline constexpr int kExitFindings = 1;    // a check reported at least one finding
inline constexpr int kExitUsage = 2;       // bad command line or option value
inline constexpr int kExitUnreadable = 3;  // the input could not be read or is not what was asked
                                           // for (or the output could not be written)

}  // namespace tollgate::cli
