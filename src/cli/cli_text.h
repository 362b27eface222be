// Text helpers of the `tollgate` CLI: aligned tables for people, times in RFC 3339, and the
// relative times and durations operators type (`--since 10m`, OpenSnitch's "30m"). Used by
// control_commands.cc and opensnitch_import.cc; pure functions, so tests need no daemon.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace tollgate::cli {

// A text table: a header row, then rows, columns padded to the widest cell and separated by two
// spaces; the last column is not padded. Cells come from the daemon (executable paths, host
// names) and may hold anything, so control characters and invalid UTF-8 are shown escaped
// (`\x1b`) rather than sent to the terminal.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);
  // Missing cells are empty; extra cells are an error of ours (TG_CHECK).
  void AddRow(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }
  // Each line ends in '\n'. Without rows it is just the header line.
  std::string Render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// Text safe for a terminal: control characters, DEL and bytes that are not valid UTF-8 become
// `\xNN`; a backslash stays as is. Valid multi-byte UTF-8 is kept.
std::string Printable(std::string_view text);

// Columns a printable string takes: one per code point (good enough for names and paths).
size_t DisplayWidth(std::string_view printable);

// "2024-05-01T12:00:00Z", "2024-05-01T14:00:00.123456+02:00", or with a space or lowercase t/z;
// seconds since the epoch (the fraction is dropped). nullopt when it is not RFC 3339.
std::optional<int64_t> ParseRfc3339(std::string_view text);

// "2024-05-01T12:00:00Z".
std::string FormatRfc3339Utc(int64_t unix_seconds);

// A duration as an operator or OpenSnitch writes it: one or more `<number><unit>` with units
// w, d, h, m, s ("10m", "2h", "1d", "1h30m", "90s", "1h0m0s"). Seconds; nullopt otherwise
// (a bare number, an unknown unit, a negative or overflowing value).
std::optional<int64_t> ParseDurationSeconds(std::string_view text);

// `--since`: an RFC 3339 time (returned as given, normalised to UTC) or a duration meaning "that
// long before `now_unix`". kInvalidArgument with an example of both forms otherwise.
Expected<std::string> ResolveSince(std::string_view text, int64_t now_unix);

}  // namespace tollgate::cli
