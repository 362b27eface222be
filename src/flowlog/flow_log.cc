#include "flowlog/flow_log.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "common/log.h"

namespace tollgate::flowlog {
namespace {

// Bump with a migration in OpenWriter; a file with a higher version is refused, never rewritten.
constexpr int kSchemaVersion = 1;

// The writer must never stall long behind another process holding the database (an operator's
// sqlite3 shell): after this it drops the batch and counts it.
constexpr int kWriterBusyTimeoutMs = 50;
// Creating the schema and reading may wait a little longer; neither is on the verdict path.
constexpr int kSetupBusyTimeoutMs = 2000;
constexpr int kReaderBusyTimeoutMs = 1000;

constexpr size_t kQueryLimitMax = 10000;

// Retention runs every this many written batches, every kMaintenanceInterval, and on Flush;
// checking the size on every insert would cost more than the inserts.
constexpr int kMaintenanceEveryBatches = 64;
constexpr std::chrono::seconds kMaintenanceInterval{60};
// Deleting in chunks keeps each transaction short, and a run bounded, so a large backlog (the
// retention was lowered, the daemon was stopped for months) cannot keep the writer from
// inserting for long; the rest is deleted on the next runs.
constexpr int64_t kPruneChunkRows = 10000;
constexpr int kPruneChunksPerRun = 20;
// Size pruning goes below the limit by this fraction, so it does not run on every batch once the
// file is at the limit.
constexpr uint64_t kSizeHysteresisDivisor = 10;

// The WAL is truncated back to this after a checkpoint; it adds at most about this much to the
// database file's size on disk.
constexpr int64_t kJournalSizeLimit = 4 << 20;

constexpr std::chrono::seconds kDrainBound{3};

constexpr int kWriterCacheKiB = 16 << 10;

// Names are matched without case and without the root's trailing dot; stored reversed so that
// "the name or any name below it" is an index range: "moc.elpmaxe" or "moc.elpmaxe.*".
std::string ReversedName(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  std::string out(name.rbegin(), name.rend());
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string SqliteMessage(sqlite3* db, int rc) {
  std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  if (db != nullptr) {
    int err = sqlite3_system_errno(db);
    if (err != 0 && (rc & 0xff) != SQLITE_BUSY) {
      msg += " (";
      msg += std::strerror(err);
      msg += ")";
    }
  }
  return msg;
}

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

constexpr const char* kCreateSchema = R"sql(
CREATE TABLE flows (
  id INTEGER PRIMARY KEY,
  time_us INTEGER NOT NULL,
  protocol TEXT NOT NULL,
  direction TEXT NOT NULL,
  src TEXT NOT NULL,
  src_port INTEGER NOT NULL,
  dst TEXT NOT NULL,
  dst_port INTEGER NOT NULL,
  uid INTEGER,
  user TEXT NOT NULL,
  pid INTEGER,
  exe TEXT NOT NULL,
  unit TEXT NOT NULL,
  name TEXT NOT NULL,
  name_rev TEXT NOT NULL,
  action TEXT NOT NULL,
  rule TEXT NOT NULL,
  reason TEXT NOT NULL
);
CREATE INDEX flows_time ON flows (time_us);
CREATE INDEX flows_action_time ON flows (action, time_us);
CREATE INDEX flows_exe_time ON flows (exe, time_us);
CREATE INDEX flows_name_rev ON flows (name_rev);
)sql";

constexpr const char* kInsert =
    "INSERT INTO flows (time_us, protocol, direction, src, src_port, dst, dst_port, uid, user, "
    "pid, exe, unit, name, name_rev, action, rule, reason) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";
constexpr const char* kPruneOlderThan =
    "DELETE FROM flows WHERE id IN "
    "(SELECT id FROM flows WHERE time_us < ?1 ORDER BY time_us LIMIT ?2)";
constexpr const char* kPruneOldest =
    "DELETE FROM flows WHERE id IN (SELECT id FROM flows ORDER BY time_us, id LIMIT ?1)";

constexpr const char* kSelectColumns =
    "SELECT id, time_us, protocol, direction, src, src_port, dst, dst_port, uid, user, pid, exe, "
    "unit, name, action, rule, reason FROM flows";

void BindText(sqlite3_stmt* s, int index, const std::string& text) {
  // SQLITE_STATIC: the record outlives the step that reads it.
  sqlite3_bind_text(s, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
}

std::string ColumnText(sqlite3_stmt* s, int column) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, column));
  if (text == nullptr) return {};
  return std::string(text, static_cast<size_t>(sqlite3_column_bytes(s, column)));
}

}  // namespace

struct FlowLog::Impl {
  explicit Impl(FlowLogOptions o) : options(std::move(o)) {}
  ~Impl() = default;

  Status OpenWriter();
  Status OpenReader();
  Status Prepare(const char* sql, StmtPtr* out);
  int Exec(const char* sql) {
    return sqlite3_exec(writer_db.get(), sql, nullptr, nullptr, nullptr);
  }
  Expected<int64_t> PragmaInt(sqlite3* db, const char* sql);
  std::string Where() const { return "flow log " + options.path; }

  void Run();
  void WriteRecords(std::deque<FlowRecord>& records, const std::function<void(FlowRecord&)>& enrich,
                    bool shutting_down, std::chrono::steady_clock::time_point drain_deadline);
  void WriteBatch(std::deque<FlowRecord>& records, size_t begin, size_t end);
  void NoteWriteFailure(int rc, const char* step, size_t count);
  void Maintain();
  void PruneByAge();
  void PruneBySize();

  const FlowLogOptions options;
  DbPtr writer_db;  // used by Open, then only by the writer thread
  StmtPtr insert, prune_older_than, prune_oldest;

  mutable std::mutex reader_mu;
  DbPtr reader_db;

  std::mutex mu;
  std::condition_variable wake;     // writer: records, Flush or stop
  std::condition_variable flushed;  // Flush: a round of the writer finished
  std::deque<FlowRecord> queue;
  std::function<void(FlowRecord&)> enricher;
  uint64_t flush_requested = 0;
  uint64_t flush_served = 0;
  bool stopping = false;
  std::chrono::steady_clock::time_point drain_deadline;

  std::atomic<uint64_t> appended{0}, written{0}, dropped_queue_full{0}, dropped_write_error{0},
      pruned{0};

  // Writer thread only.
  int batches_since_maintenance = 0;
  bool more_to_prune = false;
  std::chrono::steady_clock::time_point next_maintenance;
  uint64_t failing_since_dropped = 0;  // drops in the current run of failures, for the log line
  bool failing = false;

  std::thread writer;
};

Status FlowLog::Impl::Prepare(const char* sql, StmtPtr* out) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(writer_db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return Unexpected(ErrorCode::kSystem,
                      Where() + ": preparing a statement: " + SqliteMessage(writer_db.get(), rc));
  }
  out->reset(stmt);
  return {};
}

Expected<int64_t> FlowLog::Impl::PragmaInt(sqlite3* db, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &raw, nullptr);
  StmtPtr stmt(raw);
  if (rc == SQLITE_OK) rc = sqlite3_step(raw);
  if (rc != SQLITE_ROW) {
    // kMalformed marks "not a database" for the caller; a lock or I/O error is something else.
    ErrorCode code = (rc & 0xff) == SQLITE_NOTADB ? ErrorCode::kMalformed
                     : (rc & 0xff) == SQLITE_BUSY ? ErrorCode::kUnavailable
                                                  : ErrorCode::kSystem;
    return Unexpected(code, Where() + ": " + sql + ": " + SqliteMessage(db, rc));
  }
  return sqlite3_column_int64(raw, 0);
}

Status FlowLog::Impl::OpenWriter() {
  const std::string& path = options.path;
  // Created here rather than by SQLite so the mode is 0600 whatever the umask (SQLite would use
  // 0644): the log says who connected where. The -wal and -shm files inherit this mode.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    Error e = Error::System(Where() + ": cannot open", err);
    e.message += err == ENOENT ? "; create the directory (tmpfiles.d does) or fix the path"
                               : "; check the path and the directory's permissions";
    return Unexpected(std::move(e));
  }
  ::close(fd);

  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  writer_db.reset(raw);
  if (rc != SQLITE_OK) {
    return Unexpected(ErrorCode::kSystem, Where() + ": " + SqliteMessage(raw, rc));
  }
  sqlite3* db = raw;
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kSetupBusyTimeoutMs);

  auto version = PragmaInt(db, "PRAGMA user_version");
  if (!version) {
    if (version.error().code != ErrorCode::kMalformed) return Unexpected(version.error());
    return Unexpected(ErrorCode::kInvalidArgument,
                      version.error().message +
                          "; it is not a Tollgate flow log: move it away or set another path");
  }
  if (*version > kSchemaVersion) {
    return Unexpected(ErrorCode::kProtocol,
                      Where() + ": schema version " + std::to_string(*version) +
                          " is newer than this Tollgate understands (" +
                          std::to_string(kSchemaVersion) +
                          "); it was written by a newer release: upgrade Tollgate, or move the "
                          "file away to start a new log");
  }
  if (*version == 0) {
    auto tables = PragmaInt(db, "SELECT count(*) FROM sqlite_schema");
    if (!tables) return Unexpected(tables.error());
    if (*tables != 0) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        Where() +
                            ": has tables but no flow log schema version; it is not a "
                            "Tollgate flow log: move it away or set another path");
    }
    // Only possible before the first table exists. Incremental, so retention can give the freed
    // pages back to the file system (PruneBySize/PruneByAge run incremental_vacuum); FULL would
    // move pages on every commit.
    Exec("PRAGMA auto_vacuum = INCREMENTAL");
  }

  sqlite3_stmt* jm = nullptr;
  rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &jm, nullptr);
  StmtPtr jm_owner(jm);
  if (rc == SQLITE_OK) rc = sqlite3_step(jm);
  if (rc != SQLITE_ROW || ColumnText(jm, 0) != "wal") {
    return Unexpected(ErrorCode::kSystem,
                      Where() + ": cannot switch to WAL mode (" + SqliteMessage(db, rc) +
                          "); the file system must support shared memory and locks");
  }
  jm_owner.reset();
  // NORMAL in WAL mode: a power loss may lose the last commits, never corrupt the file; FULL would
  // fsync every batch for records that are only a log.
  Exec("PRAGMA synchronous = NORMAL");
  Exec(("PRAGMA journal_size_limit = " + std::to_string(kJournalSizeLimit)).c_str());
  // The indexes on exe and name take inserts at scattered places; with SQLite's default 2 MiB
  // cache the writer spent most of its time re-reading evicted pages.
  Exec(("PRAGMA cache_size = -" + std::to_string(kWriterCacheKiB)).c_str());
  if (options.max_pages_for_testing != 0) {
    Exec(("PRAGMA max_page_count = " + std::to_string(options.max_pages_for_testing)).c_str());
  }

  if (*version == 0) {
    rc = Exec("BEGIN IMMEDIATE");
    if (rc == SQLITE_OK) {
      // Another process may have created it between our check and the lock.
      auto again = PragmaInt(db, "PRAGMA user_version");
      if (again && *again == 0) {
        rc = Exec(kCreateSchema);
        if (rc == SQLITE_OK) {
          rc = Exec(("PRAGMA user_version = " + std::to_string(kSchemaVersion)).c_str());
        }
      }
      if (rc == SQLITE_OK) rc = Exec("COMMIT");
    }
    if (rc != SQLITE_OK) {
      std::string msg = SqliteMessage(db, rc);
      if (!sqlite3_get_autocommit(db)) Exec("ROLLBACK");
      return Unexpected(ErrorCode::kSystem, Where() + ": creating the schema: " + msg);
    }
  }

  sqlite3_busy_timeout(db, kWriterBusyTimeoutMs);
  if (auto s = Prepare(kInsert, &insert); !s) return s;
  if (auto s = Prepare(kPruneOlderThan, &prune_older_than); !s) return s;
  if (auto s = Prepare(kPruneOldest, &prune_oldest); !s) return s;
  return {};
}

Status FlowLog::Impl::OpenReader() {
  sqlite3* raw = nullptr;
  // Read-write at the file level but query_only: a read-only WAL connection needs the -shm file to
  // exist already and fails in odd ways when it does not.
  int rc = sqlite3_open_v2(options.path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  reader_db.reset(raw);
  if (rc == SQLITE_OK) {
    sqlite3_extended_result_codes(raw, 1);
    sqlite3_busy_timeout(raw, kReaderBusyTimeoutMs);
    rc = sqlite3_exec(raw, "PRAGMA query_only = ON", nullptr, nullptr, nullptr);
  }
  if (rc != SQLITE_OK) {
    return Unexpected(ErrorCode::kSystem,
                      Where() + ": opening the reading connection: " + SqliteMessage(raw, rc));
  }
  return {};
}

void FlowLog::Impl::Run() {
  Maintain();  // apply retention that accrued while the daemon was stopped
  std::unique_lock lock(mu);
  for (;;) {
    auto asked = [&] { return stopping || flush_requested != flush_served; };
    // Idle: sleep until records arrive (Append wakes us on the first) or retention is due.
    wake.wait_until(lock, more_to_prune ? std::chrono::steady_clock::now() : next_maintenance,
                    [&] { return asked() || !queue.empty(); });
    // A partial batch waits at most flush_interval for company, so a transaction carries many.
    if (!asked() && !queue.empty() && queue.size() < options.batch) {
      wake.wait_for(lock, options.flush_interval,
                    [&] { return asked() || queue.size() >= options.batch; });
    }
    std::deque<FlowRecord> taken;
    taken.swap(queue);
    const uint64_t serving = flush_requested;
    const bool stop = stopping;
    const auto deadline = drain_deadline;
    std::function<void(FlowRecord&)> enrich = enricher;
    lock.unlock();

    WriteRecords(taken, enrich, stop, deadline);
    taken.clear();  // outside the lock: Append must not wait for the frees
    if (!stop && (serving != flush_served || more_to_prune ||
                  batches_since_maintenance >= kMaintenanceEveryBatches ||
                  std::chrono::steady_clock::now() >= next_maintenance)) {
      Maintain();
    }

    lock.lock();
    flush_served = serving;
    flushed.notify_all();
    if (stop && queue.empty()) return;
  }
}

void FlowLog::Impl::WriteRecords(std::deque<FlowRecord>& records,
                                 const std::function<void(FlowRecord&)>& enrich, bool shutting_down,
                                 std::chrono::steady_clock::time_point deadline) {
  const size_t n = records.size();
  for (size_t begin = 0; begin < n; begin += options.batch) {
    if (shutting_down && std::chrono::steady_clock::now() >= deadline) {
      dropped_write_error.fetch_add(n - begin, std::memory_order_relaxed);
      TG_LOG_WARNING("%s: stopping with %zu records not written (the database was too slow)",
                     Where().c_str(), n - begin);
      return;
    }
    const size_t end = std::min(n, begin + options.batch);
    // Before BEGIN, so the write lock is not held while the enricher reads /proc.
    if (enrich) {
      for (size_t i = begin; i < end; ++i) {
        try {
          enrich(records[i]);
        } catch (...) {
          // An enricher's failure costs the attribution, not the record.
        }
      }
    }
    WriteBatch(records, begin, end);
  }
}

void FlowLog::Impl::WriteBatch(std::deque<FlowRecord>& records, size_t begin, size_t end) {
  sqlite3* db = writer_db.get();
  sqlite3_stmt* s = insert.get();
  const size_t count = end - begin;
  const char* step = "BEGIN";
  int rc = Exec("BEGIN IMMEDIATE");
  for (size_t i = begin; i < end && rc == SQLITE_OK; ++i) {
    const FlowRecord& r = records[i];
    const std::string name_rev = ReversedName(r.name);
    sqlite3_bind_int64(s, 1, r.time_us);
    BindText(s, 2, r.protocol);
    BindText(s, 3, r.direction);
    BindText(s, 4, r.src);
    sqlite3_bind_int(s, 5, r.src_port);
    BindText(s, 6, r.dst);
    sqlite3_bind_int(s, 7, r.dst_port);
    if (r.uid) {
      sqlite3_bind_int64(s, 8, *r.uid);
    } else {
      sqlite3_bind_null(s, 8);
    }
    BindText(s, 9, r.user);
    if (r.pid) {
      sqlite3_bind_int64(s, 10, *r.pid);
    } else {
      sqlite3_bind_null(s, 10);
    }
    BindText(s, 11, r.exe);
    BindText(s, 12, r.unit);
    BindText(s, 13, r.name);
    BindText(s, 14, name_rev);
    BindText(s, 15, r.action);
    BindText(s, 16, r.rule);
    BindText(s, 17, r.reason);
    step = "INSERT";
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  sqlite3_clear_bindings(s);  // the bound texts point into records about to be freed
  if (rc == SQLITE_OK) {
    step = "COMMIT";
    rc = Exec("COMMIT");
  }
  if (rc != SQLITE_OK) {
    NoteWriteFailure(rc, step, count);
    // A full disk or I/O error may already have rolled the transaction back.
    if (!sqlite3_get_autocommit(db)) Exec("ROLLBACK");
    return;
  }
  written.fetch_add(count, std::memory_order_relaxed);
  ++batches_since_maintenance;
  if (failing) {
    TG_LOG_NOTICE("%s: writing again, after %llu records could not be written", Where().c_str(),
                  static_cast<unsigned long long>(failing_since_dropped));
    failing = false;
  }
}

void FlowLog::Impl::NoteWriteFailure(int rc, const char* step, size_t count) {
  dropped_write_error.fetch_add(count, std::memory_order_relaxed);
  // One line per run of failures, not per batch: a full disk would otherwise flood the journal
  // that shares the disk.
  if (!failing) {
    failing = true;
    failing_since_dropped = 0;
    TG_LOG_WARNING("%s: %s failed: %s; dropping records (counted) until it works again",
                   Where().c_str(), step, SqliteMessage(writer_db.get(), rc).c_str());
  }
  failing_since_dropped += count;
}

void FlowLog::Impl::Maintain() {
  batches_since_maintenance = 0;
  next_maintenance = std::chrono::steady_clock::now() + kMaintenanceInterval;
  more_to_prune = false;
  const uint64_t before = pruned.load(std::memory_order_relaxed);
  if (options.max_age.count() > 0) PruneByAge();
  if (options.max_bytes > 0) PruneBySize();
  if (pruned.load(std::memory_order_relaxed) != before) {
    // Give the freed pages back to the file system, then let a checkpoint copy the smaller
    // database into the main file (which truncates it); PASSIVE never waits for readers.
    Exec("PRAGMA incremental_vacuum");
    sqlite3_wal_checkpoint_v2(writer_db.get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr,
                              nullptr);
  }
}

void FlowLog::Impl::PruneByAge() {
  sqlite3_stmt* s = prune_older_than.get();
  const int64_t cutoff =
      NowUs() - std::chrono::duration_cast<std::chrono::microseconds>(options.max_age).count();
  for (int i = 0; i < kPruneChunksPerRun; ++i) {
    sqlite3_bind_int64(s, 1, cutoff);
    sqlite3_bind_int64(s, 2, kPruneChunkRows);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
      TG_LOG_DEBUG("%s: retention by age: %s", Where().c_str(),
                   SqliteMessage(writer_db.get(), rc).c_str());
      return;  // locked or full: the next run tries again
    }
    const int64_t deleted = sqlite3_changes64(writer_db.get());
    pruned.fetch_add(static_cast<uint64_t>(deleted), std::memory_order_relaxed);
    if (deleted < kPruneChunkRows) return;
  }
  more_to_prune = true;
}

void FlowLog::Impl::PruneBySize() {
  sqlite3* db = writer_db.get();
  auto page_size = PragmaInt(db, "PRAGMA page_size");
  auto page_count = PragmaInt(db, "PRAGMA page_count");
  if (!page_size || !page_count) return;
  if (static_cast<uint64_t>(*page_count * *page_size) <= options.max_bytes) return;
  const uint64_t target = options.max_bytes - options.max_bytes / kSizeHysteresisDivisor;
  sqlite3_stmt* s = prune_oldest.get();
  for (int i = 0; i < kPruneChunksPerRun; ++i) {
    // Pages in use, not the file: freed pages stay in the file until the vacuum below.
    auto count = PragmaInt(db, "PRAGMA page_count");
    auto free_pages = PragmaInt(db, "PRAGMA freelist_count");
    auto rows = PragmaInt(db, "SELECT count(*) FROM flows");
    if (!count || !free_pages || !rows) return;
    const uint64_t used = static_cast<uint64_t>((*count - *free_pages) * *page_size);
    if (used <= target || *rows == 0) return;
    // Estimate the rows to delete from the average row size; an underestimate only costs another
    // round.
    const uint64_t per_row = std::max<uint64_t>(1, used / static_cast<uint64_t>(*rows));
    const int64_t want = std::clamp<int64_t>(static_cast<int64_t>((used - target) / per_row) + 1,
                                             16, kPruneChunkRows);
    sqlite3_bind_int64(s, 1, want);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
      TG_LOG_DEBUG("%s: retention by size: %s", Where().c_str(), SqliteMessage(db, rc).c_str());
      return;
    }
    pruned.fetch_add(static_cast<uint64_t>(sqlite3_changes64(db)), std::memory_order_relaxed);
  }
  more_to_prune = true;
}

Expected<std::unique_ptr<FlowLog>> FlowLog::Open(FlowLogOptions options) {
  if (options.batch == 0) {
    return Unexpected(ErrorCode::kInvalidArgument, "flow log: batch must be at least 1");
  }
  if (options.path.empty()) {
    return Unexpected(ErrorCode::kInvalidArgument, "flow log: the path is empty");
  }
  std::unique_ptr<FlowLog> log(new FlowLog());
  log->impl_ = std::make_unique<Impl>(std::move(options));
  Impl& impl = *log->impl_;
  if (auto s = impl.OpenWriter(); !s) return Unexpected(s.error());
  if (auto s = impl.OpenReader(); !s) return Unexpected(s.error());
  impl.writer = std::thread([&impl] { impl.Run(); });
  return Expected<std::unique_ptr<FlowLog>>(std::move(log));
}

FlowLog::~FlowLog() {
  if (impl_ == nullptr || !impl_->writer.joinable()) return;
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
    impl_->drain_deadline = std::chrono::steady_clock::now() + kDrainBound;
  }
  impl_->wake.notify_one();
  impl_->writer.join();
}

void FlowLog::SetEnricher(std::function<void(FlowRecord&)> enrich) {
  std::lock_guard lock(impl_->mu);
  impl_->enricher = std::move(enrich);
}

void FlowLog::Append(FlowRecord record) {
  Impl& s = *impl_;
  s.appended.fetch_add(1, std::memory_order_relaxed);
  size_t size;
  {
    std::lock_guard lock(s.mu);
    if (s.queue.size() >= s.options.queue_limit) {
      s.dropped_queue_full.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    s.queue.push_back(std::move(record));
    size = s.queue.size();
  }
  // Only the first record (the writer may be idle) and a full batch need the writer now; the
  // rest is picked up within flush_interval without a wake-up per record.
  if (size == 1 || size == s.options.batch) s.wake.notify_one();
}

void FlowLog::Flush() {
  std::unique_lock lock(impl_->mu);
  const uint64_t ticket = ++impl_->flush_requested;
  impl_->wake.notify_one();
  impl_->flushed.wait(lock, [&] { return impl_->flush_served >= ticket; });
}

FlowLogCounters FlowLog::counters() const {
  FlowLogCounters c;
  c.appended = impl_->appended.load(std::memory_order_relaxed);
  c.written = impl_->written.load(std::memory_order_relaxed);
  c.dropped_queue_full = impl_->dropped_queue_full.load(std::memory_order_relaxed);
  c.dropped_write_error = impl_->dropped_write_error.load(std::memory_order_relaxed);
  c.pruned = impl_->pruned.load(std::memory_order_relaxed);
  return c;
}

const std::string& FlowLog::path() const { return impl_->options.path; }

Expected<std::vector<FlowRecord>> FlowLog::Query(const FlowQuery& query) const {
  const Impl& s = *impl_;
  const size_t limit = std::min(query.limit, kQueryLimitMax);
  std::vector<FlowRecord> out;
  if (limit == 0) return out;

  std::string sql = kSelectColumns;
  std::string host_rev, host_below, host_end;
  sql += " WHERE 1";
  if (query.since_us) sql += " AND time_us >= ?1";
  if (query.action) sql += " AND action = ?2";
  if (query.exe) sql += " AND exe = ?3";
  if (query.host) {
    host_rev = ReversedName(*query.host);
    // "example.com" or anything below it: reversed, "moc.elpmaxe" or the range of
    // "moc.elpmaxe." prefixes, which ends before "moc.elpmaxe/" ('/' follows '.'). A range needs
    // no LIKE escaping and uses the index.
    host_below = host_rev + ".";
    host_end = host_rev + "/";
    sql += " AND (name_rev = ?4 OR (name_rev >= ?5 AND name_rev < ?6))";
  }
  sql += " ORDER BY time_us DESC, id DESC LIMIT ?7";

  std::lock_guard lock(s.reader_mu);
  sqlite3* db = s.reader_db.get();
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &raw, nullptr);
  StmtPtr stmt(raw);
  if (rc != SQLITE_OK) {
    return Unexpected(ErrorCode::kSystem, s.Where() + ": query: " + SqliteMessage(db, rc));
  }
  if (query.since_us) sqlite3_bind_int64(raw, 1, *query.since_us);
  if (query.action) BindText(raw, 2, *query.action);
  if (query.exe) BindText(raw, 3, *query.exe);
  if (query.host) {
    BindText(raw, 4, host_rev);
    BindText(raw, 5, host_below);
    BindText(raw, 6, host_end);
  }
  sqlite3_bind_int64(raw, 7, static_cast<int64_t>(limit));

  out.reserve(std::min<size_t>(limit, 256));
  while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
    FlowRecord r;
    r.id = sqlite3_column_int64(raw, 0);
    r.time_us = sqlite3_column_int64(raw, 1);
    r.protocol = ColumnText(raw, 2);
    r.direction = ColumnText(raw, 3);
    r.src = ColumnText(raw, 4);
    r.src_port = static_cast<uint16_t>(sqlite3_column_int(raw, 5));
    r.dst = ColumnText(raw, 6);
    r.dst_port = static_cast<uint16_t>(sqlite3_column_int(raw, 7));
    if (sqlite3_column_type(raw, 8) != SQLITE_NULL) {
      r.uid = static_cast<uint32_t>(sqlite3_column_int64(raw, 8));
    }
    r.user = ColumnText(raw, 9);
    if (sqlite3_column_type(raw, 10) != SQLITE_NULL) {
      r.pid = static_cast<uint32_t>(sqlite3_column_int64(raw, 10));
    }
    r.exe = ColumnText(raw, 11);
    r.unit = ColumnText(raw, 12);
    r.name = ColumnText(raw, 13);
    r.action = ColumnText(raw, 14);
    r.rule = ColumnText(raw, 15);
    r.reason = ColumnText(raw, 16);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) {
    return Unexpected(ErrorCode::kUnavailable,
                      s.Where() + ": query: " + SqliteMessage(db, rc) + "; try again");
  }
  return out;
}

}  // namespace tollgate::flowlog
