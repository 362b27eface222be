// Error values for code that must not throw: the packet path, the daemon's request handling, and
// every parser of outside bytes. An Error says what failed and what to do; Expected<T> carries a
// value or an Error, in the spirit of C++23 std::expected (GCC 12 does not ship it).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace tollgate {

enum class ErrorCode {
  kInvalidArgument,  // caller or configuration gave something unusable
  kMalformed,        // outside bytes that do not parse
  kTooLarge,         // over a documented bound
  kPermissionDenied,
  kNotFound,
  kUnavailable,  // peer or resource away; retrying later may work
  kProtocol,     // peer broke the protocol (wrong order, wrong version)
  kSystem,       // a system call failed; message carries errno text
  kTimeout,
};

const char* ErrorCodeName(ErrorCode code);

struct Error {
  ErrorCode code;
  std::string message;

  // Error::System("open /etc/tollgate/tollgate.toml") -> "open ...: No such file or directory".
  static Error System(std::string what, int err);
};

// Tag to build an Expected holding an error: `return Unexpected(Error{...});`.
struct Unexpected {
  explicit Unexpected(Error e) : error(std::move(e)) {}
  Unexpected(ErrorCode code, std::string message) : error{code, std::move(message)} {}
  Error error;
};

template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Expected(Unexpected u) : v_(std::in_place_index<1>, std::move(u.error)) {}  // NOLINT

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Unexpected u) : error_(std::move(u.error)), ok_(false) {}  // NOLINT: implicit by design
  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{ErrorCode::kInvalidArgument, {}};
  bool ok_ = true;
};

using Status = Expected<void>;

// Broken invariants of our own crash loudly: a half-alive filter is worse than a restarted one.
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr);

}  // namespace tollgate

#define TG_CHECK(expr)                                               \
  do {                                                               \
    if (!(expr)) ::tollgate::CheckFailed(__FILE__, __LINE__, #expr); \
  } while (0)
