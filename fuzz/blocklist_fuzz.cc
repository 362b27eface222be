// Fuzzes the blocklist parser and Match: any bytes must parse into a list (the size bound aside)
// whose entries are well-formed and found by Match, with every problem reported against a place,
// and Match must answer for any derived host without crashing or reading outside its input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "analysis/blocklist.h"

namespace {

bool WellFormedEntry(std::string_view name) {
  if (name.empty() || name.size() > 253 || name.front() == '.' || name.back() == '.') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')) {
      return false;
    }
  }
  return name.find("..") == std::string_view::npos;
}

// The entry must be `host` or a parent of it at a label boundary.
bool IsSuffixEntry(std::string_view host, std::string_view entry) {
  if (entry.size() > host.size() || host.substr(host.size() - entry.size()) != entry) return false;
  return entry.size() == host.size() || host[host.size() - entry.size() - 1] == '.';
}

void CheckMatch(const tollgate::analysis::Blocklist& list, std::string_view host) {
  auto m = list.Match(host);
  if (m && (!WellFormedEntry(*m) || !IsSuffixEntry(host, *m))) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tollgate::analysis::Blocklist;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  tollgate::analysis::BlocklistLoadReport report;
  auto parsed = Blocklist::Parse(text, "fuzz", "fuzz.txt", &report);
  if (!parsed) __builtin_trap();  // only the size bound fails, far above any fuzz input
  const Blocklist& list = **parsed;
  if (report.entries != list.size()) __builtin_trap();
  if (report.problems.size() > tollgate::analysis::kBlocklistMaxReportedProblems ||
      report.problems.size() > report.invalid) {
    __builtin_trap();
  }
  for (const std::string& p : report.problems) {
    if (p.rfind("fuzz.txt:", 0) != 0) __builtin_trap();
  }
  // Derived hosts: every whitespace-separated token as written, lowercased without a trailing
  // dot, and with a subdomain and a lookalike prefix in front.
  size_t pos = 0;
  std::string host;
  while (pos < text.size()) {
    while (pos < text.size() &&
           (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\t' || text[pos] == '\r')) {
      ++pos;
    }
    const size_t start = pos;
    while (pos < text.size() && text[pos] != ' ' && text[pos] != '\n' && text[pos] != '\t' &&
           text[pos] != '\r') {
      ++pos;
    }
    if (pos == start) break;
    const std::string_view token = text.substr(start, pos - start);
    CheckMatch(list, token);
    host.assign(token);
    for (char& c : host) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    if (!host.empty() && host.back() == '.') host.pop_back();
    const bool listed_name = WellFormedEntry(host) && list.Match(host).has_value();
    CheckMatch(list, host);
    const std::string sub = "x." + host;
    CheckMatch(list, sub);
    // A listed name's subdomain is always blocked.
    if (listed_name && !list.Match(sub)) __builtin_trap();
    CheckMatch(list, "x" + host);
  }
  CheckMatch(list, "");
  CheckMatch(list, ".");
  CheckMatch(list, text);
  return 0;
}
