// The runtime directory (/run/<group>/) and the listening sockets in it, for a tollgated started by
// hand (under systemd the sockets come from socket activation instead). tollgated calls
// PrepareRuntimeDir once at start-up, then BindServiceSocket for analysis.sock (SOCK_SEQPACKET)
// and control.sock (SOCK_STREAM). Integration tests call both with a temporary directory.
//
// Only the directory itself is checked, not its parents: /run is root's, and a test directory's
// parents are the tester's business. Sockets are created through the verified directory's fd, so
// a parent path swapped after the check cannot redirect them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "common/error.h"
#include "common/unique_fd.h"

namespace tollgate::platform {

// Group id meaning "no app group": the directory and sockets get our effective gid (root only).
inline constexpr uint32_t kNoGroup = 0xffffffffu;
// 0751, as tmpfiles.d and the socket units make /run/tollgate: the app group may list it; anyone
// may traverse it, so an admin-group member outside the app group reaches control.sock. What
// guards each socket is its own mode (0660, its group) and the daemon's credential check.
inline constexpr mode_t kRuntimeDirMode = 0751;
inline constexpr mode_t kServiceSocketMode = 0660;

struct RuntimeDir {
  std::string path;
  UniqueFd fd;  // O_DIRECTORY handle of the verified directory; sockets are made through it
  bool created = false;
};

// Creates `path` (one level, mode 0751, owner = our euid, group = group_gid) or verifies an
// existing one. Refuses a symlink, a non-directory, a directory owned by another uid, and one
// writable by others (anyone may have planted files in it). An existing directory of ours with the
// wrong group or mode is corrected and logged: the usual cause is a tmpfiles.d/RuntimeDirectory=
// setting or a re-created group, and leaving it would make the sockets unreachable for the group.
Expected<RuntimeDir> PrepareRuntimeDir(const std::string& path, uint32_t group_gid);

// Binds and listens on `dir`/`name`: an AF_UNIX socket of `type` (SOCK_SEQPACKET or SOCK_STREAM),
// non-blocking and close-on-exec, owned by our euid and group_gid with `mode`. A stale socket
// left by a previous run is removed; a socket someone still listens on, or anything that is not a
// socket, is refused.
Expected<UniqueFd> BindServiceSocket(const RuntimeDir& dir, const std::string& name, int type,
                                     uint32_t group_gid, mode_t mode = kServiceSocketMode);

}  // namespace tollgate::platform
