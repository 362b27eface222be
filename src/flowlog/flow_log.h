// The flow log: every decision tollgated makes, kept in SQLite (WAL) at
// /var/lib/tollgate/flows.db for `tollgate flows` (the control API's QueryFlows). The daemon
// appends on the verdict path, so Append only enqueues: a writer thread inserts in batches, prunes
// by age and size, and when the disk is full or the database locked it counts what it could not
// write and carries on. Verdicts never wait for the log. Portable (SQLite and threads only).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace tollgate::flowlog {

struct FlowLogOptions {
  std::string path = "/var/lib/tollgate/flows.db";
  std::chrono::seconds max_age{std::chrono::hours(24 * 30)};  // older records are deleted
  uint64_t max_bytes = 256ull << 20;              // past this the oldest records are deleted
  size_t batch = 512;                             // records per transaction at most
  std::chrono::milliseconds flush_interval{500};  // a partial batch waits at most this long
  size_t queue_limit = 65536;  // records waiting; past it Append drops and counts
  // max_age 0 or max_bytes 0: no limit of that kind. batch 0 is refused by Open.
  // Tests only: caps the database at this many pages (PRAGMA max_page_count on the writer
  // connection), so a test without root can make SQLite report a full disk. 0 = no cap.
  uint32_t max_pages_for_testing = 0;
};

// One decision, flattened for the log. Times are microseconds since the Unix epoch (UTC).
struct FlowRecord {
  int64_t id = 0;  // assigned by the log
  int64_t time_us = 0;
  std::string protocol;   // tcp, udp, icmp, icmpv6
  std::string direction;  // outbound, inbound
  std::string src;
  uint16_t src_port = 0;
  std::string dst;
  uint16_t dst_port = 0;
  std::optional<uint32_t> uid;
  std::string user;
  std::optional<uint32_t> pid;
  std::string exe;
  std::string unit;
  std::string name;    // the remote end's name, when known
  std::string action;  // allow, deny, reject, inspect, fallback
  std::string rule;    // "" for the default
  std::string reason;
};

struct FlowQuery {
  std::optional<int64_t> since_us;  // records at or after
  std::optional<std::string> action;
  std::optional<std::string> exe;   // exact path
  std::optional<std::string> host;  // the name, or a name below it ("example.com" matches
                                    // "www.example.com")
  size_t limit = 100;               // newest first; at most 10000
};

// Once Flush returns, appended == written + dropped_queue_full + dropped_write_error.
struct FlowLogCounters {
  uint64_t appended = 0;  // every Append call, including those then dropped
  uint64_t written = 0;
  uint64_t dropped_queue_full = 0;
  uint64_t dropped_write_error = 0;  // disk full, database locked, I/O error
  uint64_t pruned = 0;               // deleted by retention (age or size)
};

class FlowLog {
 public:
  // Opens (creating if needed, with its directory's existing permissions) and starts the writer.
  // A new file gets mode 0600: it says who connected where. An unusable path, a file that is not
  // a flow log, or one written by a newer Tollgate (higher schema version) is an Error; the daemon
  // then runs without a log and says so.
  static Expected<std::unique_ptr<FlowLog>> Open(FlowLogOptions options);
  // Runs on the writer thread for each record before it is written, e.g. to attribute the
  // process after the verdict (the verdict path does not wait for /proc). Set before Append.
  // It must return promptly: Flush and the destructor wait for it.
  void SetEnricher(std::function<void(FlowRecord&)> enrich);

  ~FlowLog();  // writes what is queued (bounded by a few seconds), then stops the writer

  // Never blocks on I/O: enqueues, or counts a drop when the queue is full.
  void Append(FlowRecord record);
  // Reads on its own connection; safe from any thread while the writer runs.
  Expected<std::vector<FlowRecord>> Query(const FlowQuery& query) const;
  // Waits until everything appended so far is written or dropped, then applies retention
  // (tests, shutdown).
  void Flush();
  FlowLogCounters counters() const;
  const std::string& path() const;

  FlowLog(const FlowLog&) = delete;
  FlowLog& operator=(const FlowLog&) = delete;

 private:
  FlowLog() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::flowlog
