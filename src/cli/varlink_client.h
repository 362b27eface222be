// A varlink client over a stream AF_UNIX socket, for `tollgate` talking to tollgated's control API
// (proto/io.tollgate.Control.varlink). One call at a time on one connection, as varlink requires:
// a message is one JSON object followed by a NUL byte. Every wait is bounded by a deadline and
// every reply by a size, so a wedged or hostile peer makes the CLI fail with a clear error instead
// of hanging or growing without limit. The command code (control_commands.cc) and the tests use
// it; control_session.h turns its errors into messages and exit codes.
#pragma once

#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace tollgate::cli {

// QueryFlows with a large limit is the biggest answer we expect; 16 MiB leaves room for it and
// still stops a peer that never sends the terminating NUL.
inline constexpr size_t kDefaultMaxReplyBytes = 16 << 20;
inline constexpr std::chrono::milliseconds kDefaultCallTimeout{5000};

// One reply: either `parameters` of a successful call, or a varlink error `error` (its name, such
// as "io.tollgate.Control.RuleNotFound") with the error's `parameters`.
struct VarlinkReply {
  nlohmann::json parameters = nlohmann::json::object();
  bool continues = false;  // more replies follow (a call made with more=true)
  std::string error;       // empty on success

  bool ok() const { return error.empty(); }
};

class VarlinkClient {
 public:
  struct Options {
    std::chrono::milliseconds timeout = kDefaultCallTimeout;  // connect, send, each reply
    size_t max_reply_bytes = kDefaultMaxReplyBytes;
  };

  // Connects to the socket at `path`. Errors carry the errno's meaning in their code, which
  // control_session.h relies on: kNotFound (no such socket: ENOENT, ENOTDIR), kUnavailable
  // (nobody listening: ECONNREFUSED), kPermissionDenied (EACCES, EPERM), kTimeout (the listen
  // backlog stayed full), kInvalidArgument (path too long), kSystem (anything else).
  static Expected<VarlinkClient> Connect(const std::string& path, const Options& options);
  // Connects with the default options.
  static Expected<VarlinkClient> Connect(const std::string& path) { return Connect(path, {}); }

  // Sends one call. With `more`, the peer may answer with several replies (continues=true).
  Status Send(std::string_view method, const nlohmann::json& parameters, bool more = false);

  // Reads the next reply, waiting at most `timeout` (nullopt: forever, for a followed stream).
  // Errors: kTimeout, kTooLarge (over max_reply_bytes), kMalformed (not a JSON object, or a
  // field of the wrong type), kProtocol (the peer closed the connection before a whole reply),
  // kSystem.
  Expected<VarlinkReply> Receive(std::optional<std::chrono::milliseconds> timeout);

  // Send + Receive with the options' timeout.
  Expected<VarlinkReply> Call(std::string_view method,
                              const nlohmann::json& parameters = nlohmann::json::object());

  int fd() const { return fd_.get(); }

 private:
  VarlinkClient(UniqueFd fd, const std::string& path, const Options& options)
      : fd_(std::move(fd)), path_(path), options_(options) {}

  UniqueFd fd_;
  std::string path_;
  Options options_;
  std::string buffer_;  // bytes received after the last complete message
};

// Parses one varlink reply message (without its NUL). Exposed for the tests and the fuzz-minded.
Expected<VarlinkReply> ParseVarlinkReply(std::string_view message);

}  // namespace tollgate::cli
