#include "common/log.h"

#include <cstdio>

namespace tollgate {
namespace {
LogLevel g_max_level = LogLevel::kInfo;
const char* g_program = "tollgate";
}  // namespace

void SetLogLevel(LogLevel max_level) { g_max_level = max_level; }
bool LogEnabled(LogLevel level) { return static_cast<int>(level) <= static_cast<int>(g_max_level); }

std::optional<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "error") return LogLevel::kError;
  if (name == "warning") return LogLevel::kWarning;
  if (name == "notice") return LogLevel::kNotice;
  if (name == "info") return LogLevel::kInfo;
  if (name == "debug") return LogLevel::kDebug;
  return std::nullopt;
}
void SetLogProgramName(const char* name) { g_program = name; }

void Log(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) > static_cast<int>(g_max_level)) return;
  // One fprintf-sized buffer so concurrent writers do not interleave within a line.
  char line[2048];
  int n = std::snprintf(line, sizeof(line), "<%d>%s: ", static_cast<int>(level), g_program);
  if (n < 0) return;
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(line + n, sizeof(line) - static_cast<size_t>(n) - 1, fmt, ap);
  va_end(ap);
  if (m < 0) return;
  size_t len = static_cast<size_t>(n) + static_cast<size_t>(m);
  if (len > sizeof(line) - 2) len = sizeof(line) - 2;
  line[len++] = '\n';
  std::fwrite(line, 1, len, stderr);
}

}  // namespace tollgate
