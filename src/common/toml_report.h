// How the strict TOML loaders tell a person what is wrong with a file they wrote. Called by the
// settings loader (common/config.cc, tollgate.toml) and the rule loader (analysis/rule_table.cc,
// rules.d/*.toml), and meant for the blocklist and OpenSnitch importers to come, so that every
// such file fails the same way: `file:line:col: key must be <this>, got <that>`, the earliest
// problem in the file first, a "did you mean" for a mistyped key, file text quoted so it cannot
// garble a terminal, and the file itself read with a size bound. Start-up and reload code only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

// Debian's toml++ 3.3 is a shared library built with exceptions (only the toml::v3::ex ABI is
// exported), so every translation unit must keep the default TOML_EXCEPTIONS=1: parse errors arrive
// as toml::parse_error and are converted to Error in ParseToml, never rethrown.
#include <toml++/toml.h>

#include "common/error.h"

namespace tollgate::toml_report {

// "file:12:5", or just "file" where toml++ knows no position (line 0).
std::string Position(std::string_view source, const toml::source_position& where);

// Position(...) + ": ", the start of a message.
std::string At(std::string_view source, const toml::source_position& where);

// Whether `a` comes earlier in the file than `b`.
bool Before(const toml::source_position& a, const toml::source_position& b);

// Collects the problems of one file and reports the earliest in document order. toml++ tables
// iterate in key order, not file order, so "first found" would depend on key spelling; the first
// line of the file is what a person fixes first. The count tells them there is more to fix.
class Problems {
 public:
  // `source` names the file in the message and must outlive this object.
  explicit Problems(std::string_view source) : source_(source) {}

  void Add(const toml::source_position& where, std::string message);
  bool any() const { return count_ > 0; }
  // kInvalidArgument, `file:line:col: first problem (and N more problems in this file)`.
  Error ToError() const;

 private:
  std::string_view source_;
  toml::source_position first_where_{};
  std::string first_;
  int count_ = 0;
};

// Quotes text from the file for a message: escapes what would garble a terminal or a log line and
// bounds the length, because the file may be anything the operator pointed us at.
std::string Quote(std::string_view text);

// What the file holds at `node`, for "... got <this>".
std::string Describe(const toml::node& node);

// `<name> must be <expected>, got <what node holds>`.
std::string Must(std::string_view name, std::string_view expected, const toml::node& node);

// The tail of an "unknown key" message: `; did you mean "port"?` for a near miss of one of
// `known`, else `; expected one of: a, b, c`.
std::string KeyHint(std::string_view key, std::span<const std::string_view> known);

// "80" -> 80: decimal digits only, at most 65535 (ports, queue numbers). No sign, no spaces.
std::optional<uint16_t> ParseDecimalUint16(std::string_view text);

// Parses a whole document. A syntax error becomes kMalformed `file:line:col: description`.
Expected<toml::table> ParseToml(std::string_view text, const std::string& source_name);

// Reads the regular file `path` of at most `max_bytes`, refusing anything else (a FIFO, a
// directory) rather than blocking on it. Errors read `cannot read <kind> <path>: ...`, where kind
// is what the caller reads ("settings file", "rule file"); kNotFound when the file is absent, and
// `too_large_advice` is appended to the kTooLarge message.
Expected<std::string> ReadSmallFile(const std::string& path, size_t max_bytes,
                                    std::string_view kind, std::string_view too_large_advice = {});

}  // namespace tollgate::toml_report
