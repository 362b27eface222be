// Encoding and decoding of analysis-channel messages (proto/tollgate.fbs). Used by the channel
// client (filter side), the channel server (daemon side), tests, benchmarks and the fuzz target.
// Decoding verifies the whole buffer with the FlatBuffers Verifier before reading any field, and
// converts to the portable types of common/flow.h so nothing outside ipc/ sees FlatBuffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/flow.h"

namespace flatbuffers {
class FlatBufferBuilder;
}

namespace tollgate::ipc {

inline constexpr uint16_t kProtocolMajor = 1;
inline constexpr uint16_t kProtocolMinor = 3;
// The first minor version with FilterReport: never sent to a daemon that announced less.
inline constexpr uint16_t kFilterReportMinor = 1;
// The first with CacheScope Destination (daemon to filter) and Decided (filter to daemon).
inline constexpr uint16_t kDestinationCacheMinor = 2;
// The first with Verdict.cache_until_dns (a filter that drops such a verdict on a DNS reply) and
// FilterReport.reused.
inline constexpr uint16_t kNamedDestinationCacheMinor = 3;
// One SEQPACKET datagram. Large enough for a batch of 64 questions that each carry an inspection
// payload of a few hundred bytes; the builder starts a new message before crossing it.
inline constexpr size_t kMaxMessageBytes = 64 * 1024;
inline constexpr size_t kMaxItemsPerMessage = 1024;
inline constexpr size_t kMaxPayloadBytes = 16 * 1024;  // per question
inline constexpr size_t kMaxReasonBytes = 1024;

enum class Role : uint8_t { kUnknown = 0, kFilter = 1, kAgent = 2, kProbe = 3 };
const char* RoleName(Role role);

struct Hello {
  uint16_t major = kProtocolMajor;
  uint16_t minor = kProtocolMinor;
  Role role = Role::kUnknown;
  std::string build;
};

struct ChannelSettings {
  uint32_t question_deadline_ms = 200;
  FallbackPolicy fallback = FallbackPolicy::kFailOpen;
  uint32_t inspect_max_bytes = 2048;
};

struct Welcome {
  uint16_t major = kProtocolMajor;
  uint16_t minor = kProtocolMinor;
  std::string build;
  ChannelSettings settings;
};

struct Refused {
  std::string reason;
};
struct Goodbye {
  std::string reason;
};

using ForgetSelector = ::tollgate::ForgetSelector;  // common/flow.h

// The filter's own counters (proto/tollgate.fbs FilterReport): totals since it started, except
// pending, max_pending and the queue range. Fixed size, so the daemon keeps one per connection.
struct FilterReport {
  uint64_t packets = 0;
  uint64_t questions = 0;
  uint64_t answered = 0;
  uint64_t fallbacks_deadline = 0;
  uint64_t fallbacks_daemon_away = 0;
  uint64_t fallbacks_overflow = 0;
  uint64_t late_answers = 0;
  uint32_t pending = 0;
  uint32_t max_pending = 0;
  uint64_t queue_lost = 0;
  uint64_t queue_enobufs = 0;
  uint64_t verdict_errors = 0;
  uint64_t channel_dropped = 0;
  uint16_t first_queue = 0;
  uint16_t last_queue = 0;
  bool fail_open = false;  // as the wire's default
  uint64_t reused = 0;     // (1.3) new flows decided from a kept verdict

  uint64_t fallbacks() const {
    return fallbacks_deadline + fallbacks_daemon_away + fallbacks_overflow;
  }
  bool operator==(const FilterReport&) const = default;
};

// Version rule: same major is compatible; a different major is refused with this reason.
Status CheckPeerVersion(uint16_t peer_major, uint16_t peer_minor);

// Receives decoded items in message order. Views (spans, string_views) are valid only during the
// call. The FlowQuestion/Verdict objects are reused between calls; copy what you keep.
class ItemVisitor {
 public:
  virtual ~ItemVisitor() = default;
  virtual void OnHello(const Hello&) {}
  virtual void OnWelcome(const Welcome&) {}
  virtual void OnRefused(const Refused&) {}
  virtual void OnGoodbye(const Goodbye&) {}
  virtual void OnQuestion(const FlowQuestion&) {}
  virtual void OnVerdict(const Verdict&) {}
  virtual void OnDnsObservation(std::span<const uint8_t> reply) { (void)reply; }
  virtual void OnForget(const ForgetSelector&) {}
  virtual void OnPing(uint64_t token) { (void)token; }
  virtual void OnPong(uint64_t token) { (void)token; }
  virtual void OnFilterReport(const FilterReport&) {}
  virtual void OnDecided(const FlowQuestion& question, Action action) {
    (void)question;
    (void)action;
  }
};

// Verifies `bytes` and calls the visitor for each item. Any failure (too large, not a verifiable
// Message, an item whose fields break our bounds) is returned before the visitor sees anything,
// so a bad message is rejected whole.
Status DecodeMessage(std::span<const uint8_t> bytes, ItemVisitor& visitor);

// Builds one Message out of items. Reused across messages: Finish() returns a view valid until the
// next Add*/Reset. Keeps the finished size under kMaxMessageBytes: ask WouldFit() first.
class MessageBuilder {
 public:
  MessageBuilder();
  ~MessageBuilder();
  MessageBuilder(const MessageBuilder&) = delete;
  MessageBuilder& operator=(const MessageBuilder&) = delete;

  void AddHello(const Hello& hello);
  void AddWelcome(const Welcome& welcome);
  void AddRefused(std::string_view reason);
  void AddGoodbye(std::string_view reason);
  void AddQuestion(const FlowQuestion& question);
  void AddVerdict(const Verdict& verdict);
  void AddDnsObservation(std::span<const uint8_t> reply);
  void AddForget(const ForgetSelector& selector);
  void AddPing(uint64_t token);
  void AddPong(uint64_t token);
  void AddFilterReport(const FilterReport& report);
  void AddDecided(const FlowQuestion& question, Action action);

  size_t item_count() const { return types_.size(); }
  bool empty() const { return types_.empty(); }
  // Whether an item of about `item_bytes` more still fits in one message.
  bool WouldFit(size_t item_bytes) const;
  static size_t EstimateQuestionBytes(const FlowQuestion& q) { return 96 + q.payload.size(); }
  static size_t EstimateVerdictBytes(const Verdict& v) { return 64 + v.reason.size(); }
  static constexpr size_t kFilterReportBytes = 176;

  std::span<const uint8_t> Finish();
  void Reset();

 private:
  uint32_t BuildQuestion(const FlowQuestion& q);  // the offset of a FlowQuestion table
  void Push(uint8_t type, uint32_t offset);

  std::unique_ptr<flatbuffers::FlatBufferBuilder> fbb_;
  std::vector<uint8_t> types_;
  std::vector<uint32_t> offsets_;
  bool finished_ = false;
};

}  // namespace tollgate::ipc
