#include "common/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace tollgate {
namespace {

constexpr char kSha[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// The error text of parsing `text` as "t.toml"; fails the test if it parses.
std::string ErrorOf(const std::string& text) {
  auto config = ParseConfig(text, "t.toml");
  EXPECT_FALSE(config.has_value()) << "parsed:\n" << text;
  return config ? std::string() : config.error().message;
}

TEST(ParseConfigTest, EmptyTextGivesEveryDefault) {
  auto config = ParseConfig("", "t.toml");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->source, "t.toml");
  EXPECT_EQ(config->tollgate.group, "tollgate");
  EXPECT_EQ(config->tollgate.runtime_dir, "/run/tollgate");
  EXPECT_EQ(config->daemon.idle_exit_seconds, 0u);
  EXPECT_EQ(config->daemon.daemon_uid, 0u);
  EXPECT_EQ(config->daemon.log_level, LogLevel::kInfo);
  EXPECT_EQ(config->daemon.default_action, Action::kAllow);
  EXPECT_EQ(config->daemon.rules_dir, "/etc/tollgate/rules.d");
  EXPECT_TRUE(config->daemon.allow_exe.empty());
  EXPECT_EQ(config->filter.question_deadline_ms, 200u);
  EXPECT_EQ(config->filter.fallback, FallbackPolicy::kFailOpen);
  EXPECT_EQ(config->filter.max_pending_flows, 65536u);
  EXPECT_EQ(config->filter.queues, (QueueRange{0, 0}));
  EXPECT_FALSE(config->filter.inbound);
  EXPECT_EQ(config->filter.inspect_max_bytes, 2048u);
  EXPECT_TRUE(config->filter.reuse_verdicts);
  EXPECT_EQ(config->filter.reply_spin_us, 0u);
}

TEST(ParseConfigTest, EmptySectionsGiveDefaults) {
  auto config = ParseConfig("[tollgate]\n[daemon]\n[filter]\n", "t.toml");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->tollgate.runtime_dir, "/run/tollgate");
  EXPECT_EQ(config->filter.question_deadline_ms, 200u);
}

TEST(ParseConfigTest, ReadsEveryField) {
  const std::string text = std::string(R"([tollgate]
group = "fw"
runtime_dir = "/run/fw-test"

[daemon]
idle_exit_seconds = 30
daemon_uid = 998
log_level = "debug"
default_action = "reject"
rules_dir = "/srv/rules"

[[daemon.allow_exe]]
path = "/usr/bin/tollgate-filter"
sha256 = ")") + kSha + R"("

[[daemon.allow_exe]]
path = "/usr/bin/tollgate"
sha256 = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789"

[filter]
question_deadline_ms = 500
fallback = "fail_closed"
max_pending_flows = 1000
queues = "2-5"
inbound = true
inspect_max_bytes = 4096
reuse_verdicts = false
)";
  auto config = ParseConfig(text, "t.toml");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->tollgate.group, "fw");
  EXPECT_EQ(config->tollgate.runtime_dir, "/run/fw-test");
  EXPECT_EQ(config->daemon.idle_exit_seconds, 30u);
  EXPECT_EQ(config->daemon.daemon_uid, 998u);
  EXPECT_EQ(config->daemon.log_level, LogLevel::kDebug);
  EXPECT_EQ(config->daemon.default_action, Action::kReject);
  EXPECT_EQ(config->daemon.rules_dir, "/srv/rules");
  ASSERT_EQ(config->daemon.allow_exe.size(), 2u);
  EXPECT_EQ(config->daemon.allow_exe[0].path, "/usr/bin/tollgate-filter");
  EXPECT_EQ(config->daemon.allow_exe[0].sha256, kSha);
  EXPECT_EQ(config->daemon.allow_exe[1].path, "/usr/bin/tollgate");
  // Stored lowercase so the daemon compares with its own lowercase digest.
  EXPECT_EQ(config->daemon.allow_exe[1].sha256,
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
  EXPECT_EQ(config->filter.question_deadline_ms, 500u);
  EXPECT_EQ(config->filter.fallback, FallbackPolicy::kFailClosed);
  EXPECT_EQ(config->filter.max_pending_flows, 1000u);
  EXPECT_EQ(config->filter.queues, (QueueRange{2, 5}));
  EXPECT_TRUE(config->filter.inbound);
  EXPECT_FALSE(config->filter.reuse_verdicts) << "the default is true";
  EXPECT_EQ(config->filter.inspect_max_bytes, 4096u);
}

TEST(ParseConfigTest, ControlAndFlowLogSettings) {
  auto defaults = ParseConfig("", "t.toml");
  ASSERT_TRUE(defaults) << defaults.error().message;
  EXPECT_EQ(defaults->tollgate.admin_group, "tollgate-admin");
  EXPECT_EQ(defaults->daemon.flow_log, "/var/lib/tollgate/flows.db");
  EXPECT_EQ(defaults->daemon.flow_log_max_age_days, 30u);
  EXPECT_EQ(defaults->daemon.flow_log_max_mb, 256u);

  auto set = ParseConfig(
      "[tollgate]\nadmin_group = \"wheel\"\n[daemon]\nflow_log = \"/srv/f.db\"\n"
      "flow_log_max_age_days = 0\nflow_log_max_mb = 1024\n",
      "t.toml");
  ASSERT_TRUE(set) << set.error().message;
  EXPECT_EQ(set->tollgate.admin_group, "wheel");
  EXPECT_EQ(set->daemon.flow_log, "/srv/f.db");
  EXPECT_EQ(set->daemon.flow_log_max_age_days, 0u);
  EXPECT_EQ(set->daemon.flow_log_max_mb, 1024u);

  auto off = ParseConfig("[daemon]\nflow_log = \"\"\n", "t.toml");
  ASSERT_TRUE(off) << off.error().message;
  EXPECT_EQ(off->daemon.flow_log, "");

  EXPECT_EQ(ErrorOf("[daemon]\nflow_log = \"flows.db\"\n"),
            "t.toml:2:12: daemon.flow_log must be an absolute path, got \"flows.db\"");
  EXPECT_EQ(ErrorOf("[daemon]\nflow_log_max_mb = -1\n"),
            "t.toml:2:19: daemon.flow_log_max_mb must be an integer from 0 to 1048576, got -1");
  EXPECT_EQ(ErrorOf("[daemon]\nflow_log_max_age_days = 4000\n"),
            "t.toml:2:25: daemon.flow_log_max_age_days must be an integer from 0 to 3650, got "
            "4000");
  EXPECT_NE(ErrorOf("[tollgate]\nadmin_group = \"../x\"\n").find("tollgate.admin_group must be"),
            std::string::npos);
}

TEST(ParseConfigTest, RuntimeDirFollowsGroupUnlessSet) {
  auto derived = ParseConfig("[tollgate]\ngroup = \"netguard\"\n", "t.toml");
  ASSERT_TRUE(derived) << derived.error().message;
  EXPECT_EQ(derived->tollgate.runtime_dir, "/run/netguard");

  auto explicit_dir =
      ParseConfig("[tollgate]\ngroup = \"netguard\"\nruntime_dir = \"/tmp/x\"\n", "t.toml");
  ASSERT_TRUE(explicit_dir) << explicit_dir.error().message;
  EXPECT_EQ(explicit_dir->tollgate.runtime_dir, "/tmp/x");
}

TEST(ParseConfigTest, EveryLogLevelAndAction) {
  const std::pair<const char*, LogLevel> levels[] = {{"error", LogLevel::kError},
                                                     {"warning", LogLevel::kWarning},
                                                     {"notice", LogLevel::kNotice},
                                                     {"info", LogLevel::kInfo},
                                                     {"debug", LogLevel::kDebug}};
  for (const auto& [text, level] : levels) {
    auto config = ParseConfig(std::string("[daemon]\nlog_level = \"") + text + "\"\n", "t.toml");
    ASSERT_TRUE(config) << config.error().message;
    EXPECT_EQ(config->daemon.log_level, level) << text;
  }
  const std::pair<const char*, Action> actions[] = {
      {"allow", Action::kAllow}, {"deny", Action::kDeny}, {"reject", Action::kReject}};
  for (const auto& [text, action] : actions) {
    auto config =
        ParseConfig(std::string("[daemon]\ndefault_action = \"") + text + "\"\n", "t.toml");
    ASSERT_TRUE(config) << config.error().message;
    EXPECT_EQ(config->daemon.default_action, action) << text;
  }
}

TEST(ParseConfigTest, QueuesAcceptNumberStringAndRange) {
  const std::pair<const char*, QueueRange> cases[] = {{"3", {3, 3}},
                                                      {"\"7\"", {7, 7}},
                                                      {"\"0-1\"", {0, 1}},
                                                      {"\"65535\"", {65535, 65535}},
                                                      {"\"4-4\"", {4, 4}}};
  for (const auto& [value, range] : cases) {
    auto config = ParseConfig(std::string("[filter]\nqueues = ") + value + "\n", "t.toml");
    ASSERT_TRUE(config) << value << ": " << config.error().message;
    EXPECT_EQ(config->filter.queues, range) << value;
  }
}

TEST(ParseConfigTest, RangeBoundariesAreInclusive) {
  auto low = ParseConfig("[filter]\nquestion_deadline_ms = 1\ninspect_max_bytes = 1\n", "t.toml");
  ASSERT_TRUE(low) << low.error().message;
  EXPECT_EQ(low->filter.question_deadline_ms, 1u);
  auto high = ParseConfig(
      "[filter]\nquestion_deadline_ms = 60000\nmax_pending_flows = 4194304\n"
      "[daemon]\ndaemon_uid = 4294967294\nidle_exit_seconds = 86400\n",
      "t.toml");
  ASSERT_TRUE(high) << high.error().message;
  EXPECT_EQ(high->filter.question_deadline_ms, 60000u);
  EXPECT_EQ(high->daemon.daemon_uid, 4294967294u);
}

TEST(ParseConfigTest, EmptyAllowExeArrayMeansNoAllowlist) {
  auto config = ParseConfig("[daemon]\nallow_exe = []\n", "t.toml");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_TRUE(config->daemon.allow_exe.empty());
}

// --- errors: each says file:line:col, what was expected and what was there ---

TEST(ParseConfigErrorTest, BadChoiceNamesTheChoices) {
  EXPECT_EQ(ErrorOf("# settings\n\n[filter]\nfallback = \"open\"\n"),
            "t.toml:4:12: filter.fallback must be \"fail_open\" or \"fail_closed\", got \"open\"");
  EXPECT_EQ(ErrorOf("[daemon]\ndefault_action = \"inspect\"\n"),
            "t.toml:2:18: daemon.default_action must be \"allow\", \"deny\" or \"reject\", got "
            "\"inspect\"");
  EXPECT_EQ(ErrorOf("[daemon]\nlog_level = \"verbose\"\n"),
            "t.toml:2:13: daemon.log_level must be \"error\", \"warning\", \"notice\", \"info\" or "
            "\"debug\", got \"verbose\"");
}

TEST(ParseConfigErrorTest, UnknownKeySuggestsTheNearMiss) {
  EXPECT_EQ(ErrorOf("[filter]\nfallbak = \"fail_closed\"\n"),
            "t.toml:2:1: unknown key \"fallbak\" in [filter]; did you mean \"fallback\"?");
}

TEST(ParseConfigErrorTest, UnknownKeyListsTheKnownKeys) {
  EXPECT_EQ(ErrorOf("[tollgate]\n  colour = 1\n"),
            "t.toml:2:3: unknown key \"colour\" in [tollgate]; expected one of: group, "
            "runtime_dir, admin_group");
}

TEST(ParseConfigErrorTest, UnknownTopLevelKeyAndTable) {
  EXPECT_EQ(ErrorOf("group = \"tollgate\"\n"),
            "t.toml:1:1: unknown key \"group\" at the top level; expected one of: tollgate, "
            "daemon, filter, blocklists");
  EXPECT_EQ(ErrorOf("[filtre]\n"), "t.toml:1:2: unknown table [filtre]; did you mean \"filter\"?");
  EXPECT_EQ(ErrorOf("[filter.extra]\nx = 1\n"),
            "t.toml:1:9: unknown table [filter.extra]; expected one of: question_deadline_ms, "
            "fallback, max_pending_flows, queues, inbound, reuse_verdicts, inspect_max_bytes, "
            "reply_spin_us");
}

TEST(ParseConfigErrorTest, WrongTypes) {
  EXPECT_EQ(ErrorOf("[filter]\nquestion_deadline_ms = \"200\"\n"),
            "t.toml:2:24: filter.question_deadline_ms must be an integer from 1 to 60000, got "
            "\"200\"");
  EXPECT_EQ(ErrorOf("[filter]\nquestion_deadline_ms = 2.5\n"),
            "t.toml:2:24: filter.question_deadline_ms must be an integer from 1 to 60000, got 2.5");
  EXPECT_EQ(ErrorOf("[filter]\ninbound = \"yes\"\n"),
            "t.toml:2:11: filter.inbound must be true or false, got \"yes\"");
  EXPECT_EQ(ErrorOf("filter = 1\n"), "t.toml:1:10: filter must be a table ([filter]), got 1");
  EXPECT_EQ(ErrorOf("[daemon]\nrules_dir = [\"/a\"]\n"),
            "t.toml:2:13: daemon.rules_dir must be an absolute path, got an array");
  EXPECT_EQ(ErrorOf("[daemon.allow_exe]\npath = \"/bin/x\"\n"),
            "t.toml:1:1: daemon.allow_exe must be an array of tables ([[daemon.allow_exe]]), got a "
            "table");
}

TEST(ParseConfigErrorTest, OutOfRange) {
  EXPECT_EQ(ErrorOf("[filter]\nquestion_deadline_ms = 0\n"),
            "t.toml:2:24: filter.question_deadline_ms must be an integer from 1 to 60000, got 0");
  EXPECT_EQ(ErrorOf("[filter]\nquestion_deadline_ms = 60001\n"),
            "t.toml:2:24: filter.question_deadline_ms must be an integer from 1 to 60000, got "
            "60001");
  EXPECT_EQ(ErrorOf("[filter]\nmax_pending_flows = 0\n"),
            "t.toml:2:21: filter.max_pending_flows must be an integer from 1 to 4194304, got 0");
  EXPECT_EQ(ErrorOf("[filter]\ninspect_max_bytes = 65536\n"),
            "t.toml:2:21: filter.inspect_max_bytes must be an integer from 1 to 65535, got 65536");
  EXPECT_EQ(ErrorOf("[daemon]\nidle_exit_seconds = -1\n"),
            "t.toml:2:21: daemon.idle_exit_seconds must be an integer from 0 to 86400, got -1");
  EXPECT_EQ(ErrorOf("[daemon]\ndaemon_uid = 4294967295\n"),
            "t.toml:2:14: daemon.daemon_uid must be an integer from 0 to 4294967294, got "
            "4294967295");
}

TEST(ParseConfigErrorTest, BadQueues) {
  const std::string expected_prefix =
      "filter.queues must be a queue number from 0 to 65535 or a range like \"0-3\" (first <= "
      "last), got ";
  const std::pair<const char*, const char*> cases[] = {{"\"3-1\"", "\"3-1\""},
                                                       {"\"a\"", "\"a\""},
                                                       {"-1", "-1"},
                                                       {"65536", "65536"},
                                                       {"\"0-70000\"", "\"0-70000\""},
                                                       {"\"1-\"", "\"1-\""},
                                                       {"\"-1\"", "\"-1\""},
                                                       {"\" 1\"", "\" 1\""},
                                                       {"true", "true"}};
  for (const auto& [value, shown] : cases) {
    EXPECT_EQ(ErrorOf(std::string("[filter]\nqueues = ") + value + "\n"),
              "t.toml:2:10: " + expected_prefix + shown);
  }
}

TEST(ParseConfigErrorTest, BadGroupAndPaths) {
  EXPECT_EQ(ErrorOf("[tollgate]\ngroup = \"../etc\"\n"),
            "t.toml:2:9: tollgate.group must be a group name (letters, digits, \"_\", \"-\", "
            "\".\"; starting with a letter or \"_\"; at most 32 characters), got \"../etc\"");
  EXPECT_EQ(ErrorOf("[tollgate]\nruntime_dir = \"run/tollgate\"\n"),
            "t.toml:2:15: tollgate.runtime_dir must be an absolute path, got \"run/tollgate\"");
  EXPECT_EQ(ErrorOf("[daemon]\nrules_dir = \"\"\n"),
            "t.toml:2:13: daemon.rules_dir must be an absolute path, got \"\"");
  // An embedded NUL would silently cut the path short in every system call.
  EXPECT_EQ(ErrorOf("[daemon]\nrules_dir = \"/etc\\u0000x\"\n"),
            "t.toml:2:13: daemon.rules_dir must be an absolute path, got \"/etc\\x00x\"");
}

TEST(ParseConfigErrorTest, AllowExeEntries) {
  EXPECT_EQ(ErrorOf("[[daemon.allow_exe]]\npath = \"/bin/x\"\nsha256 = \"abc\"\n"),
            "t.toml:3:10: daemon.allow_exe[0].sha256 must be 64 hex digits (as printed by "
            "sha256sum), got \"abc\"");
  std::string not_hex(64, 'g');
  EXPECT_EQ(ErrorOf("[[daemon.allow_exe]]\npath = \"/bin/x\"\nsha256 = \"" + not_hex + "\"\n"),
            "t.toml:3:10: daemon.allow_exe[0].sha256 must be 64 hex digits (as printed by "
            "sha256sum), got \"" +
                not_hex + "\"");
  EXPECT_EQ(ErrorOf(std::string("[[daemon.allow_exe]]\npath = \"/bin/x\"\nsha256 = \"") + kSha +
                    "\"\n\n[[daemon.allow_exe]]\npath = \"/bin/y\"\n"),
            "t.toml:5:1: daemon.allow_exe[1] is missing sha256 (64 hex digits, as printed by "
            "sha256sum)");
  EXPECT_EQ(ErrorOf(std::string("[[daemon.allow_exe]]\nsha256 = \"") + kSha + "\"\n"),
            "t.toml:1:1: daemon.allow_exe[0] is missing path (the absolute path of the "
            "executable)");
  EXPECT_EQ(ErrorOf(std::string("[[daemon.allow_exe]]\npath = \"/bin/x\"\nsha256 = \"") + kSha +
                    "\"\nhash = \"x\"\n"),
            "t.toml:4:1: unknown key \"hash\" in [daemon.allow_exe]; expected one of: path, "
            "sha256");
}

TEST(ParseConfigErrorTest, ReportsTheEarliestProblemAndCountsTheRest) {
  // toml++ iterates keys alphabetically; the report must still start at the top of the file.
  EXPECT_EQ(ErrorOf("[filter]\nqueues = \"x\"\nfallback = \"open\"\ninbound = 3\n"),
            "t.toml:2:10: filter.queues must be a queue number from 0 to 65535 or a range like "
            "\"0-3\" (first <= last), got \"x\" (and 2 more problems in this file)");
  EXPECT_EQ(ErrorOf("[filter]\ninbound = 3\nfallback = \"open\"\n"),
            "t.toml:2:11: filter.inbound must be true or false, got 3 (and 1 more problem in this "
            "file)");
}

TEST(ParseConfigErrorTest, SyntaxErrorsCarryThePosition) {
  auto config =
      ParseConfig("[filter]\nfallback = \"fail_open\"\nfallback = \"fail_closed\"\n", "t.toml");
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().code, ErrorCode::kMalformed);
  // The description is toml++'s; the position prefix is ours.
  EXPECT_EQ(config.error().message.rfind("t.toml:3:", 0), 0u) << config.error().message;

  auto unterminated = ParseConfig("[filter\n", "t.toml");
  ASSERT_FALSE(unterminated);
  EXPECT_EQ(unterminated.error().code, ErrorCode::kMalformed);
  EXPECT_EQ(unterminated.error().message.rfind("t.toml:1:", 0), 0u) << unterminated.error().message;
}

TEST(ParseConfigErrorTest, HostileTextIsQuotedAndBounded) {
  std::string long_value(200, 'x');
  std::string message = ErrorOf("[filter]\nfallback = \"\\u001b[31m" + long_value + "\"\n");
  EXPECT_EQ(message,
            "t.toml:2:12: filter.fallback must be \"fail_open\" or \"fail_closed\", got "
            "\"\\x1b[31m" +
                std::string(59, 'x') + "\"...");
}

// --- the shipped default file ---

#ifdef TOLLGATE_SOURCE_DIR
// packaging/tollgate.toml documents every default; this keeps it honest. Commented as shipped it
// must parse, and with every "#key = value" line uncommented it must still equal the defaults.
TEST(PackagedConfigTest, ShippedFileStatesTheDefaults) {
  const std::string path = std::string(TOLLGATE_SOURCE_DIR) + "/packaging/tollgate.toml";
  auto as_shipped = LoadConfig(path);
  ASSERT_TRUE(as_shipped) << as_shipped.error().message;

  std::ifstream in(path);
  std::string line;
  std::string uncommented;
  int settings = 0;
  while (std::getline(in, line)) {
    if (line.size() > 1 && line[0] == '#' && line[1] != ' ' && line[1] != '#') {
      line.erase(0, 1);
      ++settings;
    }
    uncommented += line + "\n";
  }
  EXPECT_EQ(settings, 19);  // every setting of Config except the allow_exe and blocklists examples
  auto all_set = ParseConfig(uncommented, "uncommented");
  ASSERT_TRUE(all_set) << all_set.error().message;
  const Config defaults;
  for (const Config* config : {&as_shipped.value(), &all_set.value()}) {
    EXPECT_EQ(config->tollgate.group, defaults.tollgate.group);
    EXPECT_EQ(config->tollgate.runtime_dir, defaults.tollgate.runtime_dir);
    EXPECT_EQ(config->daemon.idle_exit_seconds, defaults.daemon.idle_exit_seconds);
    EXPECT_EQ(config->daemon.daemon_uid, defaults.daemon.daemon_uid);
    EXPECT_EQ(config->daemon.log_level, defaults.daemon.log_level);
    EXPECT_EQ(config->daemon.default_action, defaults.daemon.default_action);
    EXPECT_EQ(config->daemon.rules_dir, defaults.daemon.rules_dir);
    EXPECT_TRUE(config->daemon.allow_exe.empty());
    EXPECT_EQ(config->filter.question_deadline_ms, defaults.filter.question_deadline_ms);
    EXPECT_EQ(config->filter.fallback, defaults.filter.fallback);
    EXPECT_EQ(config->filter.max_pending_flows, defaults.filter.max_pending_flows);
    EXPECT_EQ(config->filter.queues, defaults.filter.queues);
    EXPECT_EQ(config->filter.inbound, defaults.filter.inbound);
    EXPECT_EQ(config->filter.inspect_max_bytes, defaults.filter.inspect_max_bytes);
    EXPECT_EQ(config->filter.reply_spin_us, defaults.filter.reply_spin_us);
    EXPECT_EQ(config->tollgate.admin_group, defaults.tollgate.admin_group);
    EXPECT_EQ(config->daemon.flow_log, defaults.daemon.flow_log);
    EXPECT_EQ(config->daemon.flow_log_max_age_days, defaults.daemon.flow_log_max_age_days);
    EXPECT_EQ(config->daemon.flow_log_max_mb, defaults.daemon.flow_log_max_mb);
    EXPECT_TRUE(config->blocklists.empty());
  }
}
#endif

// --- files ---

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tollgate-config-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(ConfigFileTest, LoadsAFileAndRemembersItsPath) {
  std::string path = Write("tollgate.toml", "[filter]\nfallback = \"fail_closed\"\n");
  auto config = LoadConfig(path);
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->source, path);
  EXPECT_EQ(config->filter.fallback, FallbackPolicy::kFailClosed);
}

TEST_F(ConfigFileTest, ErrorsNameTheFilePath) {
  std::string path = Write("tollgate.toml", "[filter]\nfallback = \"open\"\n");
  auto config = LoadConfig(path);
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().message,
            path + ":2:12: filter.fallback must be \"fail_open\" or \"fail_closed\", got \"open\"");
}

TEST_F(ConfigFileTest, MissingDefaultPathMeansDefaults) {
  auto config = LoadConfigOrDefaults(dir_ + "/absent.toml", /*path_was_explicit=*/false);
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->source, "");
  EXPECT_EQ(config->filter.question_deadline_ms, 200u);
  EXPECT_EQ(config->tollgate.runtime_dir, "/run/tollgate");
}

TEST_F(ConfigFileTest, MissingExplicitPathIsAnError) {
  std::string path = dir_ + "/absent.toml";
  auto config = LoadConfigOrDefaults(path, /*path_was_explicit=*/true);
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(config.error().message,
            "cannot read settings file " + path + ": No such file or directory");
}

TEST_F(ConfigFileTest, BrokenDefaultFileIsStillAnError) {
  std::string path = Write("tollgate.toml", "[filter]\nqueues = \"x\"\n");
  auto config = LoadConfigOrDefaults(path, /*path_was_explicit=*/false);
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(ConfigFileTest, ExistingFileIsReadWhetherExplicitOrNot) {
  std::string path = Write("tollgate.toml", "[daemon]\nidle_exit_seconds = 9\n");
  for (bool explicit_path : {false, true}) {
    auto config = LoadConfigOrDefaults(path, explicit_path);
    ASSERT_TRUE(config) << config.error().message;
    EXPECT_EQ(config->daemon.idle_exit_seconds, 9u);
  }
}

TEST_F(ConfigFileTest, DirectoryAndOversizedFilesAreRefused) {
  auto directory = LoadConfig(dir_);
  ASSERT_FALSE(directory);
  EXPECT_EQ(directory.error().message,
            "cannot read settings file " + dir_ + ": not a regular file");

  std::string path = Write("big.toml", "# " + std::string(kMaxConfigFileBytes, 'x') + "\n");
  auto big = LoadConfig(path);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, ErrorCode::kTooLarge);
}

TEST_F(ConfigFileTest, FifoIsRefusedWithoutBlocking) {
  std::string path = dir_ + "/fifo.toml";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  auto config = LoadConfig(path);
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().message, "cannot read settings file " + path + ": not a regular file");
}

}  // namespace
}  // namespace tollgate

namespace tollgate {
namespace {

TEST(ParseConfigBlocklistsTest, NamesMapToAbsolutePaths) {
  auto config = ParseConfig(
      "[blocklists]\nads = \"/etc/tollgate/lists/ads.txt\"\n\"malware.v2\" = \"/srv/m.txt\"\n",
      "t.toml");
  ASSERT_TRUE(config) << config.error().message;
  ASSERT_EQ(config->blocklists.size(), 2u);
  EXPECT_EQ(config->blocklists.at("ads"), "/etc/tollgate/lists/ads.txt");
  EXPECT_EQ(config->blocklists.at("malware.v2"), "/srv/m.txt");
  EXPECT_TRUE(ParseConfig("", "t.toml")->blocklists.empty());
}

TEST(ParseConfigBlocklistsTest, BadNamesAndPathsAreRefused) {
  auto relative = ParseConfig("[blocklists]\nads = \"lists/ads.txt\"\n", "t.toml");
  ASSERT_FALSE(relative);
  EXPECT_EQ(relative.error().message,
            "t.toml:2:7: blocklists.ads must be an absolute path, got \"lists/ads.txt\"");
  auto bad_name = ParseConfig("[blocklists]\n\"a b\" = \"/x\"\n", "t.toml");
  ASSERT_FALSE(bad_name);
  EXPECT_EQ(bad_name.error().message,
            "t.toml:2:1: blocklist name \"a b\" must be 1 to 64 letters, digits, \"-\", \"_\" or "
            "\".\"");
}

}  // namespace
}  // namespace tollgate
