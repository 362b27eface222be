// The filter's memory of flows between their first packet and their verdict: the Linux
// counterpart of NEFilterDataProvider's paused flows. tollgate-filter feeds it every queued packet
// and every decision; it says which question to ask and how to release each held packet, through
// a PacketSink (NFQUEUE verdicts in production, a recorder in tests). Portable: no OS calls.
//
// Guarantees:
//   - one question per flow: a retransmitted SYN or any further packet of a pending flow joins the
//     pending question and is released with the flow's verdict (never with a default by accident);
//   - a deny or reject is remembered (the kernel forgets it: a dropped first packet takes its
//     conntrack entry with it), so the retransmitted SYN or next datagram gets the same verdict
//     without another question;
//   - inspect(n): the handshake passes, the client's first payload packets are held until they
//     carry at least n bytes or inspect_wait ends, then the flow is asked about again with every
//     byte of those packets (up to inspect_max_bytes); so inspect(1) means "ask again with the
//     first data packet, whole";
//   - memory is bounded by max_pending flows and max_held packets per flow; past the bounds the
//     fallback policy applies and is counted.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/flow.h"
#include "flow/packet.h"

namespace tollgate::flow {

// How one packet leaves the filter.
enum class Release : uint8_t {
  kAllow,    // stamp "allow" on the flow (kernel passes the rest)
  kPass,     // let this packet through, stamp nothing (fallback, or mid-inspection)
  kDeny,     // stamp "deny" and drop
  kDrop,     // drop this packet, stamp nothing
  kReject,   // stamp "reject": the kernel answers with TCP RST / ICMP unreachable
  kInspect,  // stamp "inspect": let the handshake through, queue the client's data
};
const char* ReleaseName(Release r);

struct PacketRef {
  uint32_t queue = 0;
  uint32_t packet_id = 0;
  uint32_t mark = 0;
};

class PacketSink {
 public:
  virtual ~PacketSink() = default;
  virtual void ReleasePacket(const PacketRef& packet, Release how) = 0;
};

struct PacketContext {
  Direction direction = Direction::kOutbound;
  uint32_t iface = 0;
  uint32_t uid = kUnknownId;
  uint32_t gid = kUnknownId;
};

struct FlowTableOptions {
  size_t max_pending = 65536;
  size_t max_held_per_flow = 32;
  FallbackPolicy fallback = FallbackPolicy::kFailOpen;
  uint32_t inspect_max_bytes = 2048;
  Duration inspect_wait{std::chrono::milliseconds(100)};
  Duration remembered_verdict_ttl{std::chrono::seconds(30)};
  size_t max_remembered = 65536;
};

struct FlowTableCounters {
  uint64_t packets = 0;
  uint64_t new_flows = 0;
  uint64_t joined = 0;  // packets that joined a pending question (retransmits, bursts)
  uint64_t questions = 0;
  uint64_t remembered_hits = 0;  // packets decided from a remembered deny/reject
  uint64_t overflow = 0;         // flows past max_pending: fallback applied
  uint64_t held_overflow = 0;    // packets past max_held_per_flow: dropped (TCP/UDP retransmit)
  uint64_t released[6] = {};     // by Release
  uint64_t inspections = 0;      // flows that were asked again with payload
  uint64_t unknown_decisions = 0;
};

class FlowTable {
 public:
  FlowTable(FlowTableOptions options, PacketSink& sink);

  // A queued packet (not a DNS observation). Returns the question to ask, if this packet makes
  // one; its id is ours (unique, non-zero) and must be used when asking.
  std::optional<FlowQuestion> OnPacket(const ParsedPacket& packet, const PacketRef& ref,
                                       const PacketContext& context, MonoTime now);

  // The answer to a question we returned (from the daemon or the channel's fallback). `cache` is
  // the decision's cache scope: kNone (fallbacks) stamps nothing on the flow; kFlow and
  // kDestination stamp it (keeping a kDestination verdict for other flows is the caller's).
  void OnDecision(uint64_t question_id, Action action, uint32_t inspect_bytes, CacheScope cache,
                  MonoTime now);

  // Flows whose inspection wait is over are asked again with what they sent; forgets expired
  // remembered verdicts. Returns the questions to ask.
  std::vector<FlowQuestion> OnTimer(MonoTime now);
  std::optional<MonoTime> NextTimer() const;

  // Releases every held packet with the fallback (shutdown, or the channel is gone for good).
  void ReleaseAll();

  size_t pending() const { return flows_.size(); }
  // The id of the newest question asked (0 before the first); ids only grow.
  uint64_t last_question_id() const { return next_question_id_ - 1; }
  size_t remembered() const { return remembered_.size(); }
  const FlowTableCounters& counters() const { return counters_; }

 private:
  enum class State : uint8_t { kAsking, kCollecting };
  struct Flow {
    State state = State::kAsking;
    uint64_t question_id = 0;
    FlowQuestion question;  // what we asked, reused for the inspection round
    std::vector<PacketRef> held;
    uint32_t want_bytes = 0;  // inspection: bytes requested
    bool asked_with_payload = false;
    MonoTime collect_until{};  // inspection: ask with what we have at this time
  };
  struct Remembered {
    Release how;
    MonoTime until;
  };

  void Hold(Flow& flow, const PacketRef& ref);
  void ReleaseHeld(Flow& flow, Release how);
  void Send(const PacketRef& ref, Release how);
  FlowQuestion AskAgainWithPayload(Flow& flow);
  Release FallbackRelease() const;
  void Remember(const FlowKey& key, Release how, MonoTime now);

  FlowTableOptions options_;
  PacketSink& sink_;
  std::unordered_map<FlowKey, Flow, FlowKeyHash> flows_;
  std::unordered_map<uint64_t, FlowKey> by_question_;
  // Flows collecting inspection bytes with packets held: the only ones with a timer, kept apart
  // so a timer tick does not walk every pending flow.
  std::unordered_map<FlowKey, MonoTime, FlowKeyHash> collecting_;
  std::unordered_map<FlowKey, Remembered, FlowKeyHash> remembered_;
  std::deque<std::pair<MonoTime, FlowKey>> remembered_order_;
  uint64_t next_question_id_ = 1;
  FlowTableCounters counters_;
};

}  // namespace tollgate::flow
