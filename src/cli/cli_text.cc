#include "cli/cli_text.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <limits>

#include "common/rfc3339.h"

namespace tollgate::cli {

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::AddRow(std::vector<std::string> cells) {
  TG_CHECK(cells.size() <= headers_.size());
  cells.resize(headers_.size());
  for (std::string& cell : cells) cell = Printable(cell);
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> widths(headers_.size(), 0);
  for (size_t c = 0; c < headers_.size(); ++c) widths[c] = DisplayWidth(headers_[c]);
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], DisplayWidth(row[c]));
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t c = 0; c < cells.size(); ++c) {
      text += cells[c];
      if (c + 1 < cells.size()) text.append(widths[c] - DisplayWidth(cells[c]) + 2, ' ');
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text + "\n";
  };
  line(headers_);
  for (const auto& row : rows_) line(row);
  return out;
}

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one.
size_t Utf8Length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b = byte(i);
  size_t len = 0;
  uint32_t cp = 0;
  if (b >= 0xc2 && b <= 0xdf) {
    len = 2;
    cp = b & 0x1f;
  } else if (b >= 0xe0 && b <= 0xef) {
    len = 3;
    cp = b & 0x0f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    len = 4;
    cp = b & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  // Overlong forms, surrogates, beyond U+10FFFF, and the C1 controls (which terminals obey).
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0)) {
    return 0;
  }
  return len;
}

}  // namespace

std::string Printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    unsigned char b = static_cast<unsigned char>(text[i]);
    if (b >= 0x20 && b < 0x7f) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    if (b >= 0x80) {
      if (size_t len = Utf8Length(text, i); len > 0) {
        out.append(text.substr(i, len));
        i += len;
        continue;
      }
    }
    char esc[8];
    std::snprintf(esc, sizeof(esc), "\\x%02x", b);
    out += esc;
    ++i;
  }
  return out;
}

size_t DisplayWidth(std::string_view printable) {
  size_t width = 0;
  for (char c : printable) {
    if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) ++width;
  }
  return width;
}

std::optional<int64_t> ParseRfc3339(std::string_view text) {
  std::optional<int64_t> micros = ParseRfc3339Micros(text);
  if (!micros) return std::nullopt;
  // Whole seconds, rounding toward the past, so a fraction never moves a --since later.
  return *micros >= 0 ? *micros / 1'000'000 : -((-*micros + 999'999) / 1'000'000);
}

std::string FormatRfc3339Utc(int64_t unix_seconds) {
  return FormatRfc3339Micros(unix_seconds * 1'000'000, /*with_micros=*/false);
}

std::optional<int64_t> ParseDurationSeconds(std::string_view text) {
  if (text.empty()) return std::nullopt;
  int64_t total = 0;
  size_t i = 0;
  constexpr int64_t kMax = int64_t{100} * 365 * 86400;  // a century is plenty for a CLI
  while (i < text.size()) {
    size_t start = i;
    int64_t n = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      n = n * 10 + (text[i] - '0');
      if (n > kMax) return std::nullopt;
      ++i;
    }
    if (i == start || i == text.size()) return std::nullopt;  // no number, or no unit
    int64_t unit = 0;
    switch (text[i]) {
      case 'w':
        unit = 7 * 86400;
        break;
      case 'd':
        unit = 86400;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'm':
        unit = 60;
        break;
      case 's':
        unit = 1;
        break;
      default:
        return std::nullopt;
    }
    ++i;
    total += n * unit;
    if (total > kMax) return std::nullopt;
  }
  return total;
}

Expected<std::string> ResolveSince(std::string_view text, int64_t now_unix) {
  if (auto t = ParseRfc3339(text)) return FormatRfc3339Utc(*t);
  if (auto d = ParseDurationSeconds(text)) return FormatRfc3339Utc(now_unix - *d);
  return Unexpected(
      ErrorCode::kInvalidArgument,
      "--since \"" + Printable(text) +
          "\": expected a time like 2024-05-01T12:00:00Z or 2024-05-01T14:00:00+02:00, "
          "or how long ago like 10m, 2h, 1d, 1h30m");
}

}  // namespace tollgate::cli
