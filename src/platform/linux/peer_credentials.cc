#include "platform/linux/peer_credentials.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "common/log.h"
#include "common/unique_fd.h"

// Debian 12's headers predate these; the numbers are part of the kernel ABI.
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

namespace tollgate::platform {
namespace {

constexpr int kMaxGroupsRetries = 4;

std::string ProcPath(pid_t pid, const char* leaf) {
  return "/proc/" + std::to_string(pid) + "/" + leaf;
}

// readlink(2) into a string; the kernel renders /proc links into one page at most, but grow once
// anyway so a truncated path can never be mistaken for a real one.
std::optional<std::string> ReadLink(const std::string& path, int& err) {
  std::string buf(4096, '\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    if (n < 0) {
      err = errno;
      return std::nullopt;
    }
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    buf.resize(buf.size() * 16);
  }
  err = ENAMETOOLONG;
  return std::nullopt;
}

// The "Pid:" line of /proc/self/fdinfo/<pidfd>: the pid in our namespace, -1 once the process has
// exited (kernels that hand out pidfds for exited peers), 0 when it lives in a pid namespace we
// cannot see.
std::optional<long> PidOfPidfd(int pidfd, std::string& why) {
  std::string path = "/proc/self/fdinfo/" + std::to_string(pidfd);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    why = "cannot open " + path + ": " + std::strerror(errno) + " (is /proc mounted?)";
    return std::nullopt;
  }
  std::string text;
  char chunk[1024];
  while (text.size() < 64 * 1024) {
    ssize_t n = ::read(fd.get(), chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      why = "cannot read " + path + ": " + std::strerror(errno);
      return std::nullopt;
    }
    if (n == 0) break;
    text.append(chunk, static_cast<size_t>(n));
  }
  std::string_view rest(text);
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    if (line.substr(0, 4) != "Pid:") continue;
    std::string value(line.substr(4));
    char* end = nullptr;
    errno = 0;
    long pid = std::strtol(value.c_str(), &end, 10);
    while (end != nullptr && (*end == ' ' || *end == '\t')) ++end;
    if (errno != 0 || end == value.c_str() || (end != nullptr && *end != '\0')) break;
    return pid;
  }
  why = path + " has no valid Pid: line (kernel too old for pidfd fdinfo?)";
  return std::nullopt;
}

// pidfd_send_signal with signal 0 checks existence only. EPERM still proves the process exists
// (same meaning as kill(pid, 0)).
bool PidfdStillAlive(int pidfd) {
  if (::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0) return true;
  return errno == EPERM;
}

void WarnPidFallbackOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    TG_LOG_WARNING(
        "kernel lacks SO_PEERPIDFD (Linux >= 6.5): peer executables are identified through "
        "pidfd_open(pid) after the fact, so a peer that exits right after connecting could have "
        "its pid reused by another process before we look; such identities are marked "
        "exe_from_pidfd=false");
  });
}

std::string HexLower(const unsigned char* bytes, unsigned int len) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0x0f]);
  }
  return out;
}

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

// SHA-256 of an open file, read with pread so the offset of a shared description is untouched.
Expected<std::string> Sha256OfFile(int fd, uint64_t size) {
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return Unexpected(ErrorCode::kSystem, "OpenSSL could not initialise SHA-256");
  }
  std::vector<unsigned char> buf(64 * 1024);
  uint64_t offset = 0;
  while (true) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Unexpected(Error::System("read executable", errno));
    if (n == 0) break;
    offset += static_cast<uint64_t>(n);
    // The size was checked against the limit before hashing; a file growing underneath us must
    // not turn that check into an unbounded read.
    if (offset > size) {
      return Unexpected(ErrorCode::kUnavailable, "executable changed size while being hashed");
    }
    if (EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n)) != 1) {
      return Unexpected(ErrorCode::kSystem, "OpenSSL SHA-256 update failed");
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) != 1) {
    return Unexpected(ErrorCode::kSystem, "OpenSSL SHA-256 final failed");
  }
  return HexLower(digest, digest_len);
}

}  // namespace

Expected<ipc::PeerFacts> LinuxPeerIdentity::Identify(int connected_fd, bool want_exe_hash) {
  const std::string where = "socket fd " + std::to_string(connected_fd);
  int domain = 0;
  socklen_t len = sizeof(domain);
  if (::getsockopt(connected_fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    return Unexpected(Error::System("identify peer: getsockopt(SO_DOMAIN) on " + where, errno));
  }
  if (domain != AF_UNIX) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "identify peer: " + where + " is not an AF_UNIX socket (domain " +
                          std::to_string(domain) + "); peer credentials exist only for AF_UNIX");
  }

  ipc::PeerFacts facts;
  struct ucred cred {};
  len = sizeof(cred);
  if (::getsockopt(connected_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return Unexpected(Error::System("identify peer: getsockopt(SO_PEERCRED) on " + where, errno));
  }
  // An unconnected socket reports pid 0 and (uid_t)-1; refuse it rather than hand back facts
  // that look like a person.
  if (cred.pid == 0 && cred.uid == static_cast<uid_t>(-1) && cred.gid == static_cast<gid_t>(-1)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "identify peer: " + where + " has no peer credentials (not connected?)");
  }
  facts.uid = cred.uid;
  facts.gid = cred.gid;
  facts.pid = cred.pid;

  // Start with room for a typical list and grow to what the kernel asks for on ERANGE.
  std::vector<gid_t> groups(32);
  for (int attempt = 0; attempt < kMaxGroupsRetries; ++attempt) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(connected_fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      facts.groups.assign(groups.begin(), groups.end());
      facts.groups_known = true;
      break;
    }
    if (errno != ERANGE) break;  // ENOPROTOOPT before Linux 4.13: groups stay unknown
    groups.resize(glen / sizeof(gid_t) + 1);
  }

  if (facts.pid <= 0) {
    // pid 0: the peer lives in a pid namespace that is not ours or below it.
    facts.exe_unknown_reason = "peer process is not visible in our pid namespace";
    return facts;
  }

  if (options_.use_so_peerpidfd) {
    int pidfd = -1;
    len = sizeof(pidfd);
    if (::getsockopt(connected_fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0) {
      UniqueFd owned(pidfd);
      IdentifyExecutable(owned.get(), /*from_pidfd=*/true, want_exe_hash, facts);
      return facts;
    }
    const int err = errno;
    if (err != ENOPROTOOPT) {
      // EINVAL: Linux 6.5-6.15 refuse a pidfd for a peer that has already exited and been
      // reaped. Falling back to pidfd_open(pid) here would open whoever holds that pid now,
      // which is exactly the attribution the pidfd exists to prevent.
      facts.exe_unknown_reason =
          err == EINVAL ? "peer process exited"
                        : std::string("getsockopt(SO_PEERPIDFD) failed: ") + std::strerror(err);
      return facts;
    }
  }

  WarnPidFallbackOnce();
  long pidfd = ::syscall(SYS_pidfd_open, facts.pid, 0);
  if (pidfd < 0) {
    const int err = errno;
    if (err == ESRCH) {
      facts.exe_unknown_reason = "peer process exited";
    } else if (err == ENOSYS) {
      facts.exe_unknown_reason =
          "the kernel supports neither SO_PEERPIDFD nor pidfd_open (Linux >= 5.3 needed)";
    } else {
      facts.exe_unknown_reason = std::string("pidfd_open failed: ") + std::strerror(err);
    }
    return facts;
  }
  UniqueFd owned(static_cast<int>(pidfd));
  IdentifyExecutable(owned.get(), /*from_pidfd=*/false, want_exe_hash, facts);
  return facts;
}

void LinuxPeerIdentity::IdentifyExecutable(int pidfd, bool from_pidfd, bool want_exe_hash,
                                           ipc::PeerFacts& facts) {
  std::string why;
  std::optional<long> pid = PidOfPidfd(pidfd, why);
  if (!pid) {
    facts.exe_unknown_reason = why;
    return;
  }
  if (*pid == -1) {
    facts.exe_unknown_reason = "peer process exited";
    return;
  }
  if (*pid == 0) {
    facts.exe_unknown_reason = "peer process lives in a pid namespace this process cannot see";
    return;
  }
  if (*pid != facts.pid) {
    facts.exe_unknown_reason = "pidfd names pid " + std::to_string(*pid) +
                               " but SO_PEERCRED names pid " + std::to_string(facts.pid);
    return;
  }

  const std::string exe_link = ProcPath(facts.pid, "exe");
  std::string path;
  int err = 0;
  bool hashed_from_fd = false;
  if (want_exe_hash) {
    // Opening the magic link yields the very file the process runs (even when deleted or in
    // another mount namespace); naming it through our own fd keeps path and hash about one file.
    UniqueFd exe(::open(exe_link.c_str(), O_RDONLY | O_CLOEXEC));
    if (exe.valid()) {
      std::optional<std::string> named =
          ReadLink("/proc/self/fd/" + std::to_string(exe.get()), err);
      if (named) {
        path = std::move(*named);
        HashExecutable(exe.get(), facts);
        hashed_from_fd = true;
      } else {
        facts.exe_sha256_unavailable_reason =
            std::string("cannot name the opened executable: ") + std::strerror(err);
      }
    } else {
      facts.exe_sha256_unavailable_reason = "cannot open " + exe_link + ": " + std::strerror(errno);
    }
  }
  if (!hashed_from_fd) {
    std::optional<std::string> link = ReadLink(exe_link, err);
    if (!link) {
      // ENOENT: the process exited (a zombie has no executable) or is a kernel thread.
      facts.exe_unknown_reason =
          err == ENOENT ? "peer process exited"
                        : "cannot read " + exe_link + ": " + std::strerror(err) +
                              (err == EACCES ? " (needs CAP_SYS_PTRACE or the peer's uid)" : "");
      return;
    }
    path = std::move(*link);
  }

  // Only now, with everything read, does the pidfd prove that the pid still named the process we
  // asked about: a pid cannot be reused while its process is alive.
  if (!PidfdStillAlive(pidfd)) {
    facts.exe_sha256.clear();
    facts.exe_unknown_reason = "peer process exited while it was being identified";
    return;
  }
  facts.exe_path = std::move(path);
  facts.exe_known = true;
  facts.exe_from_pidfd = from_pidfd;
  facts.exe_unknown_reason.clear();
}

void LinuxPeerIdentity::HashExecutable(int exe_fd, ipc::PeerFacts& facts) {
  struct stat st {};
  if (::fstat(exe_fd, &st) != 0) {
    facts.exe_sha256_unavailable_reason = std::string("fstat failed: ") + std::strerror(errno);
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    facts.exe_sha256_unavailable_reason = "executable is not a regular file";
    return;
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > options_.max_hash_bytes) {
    facts.exe_sha256_unavailable_reason = "executable is " + std::to_string(size) +
                                          " bytes, over the hashing limit of " +
                                          std::to_string(options_.max_hash_bytes);
    return;
  }
  const FileKey key{st.st_dev,          st.st_ino,         st.st_size,        st.st_mtim.tv_sec,
                    st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec};
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = hash_cache_.find(key);
    if (it != hash_cache_.end()) {
      facts.exe_sha256 = it->second;
      return;
    }
  }
  // Hash outside the lock: other connections need not wait for a large file.
  Expected<std::string> digest = Sha256OfFile(exe_fd, size);
  if (!digest) {
    facts.exe_sha256_unavailable_reason = digest.error().message;
    return;
  }
  facts.exe_sha256 = *digest;
  if (options_.hash_cache_entries == 0) return;
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (hash_cache_.emplace(key, *digest).second) {
    cache_order_.push_back(key);
    while (cache_order_.size() > options_.hash_cache_entries) {
      hash_cache_.erase(cache_order_.front());
      cache_order_.pop_front();
    }
  }
}

size_t LinuxPeerIdentity::CachedHashCount() const {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  return hash_cache_.size();
}

}  // namespace tollgate::platform
