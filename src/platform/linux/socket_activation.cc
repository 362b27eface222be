#include "platform/linux/socket_activation.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace tollgate::platform {
namespace {

// What the unit file has to say for each expected socket, for error messages.
constexpr char kUnitHint[] =
    "tollgated.socket must pass FileDescriptorName=analysis with ListenSequentialPacket= and/or "
    "FileDescriptorName=control with ListenStream=";

const char* TypeName(int type) {
  switch (type) {
    case SOCK_STREAM:
      return "SOCK_STREAM";
    case SOCK_SEQPACKET:
      return "SOCK_SEQPACKET";
    case SOCK_DGRAM:
      return "SOCK_DGRAM";
    default:
      return "another type";
  }
}

// Says what an fd actually is, for the error when sd_is_socket_unix() says it is not what we want.
std::string DescribeFd(int fd) {
  int domain = 0, type = 0, listening = 0;
  socklen_t len = sizeof(int);
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    return std::string("not a socket (") + std::strerror(errno) + ")";
  }
  len = sizeof(int);
  ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
  len = sizeof(int);
  ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
  std::string out =
      domain == AF_UNIX ? "an AF_UNIX " : "a non-AF_UNIX (family " + std::to_string(domain) + ") ";
  out += TypeName(type);
  out += listening ? " socket, listening" : " socket, not listening";
  return out;
}

struct CharvFree {
  char** names = nullptr;
  ~CharvFree() {
    if (names == nullptr) return;
    for (char** n = names; *n != nullptr; ++n) std::free(*n);
    std::free(names);
  }
};

Status CheckListeningUnix(int fd, int type, const std::string& label) {
  int r = sd_is_socket_unix(fd, type, /*listening=*/1, nullptr, 0);
  if (r < 0) {
    return Unexpected(Error::System("inspect passed fd " + label, -r));
  }
  if (r == 0) {
    return Unexpected(ErrorCode::kInvalidArgument, "passed fd " + label + " is " + DescribeFd(fd) +
                                                       "; expected a listening AF_UNIX " +
                                                       TypeName(type) + " socket. " + kUnitHint);
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return Unexpected(Error::System("set O_NONBLOCK on passed fd " + label, errno));
  }
  return {};
}

}  // namespace

Expected<ActivatedSockets> TakeActivatedSockets() {
  CharvFree names;
  // unset_environment=1: clears LISTEN_* even on failure. The call also sets FD_CLOEXEC on the
  // passed fds, so they do not leak into anything we spawn.
  int n = sd_listen_fds_with_names(1, &names.names);
  if (n < 0) {
    return Unexpected(
        Error{ErrorCode::kInvalidArgument,
              Error::System("read LISTEN_FDS/LISTEN_FDNAMES from the environment", -n).message +
                  "; check the socket unit or the systemd-socket-activate command"});
  }
  ActivatedSockets out;
  if (n == 0) return out;
  out.from_systemd = true;

  // Own every fd first, so that on any error all of them are closed.
  std::vector<UniqueFd> fds;
  std::vector<std::string> fd_names;
  std::string received;
  for (int i = 0; i < n; ++i) {
    fds.emplace_back(SD_LISTEN_FDS_START + i);
    const char* name = names.names != nullptr && names.names[i] != nullptr ? names.names[i] : "";
    fd_names.emplace_back(name);
    if (!received.empty()) received += ", ";
    received += "fd " + std::to_string(SD_LISTEN_FDS_START + i) + " named \"" + name + "\"";
  }

  // systemd names an fd "unknown" when no name was configured.
  if (n == 1 && fd_names[0] == "unknown") fd_names[0] = kAnalysisSocketName;

  for (int i = 0; i < n; ++i) {
    const std::string label =
        std::to_string(SD_LISTEN_FDS_START + i) + " (\"" + fd_names[i] + "\")";
    UniqueFd* slot = nullptr;
    int type = 0;
    if (fd_names[i] == kAnalysisSocketName) {
      slot = &out.analysis;
      type = SOCK_SEQPACKET;
    } else if (fd_names[i] == kControlSocketName) {
      slot = &out.control;
      type = SOCK_STREAM;
    } else {
      return Unexpected(ErrorCode::kInvalidArgument,
                        "unexpected socket passed by the service manager: received " + received +
                            ". " + kUnitHint);
    }
    if (slot->valid()) {
      return Unexpected(ErrorCode::kInvalidArgument, "socket name \"" + fd_names[i] +
                                                         "\" passed more than once: received " +
                                                         received + ". " + kUnitHint);
    }
    Status ok = CheckListeningUnix(fds[i].get(), type, label);
    if (!ok) return Unexpected(ok.error());
    *slot = std::move(fds[i]);
  }
  return out;
}

}  // namespace tollgate::platform
