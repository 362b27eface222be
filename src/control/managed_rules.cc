#include "control/managed_rules.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

namespace tollgate::control {
namespace {

constexpr char kHeader[] =
    "# Rules added with `tollgate rules add` (the control API's AddRule). tollgated rewrites this\n"
    "# file; put hand-written rules in a file of their own.\n";

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// Whether a line opens a [[rule]] table (a trailing comment allowed).
bool IsRuleHeader(std::string_view line) {
  line = Trim(line);
  if (line.substr(0, 2) != "[[") return false;
  size_t end = line.find("]]");
  if (end == std::string_view::npos) return false;
  std::string_view key = Trim(line.substr(2, end - 2));
  std::string_view rest = Trim(line.substr(end + 2));
  return key == "rule" && (rest.empty() || rest.front() == '#');
}

std::optional<std::string> ReadWhole(const std::string& path, int* err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *err = errno;
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

ManagedRules::ManagedRules(std::string rules_dir, std::function<Status()> reload)
    : dir_(std::move(rules_dir)), reload_(std::move(reload)) {}

std::string ManagedRules::path() const { return dir_ + "/" + kManagedRuleFileName; }

bool ManagedRules::IsManaged(std::string_view origin) const {
  const std::string p = path() + ":";
  return origin.substr(0, p.size()) == p;
}

Expected<std::vector<ManagedRules::Block>> ManagedRules::ReadBlocks(
    const analysis::RuleLoadContext& context) const {
  int err = 0;
  std::optional<std::string> text = ReadWhole(path(), &err);
  if (!text) {
    if (err == ENOENT) return Unexpected(ErrorCode::kNotFound, path() + " does not exist");
    return Unexpected(Error::System("read " + path(), err));
  }
  std::vector<Block> blocks(1);
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line)) {
    if (IsRuleHeader(line)) blocks.emplace_back();
    blocks.back().text += line + "\n";
  }
  for (size_t i = 1; i < blocks.size(); ++i) {
    auto rules = analysis::ParseRuleFile(blocks[i].text, path(), context);
    if (!rules || rules->size() != 1) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        path() + " was edited by hand and cannot be split into rules (" +
                            (rules ? "a block is not exactly one rule" : rules.error().message) +
                            "): edit it by hand, or move its rules to a file of your own");
    }
    blocks[i].name = rules->front().name;
  }
  return blocks;
}

std::optional<std::string> ManagedRules::TextOf(std::string_view name,
                                                const analysis::RuleLoadContext& context) const {
  auto blocks = ReadBlocks(context);
  if (!blocks) return std::nullopt;
  for (size_t i = 1; i < blocks->size(); ++i) {
    if ((*blocks)[i].name == name) return std::string(Trim((*blocks)[i].text));
  }
  return std::nullopt;
}

Status ManagedRules::WriteAtomically(const std::string& text) const {
  std::string tmp = dir_ + "/." + kManagedRuleFileName + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return Unexpected(Error::System("create " + tmp, errno));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Unexpected(Error::System("write " + tmp, e));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return Unexpected(Error::System("write " + tmp, e));
  }
  if (::rename(tmp.c_str(), path().c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return Unexpected(Error::System("rename " + tmp + " to " + path(), e));
  }
  return {};
}

Status ManagedRules::Replace(const std::string& text, const std::optional<std::string>& previous) {
  if (Status s = WriteAtomically(text); !s) return s;
  Status loaded = reload_();
  if (loaded) return {};
  // Put the old file back so the disk says what is in force.
  Status restored = previous ? WriteAtomically(*previous)
                             : (::unlink(path().c_str()) == 0
                                    ? Status{}
                                    : Status(Unexpected(Error::System("remove " + path(), errno))));
  if (!restored) {
    return Unexpected(loaded.error().code, loaded.error().message + " (and restoring " + path() +
                                               " failed: " + restored.error().message + ")");
  }
  return loaded;
}

Expected<std::string> ManagedRules::Add(std::string_view toml,
                                        const analysis::RuleLoadContext& context) {
  // The rule alone first, so its mistakes point at the text the caller sent.
  auto rules = analysis::ParseRuleFile(toml, "AddRule", context);
  if (!rules) return Unexpected(rules.error());
  if (rules->size() != 1) {
    return Unexpected(
        ErrorCode::kInvalidArgument,
        "AddRule: expected exactly one [[rule]] table, got " + std::to_string(rules->size()));
  }
  // Exactly one [[rule]] header line as well, so the file can be cut back into rules later.
  size_t headers = 0;
  std::istringstream lines{std::string(toml)};
  for (std::string line; std::getline(lines, line);) headers += IsRuleHeader(line) ? 1 : 0;
  if (headers != 1) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "AddRule: write the rule as one table starting with a line \"[[rule]]\"");
  }
  const std::string name = rules->front().name;

  int err = 0;
  std::optional<std::string> previous = ReadWhole(path(), &err);
  if (!previous && err != ENOENT) return Unexpected(Error::System("read " + path(), err));
  if (previous) {
    auto blocks = ReadBlocks(context);
    if (!blocks) return Unexpected(blocks.error());
  }
  std::string text = previous ? *previous : std::string(kHeader);
  if (!text.empty() && text.back() != '\n') text += "\n";
  text += "\n";
  text += Trim(toml);
  if (text.back() != '\n') text += "\n";
  // The whole new file (duplicate names within it); the reload then checks it with the others.
  auto whole = analysis::ParseRuleFile(text, path(), context);
  if (!whole) return Unexpected(whole.error());
  if (Status s = Replace(text, previous); !s) return Unexpected(s.error());
  return name;
}

Status ManagedRules::Remove(std::string_view name, const analysis::RuleLoadContext& context) {
  auto blocks = ReadBlocks(context);
  if (!blocks) {
    if (blocks.error().code == ErrorCode::kNotFound) {
      return Unexpected(ErrorCode::kNotFound, "no rule \"" + std::string(name) + "\" in " + path());
    }
    return Unexpected(blocks.error());
  }
  std::string previous;
  std::string text;
  bool found = false;
  for (size_t i = 0; i < blocks->size(); ++i) {
    previous += (*blocks)[i].text;
    if (i > 0 && (*blocks)[i].name == name) {
      found = true;
      continue;
    }
    text += (*blocks)[i].text;
  }
  if (!found) {
    return Unexpected(ErrorCode::kNotFound, "no rule \"" + std::string(name) + "\" in " + path());
  }
  return Replace(text, previous);
}

}  // namespace tollgate::control
