// ./scripts/bench analysis: the analysis engine's costs, each measured against a floor in the same
// run. Sections, each adding fields to one JSON object:
//   blocklist  blocklist_entries, blocklist_load_s (read + parse + build of the list file;
//              blocklist_load_cpu_s is the CPU time of the same, which a busy machine inflates
//              less), blocklist_rss_mb (resident memory the loaded list adds, file buffer freed),
//              blocklist_lookup_p50_ns/p99_ns (Match over a mix of exact hits, subdomain hits and
//              misses of 2-6 labels), floor_hash_lookup_p50_ns/p99_ns (std::unordered_set
//              <std::string>::find of the same hosts as full names, no suffix walk).
// Lookups are timed 1000 per clock read; percentiles are over those batches.
// Usage: analysis-bench BLOCKLIST_PATH (bench/make_blocklist.py writes one).
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "analysis/blocklist.h"

namespace {

using namespace tollgate;  // NOLINT: a small tool
using WallClock = std::chrono::steady_clock;

constexpr size_t kBatch = 1000;
constexpr size_t kQueries = 300'000;
constexpr int kRounds = 5;

// The output object; each section appends its fields in order.
class JsonFields {
 public:
  void Add(const std::string& key, double value) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.6g", value);
    fields_.emplace_back(key, buf);
  }
  void Add(const std::string& key, size_t value) {
    fields_.emplace_back(key, std::to_string(value));
  }
  void Print() const {
    std::printf("{");
    for (size_t i = 0; i < fields_.size(); ++i) {
      std::printf("%s\"%s\": %s", i == 0 ? "" : ", ", fields_[i].first.c_str(),
                  fields_[i].second.c_str());
    }
    std::printf("}\n");
  }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "analysis-bench: %s\n", what.c_str());
  std::exit(1);
}

double RssMb() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  size_t resident = 0;
  if (!(statm >> pages >> resident)) Die("cannot read /proc/self/statm");
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) /
         (1024.0 * 1024.0);
}

double ProcessCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
}

// The names the list file holds, read the simple way (last tokens of each non-comment line);
// junk lines are harmless here, they only become misses.
std::vector<std::string> NamesInFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) Die("cannot read " + path);
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    line = line.substr(0, line.find('#'));
    std::istringstream tokens(line);
    std::vector<std::string> words;
    for (std::string w; tokens >> w;) words.push_back(std::move(w));
    for (size_t i = words.size() > 1 ? 1 : 0; i < words.size(); ++i) {
      names.push_back(std::move(words[i]));
    }
  }
  return names;
}

std::string RandomLabel(std::mt19937_64& rng, size_t min_len, size_t max_len) {
  static constexpr std::string_view kAlnum = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::uniform_int_distribution<size_t> len(min_len, max_len);
  std::string label(len(rng), 'a');
  for (char& c : label) c = kAlnum[rng() % kAlnum.size()];
  return label;
}

// A third each: listed names as they are, subdomains of listed names, and unlisted names of 2 to
// 6 labels under common TLDs (which the table must probe label by label and reject).
std::vector<std::string> MakeQueries(const std::vector<std::string>& listed, std::mt19937_64& rng) {
  static constexpr std::string_view kSub[] = {"www", "cdn", "api", "static", "img", "m"};
  static constexpr std::string_view kTld[] = {"com", "net", "org", "io", "de", "co.uk"};
  std::vector<std::string> queries;
  queries.reserve(kQueries);
  for (size_t i = 0; i < kQueries; ++i) {
    const std::string& name = listed[rng() % listed.size()];
    switch (i % 3) {
      case 0:
        queries.push_back(name);
        break;
      case 1:
        queries.push_back(std::string(kSub[rng() % std::size(kSub)]) + "." + name);
        break;
      default: {
        std::string host(kTld[rng() % std::size(kTld)]);
        const size_t labels = 1 + rng() % 5;
        for (size_t l = 0; l < labels; ++l) host = RandomLabel(rng, 2, 14) + "." + host;
        queries.push_back(std::move(host));
      }
    }
  }
  std::shuffle(queries.begin(), queries.end(), rng);
  return queries;
}

// Nanoseconds per call of `lookup` over batches of kBatch queries, all queries kRounds times.
template <typename Lookup>
std::vector<double> TimeBatches(const std::vector<std::string>& queries, Lookup lookup,
                                size_t& sink) {
  std::vector<double> per_lookup;
  per_lookup.reserve(kRounds * queries.size() / kBatch);
  for (int round = 0; round < kRounds; ++round) {
    for (size_t b = 0; b + kBatch <= queries.size(); b += kBatch) {
      const auto t0 = WallClock::now();
      for (size_t i = b; i < b + kBatch; ++i) sink += lookup(queries[i]);
      const auto t1 = WallClock::now();
      per_lookup.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / kBatch);
    }
  }
  return per_lookup;
}

void BlocklistSection(const std::string& path, JsonFields& out) {
  malloc_trim(0);
  const double rss_before = RssMb();
  analysis::BlocklistLoadReport report;
  const double cpu0 = ProcessCpuSeconds();
  const auto t0 = WallClock::now();
  auto loaded = analysis::Blocklist::LoadFile(path, "bench", &report);
  const auto t1 = WallClock::now();
  const double cpu1 = ProcessCpuSeconds();
  if (!loaded) Die(loaded.error().message);
  malloc_trim(0);
  const double rss_after = RssMb();
  const analysis::Blocklist& list = **loaded;
  for (const std::string& p : report.problems) std::fprintf(stderr, "<4>%s\n", p.c_str());

  std::vector<std::string> listed = NamesInFile(path);
  std::mt19937_64 rng(4);
  const std::vector<std::string> queries = MakeQueries(listed, rng);
  const std::unordered_set<std::string> floor_set(listed.begin(), listed.end());
  listed = {};

  size_t sink = 0;
  size_t hits = 0;
  for (const std::string& q : queries) hits += list.Match(q).has_value();
  const auto match = TimeBatches(
      queries, [&](const std::string& q) { return list.Match(q).has_value() ? 1 : 0; }, sink);
  const auto floor = TimeBatches(
      queries, [&](const std::string& q) { return floor_set.find(q) != floor_set.end() ? 1 : 0; },
      sink);
  if (sink == 0) Die("no lookup hit; is the list empty?");

  out.Add("blocklist_entries", list.size());
  out.Add("blocklist_duplicates", report.duplicates);
  out.Add("blocklist_skipped_junk", report.skipped_junk);
  out.Add("blocklist_invalid", report.invalid);
  out.Add("blocklist_load_s", std::chrono::duration<double>(t1 - t0).count());
  out.Add("blocklist_load_cpu_s", cpu1 - cpu0);
  out.Add("blocklist_rss_mb", rss_after - rss_before);
  out.Add("blocklist_lookup_hit_fraction",
          static_cast<double>(hits) / static_cast<double>(queries.size()));
  out.Add("blocklist_lookup_p50_ns", Percentile(match, 0.50));
  out.Add("blocklist_lookup_p99_ns", Percentile(match, 0.99));
  out.Add("floor_hash_lookup_p50_ns", Percentile(floor, 0.50));
  out.Add("floor_hash_lookup_p99_ns", Percentile(floor, 0.99));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: analysis-bench BLOCKLIST_PATH\n");
    return 2;
  }
  JsonFields out;
  BlocklistSection(argv[1], out);
  // Next: the rule engine's verdict against 10,000 rules and this list (verdict_p50_us).
  out.Print();
  return 0;
}
