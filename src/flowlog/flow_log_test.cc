#include "flowlog/flow_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tollgate::flowlog {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

namespace fs = std::filesystem;

bool PrivilegedRequired() {
  const char* v = std::getenv("TOLLGATE_REQUIRE_PRIVILEGED");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A real SQLite connection of the test's own, to look at (or lock) the file behind the log's back.
class TestDb {
 public:
  explicit TestDb(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
    sqlite3_busy_timeout(db_, 5000);
  }
  ~TestDb() { sqlite3_close(db_); }
  TestDb(const TestDb&) = delete;
  TestDb& operator=(const TestDb&) = delete;

  int Exec(const std::string& sql) {
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
    EXPECT_EQ(rc, SQLITE_OK) << sql << ": " << sqlite3_errmsg(db_);
    return rc;
  }
  int64_t Int(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    int64_t v = -1;
    if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
  }
  std::string Text(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    std::string v;
    if (sqlite3_step(s) == SQLITE_ROW) {
      v = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    }
    sqlite3_finalize(s);
    return v;
  }

 private:
  sqlite3* db_ = nullptr;
};

FlowRecord Record(int64_t time_us, std::string name = "example.com", std::string action = "allow",
                  std::string exe = "/usr/bin/curl") {
  FlowRecord r;
  r.time_us = time_us;
  r.protocol = "tcp";
  r.direction = "outbound";
  r.src = "192.0.2.10";
  r.src_port = 40000;
  r.dst = "198.51.100.1";
  r.dst_port = 443;
  r.exe = std::move(exe);
  r.name = std::move(name);
  r.action = std::move(action);
  r.reason = "test";
  return r;
}

class FlowLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = fs::path(::testing::TempDir()) / "flowlog.XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override { fs::remove_all(dir_); }

  FlowLogOptions Options() {
    FlowLogOptions o;
    o.path = dir_ / "flows.db";
    o.flush_interval = std::chrono::hours(1);  // tests Flush; nothing depends on timers
    o.max_age = std::chrono::seconds(0);       // small made-up times; the age test sets its own
    return o;
  }
  std::unique_ptr<FlowLog> OpenLog(FlowLogOptions o) {
    auto log = FlowLog::Open(std::move(o));
    EXPECT_TRUE(log.has_value()) << (log ? "" : log.error().message);
    return log ? std::move(*log) : nullptr;
  }
  static std::vector<FlowRecord> Query(const FlowLog& log, const FlowQuery& q) {
    auto r = log.Query(q);
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
    return r ? *r : std::vector<FlowRecord>{};
  }
  static std::vector<std::string> Names(const std::vector<FlowRecord>& records) {
    std::vector<std::string> out;
    for (const auto& r : records) out.push_back(r.name);
    return out;
  }
  static void ExpectBalanced(const FlowLogCounters& c) {
    EXPECT_EQ(c.appended, c.written + c.dropped_queue_full + c.dropped_write_error);
  }

  fs::path dir_;
};

TEST_F(FlowLogTest, RoundTripsEveryField) {
  auto log = OpenLog(Options());
  ASSERT_NE(log, nullptr);
  FlowRecord full;
  full.time_us = 1'700'000'000'123'456;
  full.protocol = "udp";
  full.direction = "inbound";
  full.src = "2001:db8::1";
  full.src_port = 65535;
  full.dst = "2001:db8::2";
  full.dst_port = 53;
  full.uid = 4294967294u;
  full.user = "alice";
  full.pid = 123456;
  full.exe = "/usr/bin/dig with 'quotes' and %_";
  full.unit = "user@1000.service";
  full.name = "www.example.com";
  full.action = "reject";
  full.rule = "no-dns";
  full.reason = "rule no-dns: dst_port 53\nsecond line";
  log->Append(full);
  FlowRecord bare = Record(full.time_us - 1, "");  // uid and pid unknown
  log->Append(bare);
  log->Flush();

  auto got = Query(*log, {});
  ASSERT_EQ(got.size(), 2u);
  const FlowRecord& r = got[0];
  EXPECT_GT(r.id, 0);
  EXPECT_EQ(r.time_us, full.time_us);
  EXPECT_EQ(r.protocol, full.protocol);
  EXPECT_EQ(r.direction, full.direction);
  EXPECT_EQ(r.src, full.src);
  EXPECT_EQ(r.src_port, full.src_port);
  EXPECT_EQ(r.dst, full.dst);
  EXPECT_EQ(r.dst_port, full.dst_port);
  EXPECT_EQ(r.uid, full.uid);
  EXPECT_EQ(r.user, full.user);
  EXPECT_EQ(r.pid, full.pid);
  EXPECT_EQ(r.exe, full.exe);
  EXPECT_EQ(r.unit, full.unit);
  EXPECT_EQ(r.name, full.name);
  EXPECT_EQ(r.action, full.action);
  EXPECT_EQ(r.rule, full.rule);
  EXPECT_EQ(r.reason, full.reason);
  EXPECT_EQ(got[1].uid, std::nullopt);
  EXPECT_EQ(got[1].pid, std::nullopt);
  EXPECT_EQ(got[1].name, "");
  EXPECT_NE(got[0].id, got[1].id);

  FlowLogCounters c = log->counters();
  EXPECT_EQ(c.appended, 2u);
  EXPECT_EQ(c.written, 2u);
  EXPECT_EQ(c.dropped_queue_full + c.dropped_write_error + c.pruned, 0u);
}

TEST_F(FlowLogTest, CreatesPrivateWalDatabaseWithIncrementalVacuum) {
  auto log = OpenLog(Options());
  ASSERT_NE(log, nullptr);
  struct stat st {};
  ASSERT_EQ(stat(log->path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  TestDb db(log->path());
  EXPECT_EQ(db.Text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(db.Int("PRAGMA auto_vacuum"), 2);  // incremental
  EXPECT_EQ(db.Int("PRAGMA user_version"), 1);
  EXPECT_EQ(db.Int("SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND "
                   "sql LIKE '%time_us%'"),
            3);  // time alone, (action, time) and (exe, time)
}

TEST_F(FlowLogTest, FiltersBySinceActionAndExe) {
  auto log = OpenLog(Options());
  ASSERT_NE(log, nullptr);
  log->Append(Record(100, "a.test", "allow", "/usr/bin/curl"));
  log->Append(Record(200, "b.test", "deny", "/usr/bin/curl"));
  log->Append(Record(300, "c.test", "deny", "/usr/bin/wget"));
  log->Append(Record(400, "d.test", "allow", "/usr/bin/wget"));
  log->Flush();

  FlowQuery since;
  since.since_us = 200;  // at or after
  EXPECT_THAT(Names(Query(*log, since)), ElementsAre("d.test", "c.test", "b.test"));
  FlowQuery deny;
  deny.action = "deny";
  EXPECT_THAT(Names(Query(*log, deny)), ElementsAre("c.test", "b.test"));
  FlowQuery wget;
  wget.exe = "/usr/bin/wget";
  EXPECT_THAT(Names(Query(*log, wget)), ElementsAre("d.test", "c.test"));
  FlowQuery prefix_is_not_exe;
  prefix_is_not_exe.exe = "/usr/bin/";
  EXPECT_THAT(Query(*log, prefix_is_not_exe), ::testing::IsEmpty());
  FlowQuery all;
  all.since_us = 250;
  all.action = "deny";
  all.exe = "/usr/bin/wget";
  EXPECT_THAT(Names(Query(*log, all)), ElementsAre("c.test"));
}

TEST_F(FlowLogTest, HostMatchesTheNameAndNamesBelowIt) {
  auto log = OpenLog(Options());
  ASSERT_NE(log, nullptr);
  int64_t t = 1;
  for (const char* name : {"example.com", "www.example.com", "a.b.example.com", "badexample.com",
                           "example.com.evil.test", "example.co", "xample.com", "WWW.Example.COM",
                           "ex%mple.com", "ex_mple.com", "examplexcom", ""}) {
    log->Append(Record(t++, name));
  }
  log->Flush();

  FlowQuery q;
  q.host = "example.com";
  EXPECT_THAT(Names(Query(*log, q)), UnorderedElementsAre("example.com", "www.example.com",
                                                          "a.b.example.com", "WWW.Example.COM"));
  q.host = "Example.COM.";  // case and the root's dot do not matter
  EXPECT_EQ(Query(*log, q).size(), 4u);
  q.host = "b.example.com";
  EXPECT_THAT(Names(Query(*log, q)), ElementsAre("a.b.example.com"));
  // LIKE wildcards in the query are plain characters.
  q.host = "ex%mple.com";
  EXPECT_THAT(Names(Query(*log, q)), ElementsAre("ex%mple.com"));
  q.host = "ex_mple.com";
  EXPECT_THAT(Names(Query(*log, q)), ElementsAre("ex_mple.com"));
  q.host = "com";
  EXPECT_EQ(Query(*log, q).size(), 8u);
  q.host = "le.com";
  EXPECT_THAT(Query(*log, q), ::testing::IsEmpty());
}

TEST_F(FlowLogTest, NewestFirstWithLimit) {
  auto log = OpenLog(Options());
  ASSERT_NE(log, nullptr);
  // Out of time order on purpose; equal times come out newest-written first.
  for (int64_t t : {50, 10, 40, 20, 30, 30}) log->Append(Record(t, std::to_string(t)));
  log->Flush();
  auto all = Query(*log, {});
  ASSERT_EQ(all.size(), 6u);
  std::vector<int64_t> times;
  for (const auto& r : all) times.push_back(r.time_us);
  EXPECT_THAT(times, ElementsAre(50, 40, 30, 30, 20, 10));
  EXPECT_GT(all[2].id, all[3].id);

  FlowQuery three;
  three.limit = 3;
  EXPECT_THAT(Names(Query(*log, three)), ElementsAre("50", "40", "30"));
  FlowQuery none;
  none.limit = 0;
  EXPECT_THAT(Query(*log, none), ::testing::IsEmpty());
}

TEST_F(FlowLogTest, LimitIsClampedTo10000) {
  FlowLogOptions o = Options();
  o.batch = 4096;
  auto log = OpenLog(o);
  ASSERT_NE(log, nullptr);
  for (int i = 0; i < 10'005; ++i) log->Append(Record(i));
  log->Flush();
  EXPECT_EQ(log->counters().written, 10'005u);
  FlowQuery q;
  q.limit = 1'000'000;
  auto got = Query(*log, q);
  ASSERT_EQ(got.size(), 10'000u);
  EXPECT_EQ(got.front().time_us, 10'004);
  EXPECT_EQ(got.back().time_us, 5);
}

TEST_F(FlowLogTest, RetentionDeletesRecordsOlderThanMaxAge) {
  FlowLogOptions o = Options();
  o.max_age = std::chrono::hours(1);
  auto log = OpenLog(o);
  ASSERT_NE(log, nullptr);
  const int64_t now = NowUs();
  const int64_t two_hours = int64_t{2} * 3600 * 1'000'000;
  for (int i = 0; i < 25; ++i) log->Append(Record(now - two_hours - i, "old.test"));
  log->Append(Record(now - two_hours / 4, "recent.test"));  // 30 minutes: kept
  log->Append(Record(now, "new.test"));
  log->Flush();

  EXPECT_THAT(Names(Query(*log, {})), ElementsAre("new.test", "recent.test"));
  FlowLogCounters c = log->counters();
  EXPECT_EQ(c.written, 27u);
  EXPECT_EQ(c.pruned, 25u);
}

TEST_F(FlowLogTest, RetentionKeepsTheFileUnderMaxBytes) {
  FlowLogOptions o = Options();
  o.max_bytes = 256 << 10;
  o.batch = 200;
  auto log = OpenLog(o);
  ASSERT_NE(log, nullptr);
  // ~1.5 MB of records: several times the limit.
  const std::string padding(300, 'x');
  const int kRecords = 5000;
  for (int i = 0; i < kRecords; ++i) {
    FlowRecord r = Record(1'000'000 + i, "n" + std::to_string(i) + ".test");
    r.reason = padding;
    log->Append(std::move(r));
    // Flush now and then, so retention runs between batches as it would over time.
    if (i % 1000 == 999) log->Flush();
  }
  log->Flush();

  FlowLogCounters c = log->counters();
  EXPECT_EQ(c.written, static_cast<uint64_t>(kRecords));
  EXPECT_GT(c.pruned, 0u);
  TestDb db(log->path());
  const int64_t db_bytes = db.Int("PRAGMA page_count") * db.Int("PRAGMA page_size");
  EXPECT_LE(db_bytes, o.max_bytes);
  EXPECT_EQ(db.Int("SELECT count(*) FROM flows"), static_cast<int64_t>(kRecords - c.pruned));
  // The oldest went, the newest stayed.
  FlowQuery newest;
  newest.limit = 1;
  EXPECT_THAT(Names(Query(*log, newest)), ElementsAre("n4999.test"));
  EXPECT_EQ(db.Int("SELECT min(time_us) FROM flows"), 1'000'000 + static_cast<int64_t>(c.pruned));
  // The file itself shrank (incremental vacuum, then a checkpoint) once nothing reads.
  db.Exec("PRAGMA wal_checkpoint(TRUNCATE)");
  EXPECT_LE(fs::file_size(log->path()), o.max_bytes);
}

TEST_F(FlowLogTest, FullQueueDropsAndCountsWithoutBlocking) {
  FlowLogOptions o = Options();
  o.queue_limit = 4;
  o.batch = 1;
  auto log = OpenLog(o);
  ASSERT_NE(log, nullptr);

  std::mutex mu;
  std::condition_variable cv;
  bool entered = false;
  bool release = false;
  std::thread::id enricher_thread;
  log->SetEnricher([&](FlowRecord& r) {
    std::unique_lock lock(mu);
    enricher_thread = std::this_thread::get_id();
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
    r.user = "enriched";
  });

  log->Append(Record(1, "first.test"));
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return entered; });  // the writer holds "first" in the enricher
  }
  // The writer is stuck: four fit in the queue, the rest are dropped, and Append returns.
  for (int i = 0; i < 7; ++i) log->Append(Record(2 + i, "q" + std::to_string(i) + ".test"));
  FlowLogCounters c = log->counters();
  EXPECT_EQ(c.appended, 8u);
  EXPECT_EQ(c.dropped_queue_full, 3u);
  EXPECT_EQ(c.written, 0u);

  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  log->Flush();
  c = log->counters();
  EXPECT_EQ(c.written, 5u);
  ExpectBalanced(c);
  EXPECT_NE(enricher_thread, std::this_thread::get_id());
  auto got = Query(*log, {});
  EXPECT_THAT(Names(got), ElementsAre("q3.test", "q2.test", "q1.test", "q0.test", "first.test"));
  for (const auto& r : got) EXPECT_EQ(r.user, "enriched");
}

TEST_F(FlowLogTest, LockedDatabaseDropsThenRecovers) {
  auto log = OpenLog(Options());
  ASSERT_NE(log, nullptr);
  log->Append(Record(1, "before.test"));
  log->Flush();

  TestDb other(log->path());
  other.Exec("BEGIN EXCLUSIVE");
  other.Exec(
      "INSERT INTO flows (time_us, protocol, direction, src, src_port, dst, dst_port, "
      "user, exe, unit, name, name_rev, action, rule, reason) VALUES "
      "(5, '', '', '', 0, '', 0, '', '', '', 'other.test', 'tset.rehto', '', '', '')");
  for (int i = 0; i < 3; ++i) log->Append(Record(10 + i, "locked.test"));
  log->Flush();
  FlowLogCounters c = log->counters();
  EXPECT_EQ(c.dropped_write_error, 3u);
  EXPECT_EQ(c.written, 1u);
  // Reading still works while another connection writes (WAL).
  EXPECT_THAT(Names(Query(*log, {})), ElementsAre("before.test"));

  other.Exec("COMMIT");
  log->Append(Record(20, "after.test"));
  log->Append(Record(21, "after.test"));
  log->Flush();
  c = log->counters();
  EXPECT_EQ(c.written, 3u);
  EXPECT_EQ(c.dropped_write_error, 3u);
  ExpectBalanced(c);
  EXPECT_THAT(Names(Query(*log, {})),
              ElementsAre("after.test", "after.test", "other.test", "before.test"));
}

// Without root, a full disk is simulated by capping the database's pages (max_page_count on the
// writer's connection): SQLite then fails inserts with SQLITE_FULL, as on a full file system.
TEST_F(FlowLogTest, FullDatabaseDropsThenRecoversWhenSpaceIsFreed) {
  FlowLogOptions o = Options();
  o.max_pages_for_testing = 40;
  o.batch = 50;
  auto log = OpenLog(o);
  ASSERT_NE(log, nullptr);
  const std::string padding(500, 'p');
  for (int i = 0; i < 1000; ++i) {
    FlowRecord r = Record(i, "fill.test");
    r.reason = padding;
    log->Append(std::move(r));
  }
  log->Flush();
  FlowLogCounters c = log->counters();
  EXPECT_GT(c.written, 0u);
  EXPECT_GT(c.dropped_write_error, 0u);
  ExpectBalanced(c);
  const uint64_t dropped = c.dropped_write_error;

  // A record of ~25 pages cannot fit in what is left of the 40; it is dropped, not queued
  // forever, and nothing crashes.
  {
    TestDb db(log->path());
    ASSERT_GT(db.Int("PRAGMA page_count"), 20);
  }
  auto large = [](int64_t time_us, std::string name) {
    FlowRecord r = Record(time_us, std::move(name));
    r.reason = std::string(100'000, 'b');
    return r;
  };
  log->Append(large(5000, "still-full.test"));
  log->Flush();
  EXPECT_EQ(log->counters().dropped_write_error, dropped + 1);

  {
    TestDb db(log->path());  // the operator frees space
    db.Exec("DELETE FROM flows");
  }
  log->Append(large(6000, "after.test"));
  log->Flush();
  c = log->counters();
  EXPECT_EQ(c.dropped_write_error, dropped + 1);
  ExpectBalanced(c);
  EXPECT_THAT(Names(Query(*log, {})), ElementsAre("after.test"));
}

// A real full file system: a small tmpfs, mounted in a mount namespace of a thread of ours (the
// writer thread inherits it), so the host never sees it.
TEST_F(FlowLogTest, FullTmpfsDropsThenRecovers) {
  if (geteuid() != 0) {
    if (PrivilegedRequired())
      FAIL() << "needs root, and TOLLGATE_REQUIRE_PRIVILEGED=1 forbids skipping";
    GTEST_SKIP() << "needs root (CAP_SYS_ADMIN) to mount a tmpfs";
  }
  const fs::path mnt = dir_ / "tmpfs";
  fs::create_directory(mnt);
  std::string setup_error;
  std::thread t([&] {
    if (unshare(CLONE_NEWNS) != 0) {
      setup_error = std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
      return;
    }
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m,mode=0700") != 0) {
      setup_error = std::string("mount: ") + std::strerror(errno);
      return;
    }
    FlowLogOptions o = Options();
    o.path = mnt / "flows.db";
    o.batch = 100;
    auto log = OpenLog(o);
    ASSERT_NE(log, nullptr);
    log->Append(Record(1, "before.test"));
    log->Flush();

    // Fill the rest of the file system.
    const fs::path filler = mnt / "filler";
    {
      std::ofstream out(filler, std::ios::binary);
      const std::string block(4096, 'f');
      while (out.write(block.data(), block.size())) {
      }
    }
    const std::string padding(500, 'p');
    for (int i = 0; i < 2000; ++i) {
      FlowRecord r = Record(10 + i, "full.test");
      r.reason = padding;
      log->Append(std::move(r));
    }
    log->Flush();
    FlowLogCounters c = log->counters();
    EXPECT_GT(c.dropped_write_error, 0u);
    ExpectBalanced(c);
    const uint64_t written = c.written;

    fs::remove(filler);
    log->Append(Record(9000, "after.test"));
    log->Flush();
    c = log->counters();
    EXPECT_EQ(c.written, written + 1);
    ExpectBalanced(c);
    FlowQuery q;
    q.limit = 1;
    EXPECT_THAT(Names(Query(*log, q)), ElementsAre("after.test"));
    log.reset();
    umount2(mnt.c_str(), MNT_DETACH);
  });
  t.join();
  if (!setup_error.empty()) {
    if (PrivilegedRequired()) FAIL() << setup_error;
    GTEST_SKIP() << setup_error;
  }
}

TEST_F(FlowLogTest, ReopenKeepsData) {
  {
    auto log = OpenLog(Options());
    ASSERT_NE(log, nullptr);
    log->Append(Record(1, "one.test"));
    log->Append(Record(2, "two.test"));
    log->Flush();
  }
  auto log = OpenLog(Options());
  ASSERT_NE(log, nullptr);
  log->Append(Record(3, "three.test"));
  log->Flush();
  EXPECT_THAT(Names(Query(*log, {})), ElementsAre("three.test", "two.test", "one.test"));
  EXPECT_EQ(log->counters().written, 1u);  // counters are per run
}

TEST_F(FlowLogTest, DestructorWritesWhatIsQueued) {
  {
    auto log = OpenLog(Options());  // flush_interval is an hour: only the destructor writes
    ASSERT_NE(log, nullptr);
    for (int i = 0; i < 10; ++i) log->Append(Record(i, "queued.test"));
  }
  auto log = OpenLog(Options());
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(Query(*log, {}).size(), 10u);
}

TEST_F(FlowLogTest, PartialBatchIsWrittenAfterFlushInterval) {
  FlowLogOptions o = Options();
  o.flush_interval = std::chrono::milliseconds(5);
  auto log = OpenLog(o);
  ASSERT_NE(log, nullptr);
  log->Append(Record(1, "soon.test"));
  // Waits for the event, with a generous cap so a failure does not hang the suite.
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (log->counters().written == 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(log->counters().written, 1u);
}

TEST_F(FlowLogTest, QueriesFromAnotherThreadWhileWriting) {
  FlowLogOptions o = Options();
  o.batch = 64;
  o.flush_interval = std::chrono::milliseconds(1);
  auto log = OpenLog(o);
  ASSERT_NE(log, nullptr);
  std::thread reader([&] {
    for (int i = 0; i < 200; ++i) {
      auto got = Query(*log, {});
      for (size_t j = 1; j < got.size(); ++j) ASSERT_GE(got[j - 1].time_us, got[j].time_us);
    }
  });
  for (int i = 0; i < 5000; ++i) log->Append(Record(i));
  reader.join();
  log->Flush();
  EXPECT_EQ(log->counters().written, 5000u);
}

TEST_F(FlowLogTest, RefusesNewerSchema) {
  const std::string path = dir_ / "flows.db";
  {
    TestDb db(path);
    db.Exec("PRAGMA user_version = 2");
  }
  FlowLogOptions o = Options();
  auto log = FlowLog::Open(o);
  ASSERT_FALSE(log.has_value());
  EXPECT_EQ(log.error().code, ErrorCode::kProtocol);
  EXPECT_THAT(log.error().message, HasSubstr(path));
  EXPECT_THAT(log.error().message, HasSubstr("schema version 2 is newer"));
  TestDb db(path);
  EXPECT_EQ(db.Int("PRAGMA user_version"), 2);  // left alone
}

TEST_F(FlowLogTest, RefusesOtherDatabasesAndOtherFiles) {
  const std::string path = dir_ / "flows.db";
  {
    TestDb db(path);
    db.Exec("CREATE TABLE t (x)");
  }
  auto log = FlowLog::Open(Options());
  ASSERT_FALSE(log.has_value());
  EXPECT_THAT(log.error().message, HasSubstr("not a Tollgate flow log"));

  fs::remove(path);
  std::ofstream(path) << std::string(8192, 'g');
  log = FlowLog::Open(Options());
  ASSERT_FALSE(log.has_value());
  EXPECT_THAT(log.error().message, HasSubstr("not a Tollgate flow log"));
}

TEST_F(FlowLogTest, MissingDirectoryIsAClearError) {
  FlowLogOptions o = Options();
  o.path = dir_ / "missing" / "flows.db";
  auto log = FlowLog::Open(o);
  ASSERT_FALSE(log.has_value());
  EXPECT_EQ(log.error().code, ErrorCode::kSystem);
  EXPECT_THAT(log.error().message, HasSubstr(o.path));
  EXPECT_THAT(log.error().message, HasSubstr("No such file or directory"));
  EXPECT_FALSE(fs::exists(dir_ / "missing"));

  o = Options();
  o.batch = 0;
  EXPECT_EQ(FlowLog::Open(o).error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace tollgate::flowlog
