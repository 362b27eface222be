#include "common/toml_report.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <utility>
#include <vector>

#include "common/unique_fd.h"

namespace tollgate::toml_report {
namespace {

// Edits between two keys, a swap of neighbours counting as one ("prot" -> "port"): the common
// typing mistakes, for "did you mean".
size_t EditDistance(std::string_view a, std::string_view b) {
  // Lengths far apart are far apart; this also bounds the table for a hostile 1 MB key.
  const size_t length_gap = a.size() > b.size() ? a.size() - b.size() : b.size() - a.size();
  if (length_gap > 2) return length_gap;
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace

std::string Position(std::string_view source, const toml::source_position& where) {
  std::string out(source);
  if (where.line != 0) {
    out += ':';
    out += std::to_string(where.line);
    out += ':';
    out += std::to_string(where.column);
  }
  return out;
}

std::string At(std::string_view source, const toml::source_position& where) {
  return Position(source, where) + ": ";
}

bool Before(const toml::source_position& a, const toml::source_position& b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}

void Problems::Add(const toml::source_position& where, std::string message) {
  if (count_++ == 0 || Before(where, first_where_)) {
    first_where_ = where;
    first_ = std::move(message);
  }
}

Error Problems::ToError() const {
  std::string text = At(source_, first_where_) + first_;
  if (count_ > 1) {
    text += " (and " + std::to_string(count_ - 1) + " more problem" + (count_ > 2 ? "s" : "") +
            " in this file)";
  }
  return Error{ErrorCode::kInvalidArgument, std::move(text)};
}

std::string Quote(std::string_view text) {
  constexpr size_t kMaxShown = 64;
  std::string out = "\"";
  size_t shown = std::min(text.size(), kMaxShown);
  // Do not cut a UTF-8 sequence in half.
  while (shown < text.size() && shown > 0 && (static_cast<uint8_t>(text[shown]) & 0xc0) == 0x80) {
    --shown;
  }
  for (char c : text.substr(0, shown)) {
    auto u = static_cast<uint8_t>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  if (shown < text.size()) out += "...";
  return out;
}

std::string Describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return Quote(node.as_string()->get());
    case toml::node_type::integer:
      return std::to_string(node.as_integer()->get());
    case toml::node_type::floating_point: {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%g", node.as_floating_point()->get());
      return buf;
    }
    case toml::node_type::boolean:
      return node.as_boolean()->get() ? "true" : "false";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::string Must(std::string_view name, std::string_view expected, const toml::node& node) {
  std::string out(name);
  out += " must be ";
  out += expected;
  out += ", got ";
  out += Describe(node);
  return out;
}

std::string KeyHint(std::string_view key, std::span<const std::string_view> known) {
  const std::string_view* closest = nullptr;
  // Suggest only near misses: two typos in a long key, one in a short key ("hash" is not "path").
  size_t best = key.size() <= 4 ? 2 : 3;
  for (const auto& k : known) {
    size_t d = EditDistance(key, k);
    if (d < best) {
      best = d;
      closest = &k;
    }
  }
  if (closest != nullptr) return "; did you mean " + Quote(*closest) + "?";
  std::string out = "; expected one of: ";
  for (size_t i = 0; i < known.size(); ++i) {
    if (i > 0) out += ", ";
    out += known[i];
  }
  return out;
}

Expected<toml::table> ParseToml(std::string_view text, const std::string& source_name) {
  try {
    return toml::parse(text, std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    return Unexpected(ErrorCode::kMalformed,
                      At(source_name, e.source().begin) + std::string(e.description()));
  } catch (const std::exception& e) {
    // Nothing else is documented to be thrown; if it is, it still must not escape this API.
    return Unexpected(ErrorCode::kMalformed, source_name + ": cannot parse: " + e.what());
  }
}

Expected<std::string> ReadSmallFile(const std::string& path, size_t max_bytes,
                                    std::string_view kind, std::string_view too_large_advice) {
  const std::string what = "cannot read " + std::string(kind) + " " + path;
  // O_NONBLOCK so that a FIFO given by mistake, or dropped into rules.d, is refused below instead
  // of hanging the start-up or a reload.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    int err = errno;
    Error error = Error::System(what, err);
    if (err == ENOENT) error.code = ErrorCode::kNotFound;
    return Unexpected(std::move(error));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Unexpected(Error::System(what, errno));
  if (!S_ISREG(st.st_mode)) {
    return Unexpected(ErrorCode::kInvalidArgument, what + ": not a regular file");
  }
  std::string text;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unexpected(Error::System(what, errno));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > max_bytes) {
      return Unexpected(ErrorCode::kTooLarge, what + ": larger than " + std::to_string(max_bytes) +
                                                  " bytes" + std::string(too_large_advice));
    }
  }
  return text;
}

std::optional<uint16_t> ParseDecimalUint16(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  uint32_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  if (n > 65535) return std::nullopt;
  return static_cast<uint16_t>(n);
}

}  // namespace tollgate::toml_report
