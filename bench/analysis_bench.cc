// ./scripts/bench analysis: the analysis engine's costs, each measured against a floor in the same
// run. Sections, each adding fields to one JSON object:
//   blocklist  blocklist_entries, blocklist_load_s (read + parse + build of the list file;
//              blocklist_load_cpu_s is the CPU time of the same, which a busy machine inflates
//              less), blocklist_rss_mb (resident memory the loaded list adds, file buffer freed),
//              blocklist_lookup_p50_ns/p99_ns (Match over a mix of exact hits, subdomain hits and
//              misses of 2-6 labels), floor_hash_lookup_p50_ns/p99_ns (std::unordered_set
//              <std::string>::find of the same hosts as full names, no suffix walk).
//   verdict    verdict_p50_us/p99_us: Engine::Decide for a flow whose address the DNS map knows,
//              against 10,000 rules (4,500 exact hosts, 3,000 *.suffix hosts, 1,200 single
//              addresses, 1,000 networks, 250 port rules, 10 regex hosts, 40 exe rules) plus one
//              rule on the blocklist above; flows are a mix of exact-host hits, suffix hits, list
//              hits, address hits and misses that fall to the default. floor_verdict_p50_us is
//              the same flows against one host rule that never matches (name lookup, facts,
//              default verdict), so verdict_p50_us / floor is what 10,000 rules cost.
// Lookups are timed 1000 per clock read, verdicts 100; percentiles are over those batches.
// Usage: analysis-bench BLOCKLIST_PATH (bench/make_blocklist.py writes one).
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "analysis/blocklist.h"
#include "analysis/engine.h"
#include "analysis/wire_for_tests.h"
#include "common/clock.h"

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

// --- verdicts ---

constexpr size_t kVerdictBatch = 100;
constexpr size_t kVerdictFlows = 20'000;

std::string Ipv4(uint32_t n) {
  return std::to_string(n >> 24) + "." + std::to_string((n >> 16) & 255) + "." +
         std::to_string((n >> 8) & 255) + "." + std::to_string(n & 255);
}

std::string Rule(size_t i, const char* action, const std::string& condition, int priority = 0) {
  return "[[rule]]\nname = \"r" + std::to_string(i) + "\"\naction = \"" + action +
         "\"\npriority = " + std::to_string(priority) + "\n" + condition + "\n";
}

struct VerdictSetup {
  std::string rules;
  std::vector<std::pair<std::string, std::string>> dns;  // name -> address the engine learns
  std::vector<FlowQuestion> flows;
};

VerdictSetup MakeVerdictSetup(const std::vector<std::string>& listed, std::mt19937_64& rng) {
  VerdictSetup setup;
  std::vector<std::string> exact, suffix;
  size_t n = 0;
  for (size_t i = 0; i < 4500; ++i, ++n) {
    exact.push_back(RandomLabel(rng, 4, 12) + ".exact" + std::to_string(i) + ".com");
    setup.rules += Rule(n, i % 2 ? "deny" : "allow", "host = \"" + exact.back() + "\"", i % 5);
  }
  for (size_t i = 0; i < 3000; ++i, ++n) {
    suffix.push_back(RandomLabel(rng, 4, 12) + ".net");
    setup.rules += Rule(n, "deny", "host = \"*." + suffix.back() + "\"", i % 5);
  }
  for (size_t i = 0; i < 1200; ++i, ++n) {
    setup.rules += Rule(n, "reject", "ip = \"" + Ipv4(0x0A000000u + i * 7) + "\"", i % 5);
  }
  for (size_t i = 0; i < 1000; ++i, ++n) {
    const int len = 16 + static_cast<int>(i % 3) * 4;  // /16, /20, /24
    const uint32_t base =
        (0xAC100000u + static_cast<uint32_t>(i) * 4096u) & ~((1u << (32 - len)) - 1u);
    setup.rules +=
        Rule(n, "deny", "cidr = \"" + Ipv4(base) + "/" + std::to_string(len) + "\"", i % 5);
  }
  for (size_t i = 0; i < 250; ++i, ++n) {
    setup.rules +=
        Rule(n, "deny", "protocol = \"tcp\"\nport = " + std::to_string(20000 + i), i % 5);
  }
  for (size_t i = 0; i < 10; ++i, ++n) {
    setup.rules +=
        Rule(n, "deny", "host = \"/ads[0-9]+\\\\.tracker" + std::to_string(i) + "\\\\.example/\"");
  }
  for (size_t i = 0; i < 40; ++i, ++n) {
    setup.rules += Rule(
        n, "reject",
        "exe = \"/opt/app" + std::to_string(i) + "/bin/*\"\nport = " + std::to_string(30000 + i));
  }
  setup.rules += Rule(n++, "reject", "list = \"bench\"", 1);

  // Flows: every remote address has a name the engine learnt from DNS.
  uint32_t next_address = 0xC6120000u;  // 198.18.0.0/15, benchmarking space
  auto flow_to = [&](const std::string& name, std::optional<std::string> address = {}) {
    std::string ip = address ? *address : Ipv4(next_address++);
    setup.dns.emplace_back(name, ip);
    FlowQuestion q;
    q.tuple.protocol = ipproto::kTcp;
    q.tuple.src = IpAddress::V4(192, 0, 2, 1);
    q.tuple.dst = *IpAddress::Parse(ip);
    q.tuple.src_port = static_cast<uint16_t>(32768 + rng() % 28000);
    q.tuple.dst_port = 443;
    q.uid = 1000;
    setup.flows.push_back(q);
  };
  for (size_t i = 0; i < kVerdictFlows; ++i) {
    switch (i % 6) {
      case 0:
        flow_to(exact[rng() % exact.size()]);
        break;
      case 1:
        flow_to("www." + suffix[rng() % suffix.size()]);
        break;
      case 2:
        flow_to("cdn." + listed[rng() % listed.size()]);
        break;
      case 3:
        flow_to("host" + std::to_string(i) + ".example.org",
                Ipv4(0x0A000000u + (rng() % 1200) * 7));
        break;
      case 4:
        flow_to("svc" + std::to_string(i) + ".example.org",
                Ipv4(0xAC100000u + rng() % (1000 * 4096)));
        break;
      default:  // nothing matches: every candidate is tried, then the default
        flow_to(RandomLabel(rng, 5, 10) + "." + RandomLabel(rng, 5, 10) + ".org");
    }
  }
  return setup;
}

std::vector<double> TimeVerdicts(analysis::Engine& engine, const std::vector<FlowQuestion>& flows,
                                 size_t& sink) {
  std::vector<double> per_verdict;
  for (int round = 0; round < kRounds; ++round) {
    for (size_t b = 0; b + kVerdictBatch <= flows.size(); b += kVerdictBatch) {
      const auto t0 = WallClock::now();
      for (size_t i = b; i < b + kVerdictBatch; ++i) {
        sink += static_cast<size_t>(engine.Decide(flows[i]).action);
      }
      const auto t1 = WallClock::now();
      per_verdict.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() /
                            kVerdictBatch);
    }
  }
  return per_verdict;
}

void VerdictSection(const std::string& path, JsonFields& out) {
  auto list = analysis::Blocklist::LoadFile(path, "bench");
  if (!list) Die(list.error().message);
  std::map<std::string, std::shared_ptr<const analysis::Blocklist>> lists{{"bench", *list}};
  std::mt19937_64 rng(9);
  std::vector<std::string> listed = NamesInFile(path);
  VerdictSetup setup = MakeVerdictSetup(listed, rng);
  listed = {};

  analysis::RuleLoadContext context;
  context.blocklists = &lists;
  auto rules = analysis::ParseRuleFile(setup.rules, "bench-rules.toml", context);
  if (!rules) Die(rules.error().message);
  const size_t rule_count = rules->size();
  auto table = analysis::RuleTable::Build(std::move(*rules), Action::kAllow);
  if (!table) Die(table.error().message);

  FakeClock clock;
  analysis::EngineOptions options;
  options.names.max_entries = 2 * kVerdictFlows;
  analysis::Engine engine(*table, nullptr, nullptr, clock, options);
  // The floor: one rule that needs the name and never matches, so every flow still pays for the
  // name lookup, the facts and a verdict with its reason, but not for 10,000 rules.
  auto floor_rules =
      analysis::ParseRuleFile(Rule(0, "deny", "host = \"floor.invalid\""), "floor.toml");
  if (!floor_rules) Die(floor_rules.error().message);
  auto floor_table = analysis::RuleTable::Build(std::move(*floor_rules), Action::kAllow);
  if (!floor_table) Die(floor_table.error().message);
  analysis::Engine floor(*floor_table, nullptr, nullptr, clock, options);
  for (const auto& [name, address] : setup.dns) {
    auto reply = analysis::testing::DnsReplyBytes(name, {{name, address, 3600, false}});
    engine.ObserveDns(reply.data(), reply.size());
    floor.ObserveDns(reply.data(), reply.size());
  }
  std::shuffle(setup.flows.begin(), setup.flows.end(), rng);

  size_t counts[4] = {};
  for (const FlowQuestion& q : setup.flows) ++counts[static_cast<size_t>(engine.Decide(q).action)];
  size_t sink = 0;
  const auto verdicts = TimeVerdicts(engine, setup.flows, sink);
  const auto floor_verdicts = TimeVerdicts(floor, setup.flows, sink);

  out.Add("verdict_rules", rule_count);
  out.Add("verdict_flows", setup.flows.size());
  out.Add("verdict_allow", counts[0]);
  out.Add("verdict_deny", counts[1]);
  out.Add("verdict_reject", counts[2]);
  out.Add("verdict_inspect", counts[3]);
  out.Add("verdict_p50_us", Percentile(verdicts, 0.50));
  out.Add("verdict_p99_us", Percentile(verdicts, 0.99));
  out.Add("floor_verdict_p50_us", Percentile(floor_verdicts, 0.50));
  out.Add("floor_verdict_p99_us", Percentile(floor_verdicts, 0.99));
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
  VerdictSection(argv[1], out);
  out.Print();
  return 0;
}
