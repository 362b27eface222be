#include "platform/linux/runtime_dir.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/log.h"

namespace tollgate::platform {
namespace {

std::string Octal(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

gid_t EffectiveGroup(uint32_t group_gid) {
  return group_gid == kNoGroup ? ::getegid() : static_cast<gid_t>(group_gid);
}

const char* SocketTypeName(int type) {
  switch (type) {
    case SOCK_SEQPACKET:
      return "SOCK_SEQPACKET";
    case SOCK_STREAM:
      return "SOCK_STREAM";
    default:
      return "unsupported socket type";
  }
}

// bind(2) and connect(2) take a path, not a directory fd. Naming the entry through
// /proc/self/fd/<dirfd> resolves to the directory we verified, whatever happens to its path.
Expected<sockaddr_un> AddressInDir(const RuntimeDir& dir, const std::string& name) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = "/proc/self/fd/" + std::to_string(dir.fd.get()) + "/" + name;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "socket name \"" + name + "\" is too long for an AF_UNIX address");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// A socket file with nobody listening is what a crashed or killed previous run leaves behind.
// connect() tells the two apart without touching the file: ECONNREFUSED means no listener. (A
// live listener sees one connection that closes at once; our peer check and codec handle that.)
// Returns true when the socket is stale and may be removed.
Expected<bool> SocketIsStale(const sockaddr_un& addr, int type, const std::string& shown) {
  UniqueFd probe(::socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return Unexpected(Error::System("socket(AF_UNIX) to probe " + shown, errno));
  int rc;
  do {
    rc = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno == ECONNREFUSED) return true;
  if (rc == 0 || errno == EAGAIN || errno == EINPROGRESS || errno == EPROTOTYPE) return false;
  return Unexpected(Error::System("connect to existing socket " + shown +
                                      " to check whether it is "
                                      "in use",
                                  errno));
}

}  // namespace

Expected<RuntimeDir> PrepareRuntimeDir(const std::string& path, uint32_t group_gid) {
  if (path.empty() || path[0] != '/' || path.find_first_not_of('/') == std::string::npos) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "runtime directory \"" + path + "\" must be an absolute path below /");
  }
  const gid_t gid = EffectiveGroup(group_gid);
  const uid_t euid = ::geteuid();
  RuntimeDir dir;
  dir.path = path;

  // Created 0700 and widened only after the group is set, so the directory is never open to the
  // wrong group (umask can only narrow the mode, never widen it).
  if (::mkdir(path.c_str(), 0700) == 0) {
    dir.created = true;
  } else if (errno != EEXIST) {
    const int err = errno;
    std::string hint = err == ENOENT ? "; its parent directory does not exist"
                       : err == EACCES || err == EPERM
                           ? "; run tollgated as root or pick a --runtime-dir you can write"
                           : "";
    Error e = Error::System("create runtime directory " + path, err);
    e.message += hint;
    return Unexpected(std::move(e));
  }

  dir.fd.Reset(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir.fd.valid()) {
    const int err = errno;
    struct stat lst {};
    if (::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) {
      return Unexpected(ErrorCode::kPermissionDenied,
                        "runtime directory " + path +
                            " is a symlink; refusing. Remove it; tollgated creates the directory "
                            "itself");
    }
    if (err == ENOTDIR) {
      return Unexpected(ErrorCode::kPermissionDenied,
                        "runtime directory " + path +
                            " exists and is not a directory; refusing. Remove it or pick another "
                            "--runtime-dir");
    }
    return Unexpected(Error::System("open runtime directory " + path, err));
  }

  // Everything below looks at the opened directory, not the path, so it cannot be swapped between
  // the check and the use.
  struct stat st {};
  if (::fstat(dir.fd.get(), &st) != 0) {
    return Unexpected(Error::System("fstat runtime directory " + path, errno));
  }
  // Checked for a directory we just made too: if its path was swapped before open(), the
  // impostor fails here.
  if (st.st_uid != euid) {
    return Unexpected(ErrorCode::kPermissionDenied,
                      "runtime directory " + path + " is owned by uid " +
                          std::to_string(st.st_uid) + ", not by us (uid " + std::to_string(euid) +
                          "); refusing. Remove it or chown it to uid " + std::to_string(euid));
  }
  if (st.st_mode & S_IWOTH) {
    return Unexpected(ErrorCode::kPermissionDenied,
                      "runtime directory " + path + " is writable by others (mode " +
                          Octal(st.st_mode) +
                          "); refusing, since anyone may have planted files in it. Remove it and "
                          "let tollgated recreate it");
  }
  if (st.st_gid != gid || (st.st_mode & 07777) != kRuntimeDirMode) {
    if (::fchown(dir.fd.get(), static_cast<uid_t>(-1), gid) != 0) {
      return Unexpected(Error{
          ErrorCode::kPermissionDenied,
          Error::System("give runtime directory " + path + " to gid " + std::to_string(gid), errno)
                  .message +
              "; run tollgated as root or as a member of that group"});
    }
    if (::fchmod(dir.fd.get(), kRuntimeDirMode) != 0) {
      return Unexpected(Error::System("chmod 0751 runtime directory " + path, errno));
    }
    if (!dir.created) {
      TG_LOG_NOTICE("runtime directory %s had gid %u mode %s; set to gid %u mode %s", path.c_str(),
                    static_cast<unsigned>(st.st_gid), Octal(st.st_mode).c_str(),
                    static_cast<unsigned>(gid), Octal(kRuntimeDirMode).c_str());
    }
  }
  return dir;
}

Expected<UniqueFd> BindServiceSocket(const RuntimeDir& dir, const std::string& name, int type,
                                     uint32_t group_gid, mode_t mode) {
  const std::string shown = dir.path + "/" + name;
  if (!dir.fd.valid()) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "bind " + shown + ": runtime directory is not prepared");
  }
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "socket name \"" + name + "\" must be a plain file name");
  }
  if (type != SOCK_SEQPACKET && type != SOCK_STREAM) {
    return Unexpected(ErrorCode::kInvalidArgument, "bind " + shown + ": socket type " +
                                                       std::to_string(type) +
                                                       " is not SOCK_SEQPACKET or SOCK_STREAM");
  }
  Expected<sockaddr_un> addr = AddressInDir(dir, name);
  if (!addr) return Unexpected(addr.error());
  const gid_t gid = EffectiveGroup(group_gid);

  struct stat st {};
  if (::fstatat(dir.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Unexpected(ErrorCode::kPermissionDenied,
                        shown +
                            " exists and is not a socket; refusing to remove it. Remove it by "
                            "hand if it is not needed");
    }
    Expected<bool> stale = SocketIsStale(*addr, type, shown);
    if (!stale) return Unexpected(stale.error());
    if (!*stale) {
      return Unexpected(ErrorCode::kUnavailable,
                        "another process is listening on " + shown +
                            "; stop it first (systemctl stop tollgated.socket tollgated) or pick "
                            "another --runtime-dir");
    }
    // Only we can write to the directory (0751, ours), so the entry checked above is the one
    // removed here.
    if (::unlinkat(dir.fd.get(), name.c_str(), 0) != 0 && errno != ENOENT) {
      return Unexpected(Error::System("remove stale socket " + shown, errno));
    }
    TG_LOG_INFO("removed stale socket %s left by a previous run", shown.c_str());
  } else if (errno != ENOENT) {
    return Unexpected(Error::System("stat " + shown, errno));
  }

  UniqueFd sock(::socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!sock.valid()) {
    return Unexpected(
        Error::System(std::string("socket(AF_UNIX, ") + SocketTypeName(type) + ")", errno));
  }
  // Linux creates the socket file with the socket inode's mode minus umask: setting it first
  // means the file never exists with a wider mode than asked for.
  if (::fchmod(sock.get(), mode) != 0) {
    return Unexpected(Error::System("fchmod socket for " + shown, errno));
  }
  if (::bind(sock.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    const int err = errno;
    std::string what = "bind " + shown;
    if (err == EADDRINUSE) what += " (created by someone else just now?)";
    return Unexpected(Error::System(what, err));
  }
  // From here on the file is ours: remove it again if we fail, so the next start is not refused.
  auto fail = [&](Error e) -> Expected<UniqueFd> {
    ::unlinkat(dir.fd.get(), name.c_str(), 0);
    return Unexpected(std::move(e));
  };
  // fchown/fchmod on the socket fd would change the socket inode, not the file in the directory,
  // so the file is changed by name. Nobody else can write to the directory to swap it, and we
  // do not listen yet, so a connect in between is refused.
  if (::fchownat(dir.fd.get(), name.c_str(), static_cast<uid_t>(-1), gid, AT_SYMLINK_NOFOLLOW) !=
      0) {
    return fail(
        Error{ErrorCode::kPermissionDenied,
              Error::System("give " + shown + " to gid " + std::to_string(gid), errno).message +
                  "; run tollgated as root or as a member of that group"});
  }
  // umask may have removed bits; set the exact mode.
  if (::fchmodat(dir.fd.get(), name.c_str(), mode, 0) != 0) {
    return fail(Error::System("chmod " + Octal(mode) + " " + shown, errno));
  }
  if (::fstatat(dir.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
      !S_ISSOCK(st.st_mode) || st.st_gid != gid || (st.st_mode & 07777) != (mode & 07777)) {
    return fail(Error{ErrorCode::kSystem, shown + " does not have gid " + std::to_string(gid) +
                                              " mode " + Octal(mode) + " after binding it"});
  }
  if (::listen(sock.get(), SOMAXCONN) != 0) {
    return fail(Error::System("listen on " + shown, errno));
  }
  return sock;
}

}  // namespace tollgate::platform
