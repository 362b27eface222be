// The golden replay: recorded flows with the verdict and reason a reference rule set must give,
// replayed through the real engine (real DNS parser, name map, ClientHello and Host readers, rule
// table, blocklists). Each tests/data/golden/NAME.flows runs against NAME.rules.toml beside it
// and the blocklists named in its `list` lines. The format (one command per line, `#` comments):
//
//   list NAME FILE                       blocklist FILE (relative to the data directory)
//   wall 2026-12-01T10:00:00Z            set the wall clock (`expires`)
//   advance SECONDS                      move both clocks forward
//   dns QUESTION | OWNER TYPE VALUE TTL | ...   a DNS reply the filter saw (TYPE A, AAAA, CNAME)
//   flow PROTO [DST]:PORT|DST:PORT [in] [uid=N] [sni=NAME|sni=] [http=NAME] [exe=PATH]
//        [unit=UNIT] [gone]               a question; sni=/http= give the payload the filter sent
//                                         after inspection (sni= alone: a ClientHello without
//                                         SNI); exe/unit/gone describe the process behind it
//   expect ACTION REASON                 the verdict of the flow above
//
// A difference is reported as FILE:LINE with both verdicts, so a changed reason is one edit away.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "analysis/blocklist.h"
#include "analysis/engine.h"
#include "analysis/wire_for_tests.h"

namespace tollgate::analysis {
namespace {

namespace fs = std::filesystem;

class ScriptedProcesses final : public ProcessSource {
 public:
  ProcessLookup next{Attribution::kNotFound, {}, "no process given"};
  ProcessLookup Find(const FlowQuestion&) override { return next; }
};

std::vector<std::string> Split(const std::string& text, char by) {
  std::vector<std::string> out;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, by)) {
    size_t a = part.find_first_not_of(' ');
    size_t b = part.find_last_not_of(' ');
    out.push_back(a == std::string::npos ? "" : part.substr(a, b - a + 1));
  }
  return out;
}

std::optional<WallTime> ParseWall(const std::string& text) {
  // YYYY-MM-DDTHH:MM:SSZ only: the replay needs no more.
  int y, mo, d, h, mi, s;
  char z = 0;
  if (std::sscanf(text.c_str(), "%d-%d-%dT%d:%d:%d%c", &y, &mo, &d, &h, &mi, &s, &z) != 7 ||
      z != 'Z') {
    return std::nullopt;
  }
  using namespace std::chrono;
  return time_point_cast<WallTime::duration>(sys_days{year{y} / mo / d} + hours{h} + minutes{mi} +
                                             seconds{s});
}

class GoldenReplay {
 public:
  GoldenReplay(const fs::path& flows) : flows_(flows), dir_(flows.parent_path()) {}

  void Run() {
    std::ifstream in(flows_);
    ASSERT_TRUE(in) << "cannot read " << flows_;
    std::string line;
    std::vector<std::string> lines;
    while (std::getline(in, line)) lines.push_back(line);
    // Lists first: the rules refer to them.
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].rfind("list ", 0) == 0) LoadList(lines[i], i + 1);
    }
    LoadRules();
    if (!engine_) return;
    for (size_t i = 0; i < lines.size(); ++i) Step(lines[i], i + 1);
    EXPECT_GT(checked_, 0) << flows_ << " checks nothing";
  }

 private:
  std::string At(size_t line) const { return flows_.string() + ":" + std::to_string(line); }

  void LoadList(const std::string& line, size_t n) {
    auto words = Split(line, ' ');
    ASSERT_EQ(words.size(), 3u) << At(n) << ": list NAME FILE";
    auto list = Blocklist::LoadFile((dir_ / words[2]).string(), words[1]);
    ASSERT_TRUE(list) << At(n) << ": " << list.error().message;
    lists_[words[1]] = *list;
  }

  void LoadRules() {
    fs::path rules = flows_;
    rules.replace_extension(".rules.toml");
    std::ifstream in(rules);
    ASSERT_TRUE(in) << "no rule set " << rules << " for " << flows_;
    std::stringstream text;
    text << in.rdbuf();
    RuleLoadContext context;
    context.blocklists = &lists_;
    context.lookup_user = [](const std::string& name) -> std::optional<uint32_t> {
      if (name == "alice") return 1000;
      return std::nullopt;
    };
    auto parsed = ParseRuleFile(text.str(), rules.string(), context);
    ASSERT_TRUE(parsed) << parsed.error().message;
    auto table = RuleTable::Build(std::move(*parsed), Action::kAllow);
    ASSERT_TRUE(table) << table.error().message;
    EngineOptions options;
    options.wall_clock = [this] { return wall_; };
    engine_ = std::make_unique<Engine>(*table, &processes_, nullptr, clock_, options);
  }

  void Step(const std::string& raw, size_t n) {
    std::string line = raw.substr(0, raw.find('#'));
    if (line.find_first_not_of(' ') == std::string::npos) return;
    std::istringstream words(line);
    std::string command;
    words >> command;
    if (command == "list") return;
    if (command == "wall") {
      std::string when;
      words >> when;
      auto t = ParseWall(when);
      ASSERT_TRUE(t) << At(n) << ": wall YYYY-MM-DDTHH:MM:SSZ";
      wall_ = *t;
    } else if (command == "advance") {
      int seconds = 0;
      words >> seconds;
      clock_.Advance(std::chrono::seconds(seconds));
      wall_ += std::chrono::seconds(seconds);
    } else if (command == "dns") {
      Dns(line.substr(4), n);
    } else if (command == "flow") {
      Flow(words, n);
    } else if (command == "expect") {
      Expect(line.substr(7), n);
    } else {
      FAIL() << At(n) << ": unknown command " << command;
    }
  }

  void Dns(const std::string& rest, size_t n) {
    auto parts = Split(rest, '|');
    ASSERT_GE(parts.size(), 1u);
    std::vector<testing::AnswerSpec> answers;
    for (size_t i = 1; i < parts.size(); ++i) {
      auto f = Split(parts[i], ' ');
      ASSERT_EQ(f.size(), 4u) << At(n) << ": OWNER TYPE VALUE TTL";
      answers.push_back({f[0], f[2], static_cast<uint32_t>(std::stoul(f[3])), f[1] == "CNAME"});
    }
    auto bytes = testing::DnsReplyBytes(parts[0], answers);
    engine_->ObserveDns(bytes.data(), bytes.size());
  }

  void Flow(std::istringstream& words, size_t n) {
    std::string proto, target, option;
    words >> proto >> target;
    FlowQuestion q;
    q.id = ++next_id_;
    q.tuple.protocol = proto == "tcp" ? ipproto::kTcp : proto == "udp" ? ipproto::kUdp : 0;
    ASSERT_NE(q.tuple.protocol, 0) << At(n) << ": tcp or udp";
    size_t colon = target.rfind(':');
    std::string host = target.substr(0, colon);
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    auto dst = IpAddress::Parse(host);
    ASSERT_TRUE(dst) << At(n) << ": bad address " << host;
    q.tuple.dst = *dst;
    q.tuple.src = *IpAddress::Parse(dst->family == 4 ? "192.0.2.1" : "2001:db8::1");
    q.tuple.src_port = 40000;
    q.tuple.dst_port = static_cast<uint16_t>(std::stoul(target.substr(colon + 1)));
    processes_.next = {Attribution::kNotFound, {}, "no process given"};
    while (words >> option) {
      std::string key = option.substr(0, option.find('='));
      std::string value =
          option.find('=') == std::string::npos ? "" : option.substr(key.size() + 1);
      if (key == "in") {
        q.direction = Direction::kInbound;
        std::swap(q.tuple.src, q.tuple.dst);
      } else if (key == "uid") {
        q.uid = static_cast<uint32_t>(std::stoul(value));
      } else if (key == "sni") {
        q.payload = testing::ClientHelloBytes(value);
      } else if (key == "http") {
        std::string request = "GET / HTTP/1.1\r\nHost: " + value + "\r\n\r\n";
        q.payload.assign(request.begin(), request.end());
      } else if (key == "exe" || key == "unit") {
        processes_.next.state = Attribution::kFound;
        processes_.next.process.pid = 4242;
        (key == "exe" ? processes_.next.process.exe : processes_.next.process.unit) = value;
      } else if (key == "gone") {
        processes_.next = {Attribution::kGone, {}, "exited"};
      } else {
        FAIL() << At(n) << ": unknown flow option " << option;
      }
    }
    last_ = engine_->Decide(q);
    have_last_ = true;
  }

  void Expect(const std::string& rest, size_t n) {
    ASSERT_TRUE(have_last_) << At(n) << ": expect without a flow";
    std::string action = rest.substr(0, rest.find(' '));
    std::string reason = rest.substr(action.size() + 1);
    ++checked_;
    EXPECT_EQ(ActionName(last_.action), action) << At(n) << "\n  reason: " << last_.reason;
    EXPECT_EQ(last_.reason, reason) << At(n);
    have_last_ = false;
  }

  fs::path flows_;
  fs::path dir_;
  std::map<std::string, std::shared_ptr<const Blocklist>> lists_;
  FakeClock clock_;
  WallTime wall_ = std::chrono::system_clock::now();
  ScriptedProcesses processes_;
  std::unique_ptr<Engine> engine_;
  uint64_t next_id_ = 0;
  Verdict last_;
  bool have_last_ = false;
  int checked_ = 0;
};

TEST(GoldenReplayTest, EveryRecordedFlowGetsItsVerdict) {
  int files = 0;
  for (const auto& entry : fs::directory_iterator(TOLLGATE_GOLDEN_DIR)) {
    if (entry.path().extension() != ".flows") continue;
    ++files;
    SCOPED_TRACE(entry.path().string());
    GoldenReplay(entry.path()).Run();
  }
  EXPECT_GE(files, 1) << "no *.flows in " << TOLLGATE_GOLDEN_DIR;
}

}  // namespace
}  // namespace tollgate::analysis
