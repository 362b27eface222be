#include "common/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <span>
#include <vector>

// Debian's toml++ 3.3 is a shared library built with exceptions (only the toml::v3::ex ABI is
// exported), so every translation unit must keep the default TOML_EXCEPTIONS=1: parse errors arrive
// as toml::parse_error and are converted to Error right here, never rethrown.
#include <toml++/toml.h>

#include "common/unique_fd.h"

namespace tollgate {
namespace {

std::string At(std::string_view source, const toml::source_position& where) {
  std::string out(source);
  if (where.line != 0) {
    out += ':';
    out += std::to_string(where.line);
    out += ':';
    out += std::to_string(where.column);
  }
  out += ": ";
  return out;
}

bool Before(const toml::source_position& a, const toml::source_position& b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}

// Collects the problems of one file and reports the earliest in document order. toml++ tables
// iterate in key order, not file order, so "first found" would depend on key spelling; the first
// line of the file is what a person fixes first. The count tells them there is more to fix.
class Problems {
 public:
  explicit Problems(std::string_view source) : source_(source) {}

  void Add(const toml::source_position& where, std::string message) {
    if (count_++ == 0 || Before(where, first_where_)) {
      first_where_ = where;
      first_ = std::move(message);
    }
  }
  bool any() const { return count_ > 0; }
  Error ToError() const {
    std::string text = At(source_, first_where_) + first_;
    if (count_ > 1) {
      text += " (and " + std::to_string(count_ - 1) + " more problem" + (count_ > 2 ? "s" : "") +
              " in this file)";
    }
    return Error{ErrorCode::kInvalidArgument, std::move(text)};
  }

 private:
  std::string_view source_;
  toml::source_position first_where_{};
  std::string first_;
  int count_ = 0;
};

// Quotes text from the file for a message: escapes what would garble a terminal or a log line and
// bounds the length, because the file may be anything the operator pointed us at.
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

// What the file holds at `node`, for "... got <this>".
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

struct Field {
  std::string_view key;
  std::function<void(const toml::node&)> read;
};

// Hands each known key of `table` to its reader and reports every other key: a typo must be an
// error, not a setting silently left at its default. `prefix` names the table in messages ("" for
// the root, "filter." for [filter]).
void ReadFields(const toml::table& table, std::string_view prefix, std::span<const Field> fields,
                Problems& problems) {
  for (auto&& [key, node] : table) {
    // A named copy: clang 14 cannot capture a structured binding in a lambda.
    const std::string_view name = key.str();
    auto known = std::find_if(fields.begin(), fields.end(),
                              [name](const Field& f) { return f.key == name; });
    if (known != fields.end()) {
      known->read(node);
      continue;
    }
    std::string message;
    // "filter." -> "filter"
    std::string_view table_name = prefix.substr(0, prefix.empty() ? 0 : prefix.size() - 1);
    if (node.is_table()) {
      message = "unknown table [" + std::string(prefix) + std::string(key.str()) + "]";
    } else {
      message = "unknown key " + Quote(key.str()) +
                (prefix.empty() ? std::string(" at the top level")
                                : " in [" + std::string(table_name) + "]");
    }
    const Field* closest = nullptr;
    // Suggest only near misses: two typos in a long key, one in a short key ("hash" is not "path").
    size_t best = key.str().size() <= 4 ? 2 : 3;
    for (const Field& f : fields) {
      size_t d = EditDistance(key.str(), f.key);
      if (d < best) {
        best = d;
        closest = &f;
      }
    }
    if (closest != nullptr) {
      message += "; did you mean " + Quote(closest->key) + "?";
    } else {
      message += "; expected one of: ";
      for (size_t i = 0; i < fields.size(); ++i) {
        if (i > 0) message += ", ";
        message += fields[i].key;
      }
    }
    problems.Add(key.source().begin, std::move(message));
  }
}

void ReadUint32(const toml::node& node, std::string_view name, int64_t min, int64_t max,
                uint32_t* out, Problems& problems) {
  const auto* value = node.as_integer();
  if (value == nullptr || value->get() < min || value->get() > max) {
    problems.Add(
        node.source().begin,
        Must(name, "an integer from " + std::to_string(min) + " to " + std::to_string(max), node));
    return;
  }
  *out = static_cast<uint32_t>(value->get());
}

void ReadBool(const toml::node& node, std::string_view name, bool* out, Problems& problems) {
  const auto* value = node.as_boolean();
  if (value == nullptr) {
    problems.Add(node.source().begin, Must(name, "true or false", node));
    return;
  }
  *out = value->get();
}

template <typename T>
struct Choice {
  std::string_view text;
  T value;
};

// `"a", "b" or "c"`.
template <typename T>
std::string ChoiceList(std::span<const Choice<T>> choices) {
  std::string out;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i > 0) out += i + 1 == choices.size() ? " or " : ", ";
    out += '"';
    out += choices[i].text;
    out += '"';
  }
  return out;
}

template <typename T>
void ReadChoice(const toml::node& node, std::string_view name, std::span<const Choice<T>> choices,
                T* out, Problems& problems) {
  if (const auto* value = node.as_string()) {
    for (const auto& choice : choices) {
      if (value->get() == choice.text) {
        *out = choice.value;
        return;
      }
    }
  }
  problems.Add(node.source().begin, Must(name, ChoiceList(choices), node));
}

// Paths are used as given by processes started with cwd "/", so a relative path would silently
// mean something else; an embedded NUL would silently shorten the path in every system call.
void ReadAbsolutePath(const toml::node& node, std::string_view name, std::string* out,
                      Problems& problems) {
  const auto* value = node.as_string();
  if (value == nullptr || value->get().empty() || value->get()[0] != '/' ||
      value->get().find('\0') != std::string::npos) {
    problems.Add(node.source().begin, Must(name, "an absolute path", node));
    return;
  }
  *out = value->get();
}

// The group name also names the runtime directory (/run/<group>), so it must be a plain name:
// no "/", no "..", not only digits (that reads as a gid).
bool IsGroupName(std::string_view name) {
  if (name.empty() || name.size() > 32) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

bool IsSha256Hex(std::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
}

// "7" -> 7; digits only, at most 65535.
std::optional<uint16_t> ParseQueueNumber(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  uint32_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  if (n > 65535) return std::nullopt;
  return static_cast<uint16_t>(n);
}

void ReadQueues(const toml::node& node, QueueRange* out, Problems& problems) {
  constexpr std::string_view kExpected =
      "a queue number from 0 to 65535 or a range like \"0-3\" (first <= last)";
  if (const auto* number = node.as_integer()) {
    if (number->get() >= 0 && number->get() <= 65535) {
      auto q = static_cast<uint16_t>(number->get());
      *out = QueueRange{q, q};
      return;
    }
  } else if (const auto* text = node.as_string()) {
    std::string_view s = text->get();
    size_t dash = s.find('-');
    auto first = ParseQueueNumber(s.substr(0, dash));
    auto last = dash == std::string_view::npos ? first : ParseQueueNumber(s.substr(dash + 1));
    if (first && last && *first <= *last) {
      *out = QueueRange{*first, *last};
      return;
    }
  }
  problems.Add(node.source().begin, Must("filter.queues", kExpected, node));
}

void ReadAllowExe(const toml::node& node, std::vector<AllowedExe>* out, Problems& problems) {
  const auto* entries = node.as_array();
  // An empty array is a valid way to write "no allowlist"; toml++ does not call it one of tables.
  if (entries == nullptr || (!entries->empty() && !entries->is_array_of_tables())) {
    problems.Add(node.source().begin,
                 Must("daemon.allow_exe", "an array of tables ([[daemon.allow_exe]])", node));
    return;
  }
  for (size_t i = 0; i < entries->size(); ++i) {
    const toml::table& entry = *entries->get(i)->as_table();
    std::string name = "daemon.allow_exe[" + std::to_string(i) + "]";
    AllowedExe exe;
    bool have_path = false;
    bool have_sha256 = false;
    const Field fields[] = {
        {"path",
         [&](const toml::node& n) {
           have_path = true;
           ReadAbsolutePath(n, name + ".path", &exe.path, problems);
         }},
        {"sha256",
         [&](const toml::node& n) {
           have_sha256 = true;
           const auto* value = n.as_string();
           if (value == nullptr || !IsSha256Hex(value->get())) {
             problems.Add(n.source().begin,
                          Must(name + ".sha256", "64 hex digits (as printed by sha256sum)", n));
             return;
           }
           exe.sha256 = value->get();
           std::transform(exe.sha256.begin(), exe.sha256.end(), exe.sha256.begin(),
                          [](char c) { return static_cast<char>(std::tolower(c)); });
         }},
    };
    ReadFields(entry, "daemon.allow_exe.", fields, problems);
    // Half an entry is a mistake: a path without a hash would allow any content at that path.
    if (!have_path) {
      problems.Add(entry.source().begin,
                   name + " is missing path (the absolute path of the executable)");
    }
    if (!have_sha256) {
      problems.Add(entry.source().begin,
                   name + " is missing sha256 (64 hex digits, as printed by sha256sum)");
    }
    out->push_back(std::move(exe));
  }
}

constexpr Choice<LogLevel> kLogLevels[] = {
    {"error", LogLevel::kError}, {"warning", LogLevel::kWarning}, {"notice", LogLevel::kNotice},
    {"info", LogLevel::kInfo},   {"debug", LogLevel::kDebug},
};
constexpr Choice<Action> kDefaultActions[] = {
    {"allow", Action::kAllow}, {"deny", Action::kDeny}, {"reject", Action::kReject}};
constexpr Choice<FallbackPolicy> kFallbacks[] = {{"fail_open", FallbackPolicy::kFailOpen},
                                                 {"fail_closed", FallbackPolicy::kFailClosed}};

// Runs `read` on a section that must be a table, or reports what it is instead.
std::function<void(const toml::node&)> Section(std::string_view name, Problems& problems,
                                               std::function<void(const toml::table&)> read) {
  return [name, &problems, read = std::move(read)](const toml::node& node) {
    if (const auto* table = node.as_table()) {
      read(*table);
    } else {
      problems.Add(node.source().begin, Must(name, "a table ([" + std::string(name) + "])", node));
    }
  };
}

// Reads a regular file of at most `max_bytes`. O_NONBLOCK so that a FIFO given by mistake is
// refused below instead of hanging the start-up.
Expected<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  const std::string what = "cannot read settings file " + path;
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
                                                  " bytes; is this the right file?");
    }
  }
  return text;
}

}  // namespace

Expected<Config> ParseConfig(std::string_view text, const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(text, std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    return Unexpected(ErrorCode::kMalformed,
                      At(source_name, e.source().begin) + std::string(e.description()));
  } catch (const std::exception& e) {
    // Nothing else is documented to be thrown; if it is, it still must not escape this API.
    return Unexpected(ErrorCode::kMalformed, source_name + ": cannot parse: " + e.what());
  }

  Config config;
  config.source = source_name;
  Problems problems(source_name);
  bool runtime_dir_set = false;

  const Field tollgate_fields[] = {
      {"group",
       [&](const toml::node& n) {
         const auto* value = n.as_string();
         if (value == nullptr || !IsGroupName(value->get())) {
           problems.Add(n.source().begin,
                        Must("tollgate.group",
                             "a group name (letters, digits, \"_\", \"-\", \".\"; starting with "
                             "a letter or \"_\"; at most 32 characters)",
                             n));
           return;
         }
         config.tollgate.group = value->get();
       }},
      {"runtime_dir",
       [&](const toml::node& n) {
         runtime_dir_set = true;
         ReadAbsolutePath(n, "tollgate.runtime_dir", &config.tollgate.runtime_dir, problems);
       }},
  };
  DaemonSettings& daemon = config.daemon;
  const Field daemon_fields[] = {
      {"idle_exit_seconds",
       [&](const toml::node& n) {
         ReadUint32(n, "daemon.idle_exit_seconds", 0, kMaxIdleExitSeconds,
                    &daemon.idle_exit_seconds, problems);
       }},
      {"daemon_uid",
       [&](const toml::node& n) {
         // (uid_t)-1 is "no uid" in chown(2) and friends, never a real peer.
         ReadUint32(n, "daemon.daemon_uid", 0, 4294967294, &daemon.daemon_uid, problems);
       }},
      {"log_level",
       [&](const toml::node& n) {
         ReadChoice<LogLevel>(n, "daemon.log_level", kLogLevels, &daemon.log_level, problems);
       }},
      {"default_action",
       [&](const toml::node& n) {
         ReadChoice<Action>(n, "daemon.default_action", kDefaultActions, &daemon.default_action,
                            problems);
       }},
      {"rules_dir",
       [&](const toml::node& n) {
         ReadAbsolutePath(n, "daemon.rules_dir", &daemon.rules_dir, problems);
       }},
      {"allow_exe", [&](const toml::node& n) { ReadAllowExe(n, &daemon.allow_exe, problems); }},
  };
  FilterSettings& filter = config.filter;
  const Field filter_fields[] = {
      {"question_deadline_ms",
       [&](const toml::node& n) {
         ReadUint32(n, "filter.question_deadline_ms", kMinQuestionDeadlineMs,
                    kMaxQuestionDeadlineMs, &filter.question_deadline_ms, problems);
       }},
      {"fallback",
       [&](const toml::node& n) {
         ReadChoice<FallbackPolicy>(n, "filter.fallback", kFallbacks, &filter.fallback, problems);
       }},
      {"max_pending_flows",
       [&](const toml::node& n) {
         ReadUint32(n, "filter.max_pending_flows", 1, kMaxPendingFlowsLimit,
                    &filter.max_pending_flows, problems);
       }},
      {"queues", [&](const toml::node& n) { ReadQueues(n, &filter.queues, problems); }},
      {"inbound",
       [&](const toml::node& n) { ReadBool(n, "filter.inbound", &filter.inbound, problems); }},
      {"inspect_max_bytes",
       [&](const toml::node& n) {
         ReadUint32(n, "filter.inspect_max_bytes", 1, kMaxInspectBytes, &filter.inspect_max_bytes,
                    problems);
       }},
  };
  const Field root_fields[] = {
      {"tollgate", Section("tollgate", problems,
                           [&](const toml::table& t) {
                             ReadFields(t, "tollgate.", tollgate_fields, problems);
                           })},
      {"daemon",
       Section("daemon", problems,
               [&](const toml::table& t) { ReadFields(t, "daemon.", daemon_fields, problems); })},
      {"filter",
       Section("filter", problems,
               [&](const toml::table& t) { ReadFields(t, "filter.", filter_fields, problems); })},
  };
  ReadFields(root, "", root_fields, problems);
  if (problems.any()) return Unexpected(problems.ToError());

  if (!runtime_dir_set) config.tollgate.runtime_dir = "/run/" + config.tollgate.group;
  return config;
}

Expected<Config> LoadConfig(const std::string& path) {
  auto text = ReadSmallFile(path, kMaxConfigFileBytes);
  if (!text) return Unexpected(text.error());
  return ParseConfig(*text, path);
}

Expected<Config> LoadConfigOrDefaults(const std::string& path, bool path_was_explicit) {
  auto config = LoadConfig(path);
  if (!config && config.error().code == ErrorCode::kNotFound && !path_was_explicit) {
    return Config{};
  }
  return config;
}

}  // namespace tollgate
