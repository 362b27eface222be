// Logging to stderr with sd-daemon priority prefixes (<3> error … <7> debug) so journald keeps the
// levels. Per-packet oddities are counted, not logged: these functions are for events a person
// should read.
#pragma once

#include <cstdarg>
#include <optional>
#include <string_view>

namespace tollgate {

enum class LogLevel { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6, kDebug = 7 };

void SetLogLevel(LogLevel max_level);
// For messages whose arguments cost something to build (per-flow debug lines).
bool LogEnabled(LogLevel level);
// "error", "warning", "notice", "info" or "debug"; nullopt for anything else.
std::optional<LogLevel> ParseLogLevel(std::string_view name);
void SetLogProgramName(const char* name);
void Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace tollgate

#define TG_LOG_ERROR(...) ::tollgate::Log(::tollgate::LogLevel::kError, __VA_ARGS__)
#define TG_LOG_WARNING(...) ::tollgate::Log(::tollgate::LogLevel::kWarning, __VA_ARGS__)
#define TG_LOG_NOTICE(...) ::tollgate::Log(::tollgate::LogLevel::kNotice, __VA_ARGS__)
#define TG_LOG_INFO(...) ::tollgate::Log(::tollgate::LogLevel::kInfo, __VA_ARGS__)
#define TG_LOG_DEBUG(...) ::tollgate::Log(::tollgate::LogLevel::kDebug, __VA_ARGS__)
