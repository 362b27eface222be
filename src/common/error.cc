#include "common/error.h"

#include <cstring>

namespace tollgate {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid-argument";
    case ErrorCode::kMalformed:
      return "malformed";
    case ErrorCode::kTooLarge:
      return "too-large";
    case ErrorCode::kPermissionDenied:
      return "permission-denied";
    case ErrorCode::kNotFound:
      return "not-found";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kProtocol:
      return "protocol";
    case ErrorCode::kSystem:
      return "system";
    case ErrorCode::kTimeout:
      return "timeout";
  }
  return "unknown";
}

Error Error::System(std::string what, int err) {
  what += ": ";
  what += std::strerror(err);
  return Error{ErrorCode::kSystem, std::move(what)};
}

void CheckFailed(const char* file, int line, const char* expr) {
  std::fprintf(stderr, "<2>FATAL %s:%d: check failed: %s\n", file, line, expr);
  std::fflush(stderr);
  std::abort();
}

}  // namespace tollgate
