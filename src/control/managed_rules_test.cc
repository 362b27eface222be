#include "control/managed_rules.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace tollgate::control {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A temporary rules directory and a "daemon" whose reload loads it, as tollgated's LoadRules does.
class ManagedRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tollgate-managed.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ / "10-base.toml") << "[[rule]]\nname = \"no-telnet\"\naction = \"deny\"\n"
                                            "protocol = \"tcp\"\nport = 23\n";
    ASSERT_TRUE(Reload());
  }
  void TearDown() override { fs::remove_all(dir_); }

  Status Reload() {
    ++reloads_;
    auto table = analysis::LoadRuleFiles(dir_, Action::kAllow, {});
    if (!table) return Unexpected(table.error());
    in_force_ = *table;
    return {};
  }
  std::vector<std::string> Names() const {
    std::vector<std::string> out;
    for (const auto& r : in_force_->rules()) out.push_back(r.name);
    return out;
  }

  fs::path dir_;
  int reloads_ = 0;
  std::shared_ptr<const analysis::RuleTable> in_force_;
  ManagedRules managed_{"", nullptr};
  ManagedRules Make() {
    return ManagedRules(dir_, [this] { return Reload(); });
  }
};

TEST_F(ManagedRulesTest, AddWritesTheManagedFileAndReloads) {
  ManagedRules m = Make();
  auto name =
      m.Add("[[rule]]\nname = \"no-web\"\naction = \"deny\"\nprotocol = \"tcp\"\nport = 80", {});
  ASSERT_TRUE(name) << name.error().message;
  EXPECT_EQ(*name, "no-web");
  EXPECT_EQ(Names(), (std::vector<std::string>{"no-telnet", "no-web"}));
  const fs::path file = dir_ / kManagedRuleFileName;
  EXPECT_NE(Slurp(file).find("name = \"no-web\""), std::string::npos);
  EXPECT_TRUE(m.IsManaged(file.string() + ":5:8"));
  EXPECT_FALSE(m.IsManaged((dir_ / "10-base.toml").string() + ":2:8"));
  auto text = m.TextOf("no-web", {});
  ASSERT_TRUE(text);
  EXPECT_EQ(text->rfind("[[rule]]", 0), 0u);
  // No temporary file left behind.
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 2u);
}

TEST_F(ManagedRulesTest, BadRuleIsRefusedWithLineAndColumnAndNothingChanges) {
  ManagedRules m = Make();
  ASSERT_TRUE(m.Add("[[rule]]\nname = \"a\"\naction = \"deny\"\nport = 1", {}));
  const std::string before = Slurp(dir_ / kManagedRuleFileName);
  const int reloads = reloads_;
  auto bad = m.Add("[[rule]]\nname = \"b\"\naction = \"deny\"\nport = \"http\"\n", {});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message.rfind("AddRule:4:8: ", 0), 0u) << bad.error().message;
  EXPECT_EQ(Slurp(dir_ / kManagedRuleFileName), before);
  EXPECT_EQ(reloads_, reloads);  // refused before touching anything

  auto not_toml = m.Add("[[rule]\nname = ", {});
  ASSERT_FALSE(not_toml);
  EXPECT_EQ(not_toml.error().message.rfind("AddRule:1:", 0), 0u) << not_toml.error().message;
  auto two = m.Add(
      "[[rule]]\nname = \"c\"\naction = \"deny\"\n[[rule]]\nname = \"d\"\n"
      "action = \"deny\"\n",
      {});
  ASSERT_FALSE(two);
  EXPECT_NE(two.error().message.find("exactly one"), std::string::npos);
  EXPECT_EQ(Slurp(dir_ / kManagedRuleFileName), before);
}

TEST_F(ManagedRulesTest, NameUsedInAnotherFileFailsTheReloadAndRestoresTheFile) {
  ManagedRules m = Make();
  auto dup = m.Add("[[rule]]\nname = \"no-telnet\"\naction = \"allow\"\nport = 23\n", {});
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message.find("no-telnet"), std::string::npos) << dup.error().message;
  EXPECT_FALSE(fs::exists(dir_ / kManagedRuleFileName));  // there was none before
  EXPECT_EQ(Names(), (std::vector<std::string>{"no-telnet"}));

  ASSERT_TRUE(m.Add("[[rule]]\nname = \"x\"\naction = \"deny\"\nport = 1\n", {}));
  const std::string before = Slurp(dir_ / kManagedRuleFileName);
  ASSERT_FALSE(m.Add("[[rule]]\nname = \"no-telnet\"\naction = \"allow\"\nport = 23\n", {}));
  EXPECT_EQ(Slurp(dir_ / kManagedRuleFileName), before);
  EXPECT_EQ(Names(), (std::vector<std::string>{"no-telnet", "x"}));
}

TEST_F(ManagedRulesTest, RemoveTakesOutOneRuleAndKeepsTheOthers) {
  ManagedRules m = Make();
  ASSERT_TRUE(m.Add("[[rule]]\nname = \"a\"\naction = \"deny\"\nport = 1\n", {}));
  ASSERT_TRUE(m.Add("[[rule]]\nname = \"b\"\naction = \"deny\"\nport = 2\n", {}));
  ASSERT_TRUE(m.Add("[[rule]]\nname = \"c\"\naction = \"deny\"\nport = 3\n", {}));
  Status removed = m.Remove("b", {});
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_EQ(Names(), (std::vector<std::string>{"no-telnet", "a", "c"}));
  const std::string text = Slurp(dir_ / kManagedRuleFileName);
  EXPECT_EQ(text.find("\"b\""), std::string::npos);
  EXPECT_NE(text.find("port = 3"), std::string::npos);

  Status missing = m.Remove("b", {});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  // Rules in other files are not in the managed file.
  EXPECT_EQ(m.Remove("no-telnet", {}).error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace tollgate::control
