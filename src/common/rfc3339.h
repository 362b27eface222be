// RFC 3339 timestamps, the one text form of time that the control API, the CLI and the flow log
// exchange. Parsing is strict (a real calendar date, an explicit offset) because the text comes
// from users and from the wire; formatting is always UTC ("Z").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate {

// "2024-05-01T12:00:00Z", "2024-05-01T14:00:00.123456+02:00"; also "t"/" " for "T" and "z" for
// "Z". The fraction has 1 to 9 digits (kept to the microsecond); a leap second (:60) counts as :59.
// Microseconds since the Unix epoch; nullopt when it is not RFC 3339 (no offset, 2023-02-29, ...).
std::optional<int64_t> ParseRfc3339Micros(std::string_view text);

// "2024-05-01T12:00:00.123456Z", or without the fraction when `with_micros` is false.
std::string FormatRfc3339Micros(int64_t time_us, bool with_micros = true);

}  // namespace tollgate
