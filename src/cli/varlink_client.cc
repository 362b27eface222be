#include "cli/varlink_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace tollgate::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Milliseconds left until `deadline` for poll(): -1 without a deadline, 0 once it has passed.
int PollTimeout(const std::optional<Clock::time_point>& deadline) {
  if (!deadline) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
}

// Waits for `events` on `fd`. kTimeout when the deadline passes first.
Status WaitFor(int fd, short events, const std::optional<Clock::time_point>& deadline,
               const std::string& what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, PollTimeout(deadline));
    if (n > 0) return {};
    if (n == 0) return Unexpected(ErrorCode::kTimeout, what + ": no answer in time");
    if (errno != EINTR) return Unexpected(Error::System(what + ": poll", errno));
  }
}

}  // namespace

Expected<VarlinkReply> ParseVarlinkReply(std::string_view message) {
  json doc = json::parse(message.begin(), message.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Unexpected(ErrorCode::kMalformed, "the reply is not a JSON object");
  }
  VarlinkReply reply;
  if (auto it = doc.find("error"); it != doc.end()) {
    if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
      return Unexpected(ErrorCode::kMalformed, "the reply's \"error\" is not a non-empty string");
    }
    reply.error = it->get<std::string>();
  }
  if (auto it = doc.find("parameters"); it != doc.end() && !it->is_null()) {
    if (!it->is_object()) {
      return Unexpected(ErrorCode::kMalformed, "the reply's \"parameters\" is not an object");
    }
    reply.parameters = std::move(*it);
  }
  if (auto it = doc.find("continues"); it != doc.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      return Unexpected(ErrorCode::kMalformed, "the reply's \"continues\" is not a boolean");
    }
    reply.continues = it->get<bool>();
  }
  return reply;
}

Expected<VarlinkClient> VarlinkClient::Connect(const std::string& path, const Options& options) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "control socket path \"" + path + "\" is empty or longer than " +
                          std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Unexpected(Error::System("socket(AF_UNIX)", errno));

  // A non-blocking AF_UNIX connect either completes at once or fails with EAGAIN when the
  // listener's backlog is full (a daemon that stopped accepting); retry until the deadline.
  const auto deadline = Clock::now() + options.timeout;
  for (;;) {
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) break;
    int err = errno;
    std::string what = "connect " + path;
    switch (err) {
      case EINTR:
        continue;
      case EAGAIN:
        if (Clock::now() >= deadline) {
          return Unexpected(ErrorCode::kTimeout,
                            what + ": the daemon is not accepting connections");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      case ENOENT:
      case ENOTDIR:
        return Unexpected(ErrorCode::kNotFound, Error::System(what, err).message);
      case ECONNREFUSED:
        return Unexpected(ErrorCode::kUnavailable, Error::System(what, err).message);
      case EACCES:
      case EPERM:
        return Unexpected(ErrorCode::kPermissionDenied, Error::System(what, err).message);
      default:
        return Unexpected(Error::System(what, err));
    }
  }
  return VarlinkClient(std::move(fd), path, options);
}

Status VarlinkClient::Send(std::string_view method, const json& parameters, bool more) {
  json call = {{"method", method}, {"parameters", parameters}};
  if (more) call["more"] = true;
  // Replacement of invalid UTF-8 keeps a stray byte in an argument from throwing here.
  std::string wire = call.dump(-1, ' ', false, json::error_handler_t::replace);
  wire.push_back('\0');
  const auto deadline = Clock::now() + options_.timeout;
  size_t sent = 0;
  while (sent < wire.size()) {
    ssize_t n = ::send(fd_.get(), wire.data() + sent, wire.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (auto waited = WaitFor(fd_.get(), POLLOUT, deadline, "send to " + path_); !waited) {
        return waited;
      }
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      return Unexpected(ErrorCode::kProtocol,
                        "send to " + path_ + ": the daemon closed the connection");
    }
    return Unexpected(Error::System("send to " + path_, errno));
  }
  return {};
}

Expected<VarlinkReply> VarlinkClient::Receive(std::optional<std::chrono::milliseconds> timeout) {
  std::optional<Clock::time_point> deadline;
  if (timeout) deadline = Clock::now() + *timeout;
  const std::string what = "read from " + path_;
  size_t scanned = 0;  // bytes of buffer_ already known to hold no NUL
  for (;;) {
    size_t nul = buffer_.find('\0', scanned);
    if (nul != std::string::npos) {
      std::string message = buffer_.substr(0, nul);
      buffer_.erase(0, nul + 1);
      if (message.size() > options_.max_reply_bytes) break;
      return ParseVarlinkReply(message);
    }
    scanned = buffer_.size();
    if (buffer_.size() > options_.max_reply_bytes) break;
    char chunk[65536];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      return Unexpected(
          ErrorCode::kProtocol,
          what + ": the daemon closed the connection " +
              (buffer_.empty() ? std::string("without answering") : "in the middle of an answer"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (auto waited = WaitFor(fd_.get(), POLLIN, deadline, what); !waited) {
        return Unexpected(waited.error());
      }
      continue;
    }
    if (errno == ECONNRESET) {
      return Unexpected(ErrorCode::kProtocol, what + ": the daemon reset the connection");
    }
    return Unexpected(Error::System(what, errno));
  }
  return Unexpected(ErrorCode::kTooLarge, what + ": the answer is larger than " +
                                              std::to_string(options_.max_reply_bytes) +
                                              " bytes; not reading further");
}

Expected<VarlinkReply> VarlinkClient::Call(std::string_view method, const json& parameters) {
  if (auto sent = Send(method, parameters); !sent) return Unexpected(sent.error());
  return Receive(options_.timeout);
}

}  // namespace tollgate::cli
