#include "flow/flow_table.h"

#include <gtest/gtest.h>

#include <vector>

namespace tollgate::flow {
namespace {

using std::chrono::milliseconds;

struct RecordingSink : PacketSink {
  std::vector<std::pair<uint32_t, Release>> released;
  void ReleasePacket(const PacketRef& p, Release how) override {
    released.emplace_back(p.packet_id, how);
  }
};

ParsedPacket Tcp(uint16_t src_port, std::span<const uint8_t> payload = {}) {
  ParsedPacket p;
  p.tuple.src = IpAddress::V4(127, 0, 0, 1);
  p.tuple.dst = IpAddress::V4(127, 0, 0, 2);
  p.tuple.src_port = src_port;
  p.tuple.dst_port = 443;
  p.tuple.protocol = ipproto::kTcp;
  p.has_transport = true;
  p.payload = payload;
  return p;
}

class FlowTableTest : public ::testing::Test {
 protected:
  FlowTable Make(FlowTableOptions o = {}) { return FlowTable(o, sink_); }
  std::optional<FlowQuestion> Packet(FlowTable& t, const ParsedPacket& p) {
    return t.OnPacket(p, PacketRef{0, ++packet_id_, 0},
                      PacketContext{Direction::kOutbound, 1, 1000, 100}, clock_.Now());
  }
  RecordingSink sink_;
  FakeClock clock_;
  uint32_t packet_id_ = 0;
};

TEST_F(FlowTableTest, RetransmittedSynJoinsThePendingQuestion) {
  FlowTable t = Make();
  auto q = Packet(t, Tcp(40000));
  ASSERT_TRUE(q.has_value());
  EXPECT_NE(q->id, 0u);
  EXPECT_EQ(q->uid, 1000u);
  EXPECT_EQ(q->tuple.dst_port, 443);
  EXPECT_FALSE(Packet(t, Tcp(40000)).has_value()) << "a retransmit asks nothing new";
  EXPECT_FALSE(Packet(t, Tcp(40000)).has_value());
  EXPECT_TRUE(sink_.released.empty()) << "nothing is released before the verdict";
  t.OnDecision(q->id, Action::kAllow, 0, CacheScope::kFlow, clock_.Now());
  ASSERT_EQ(sink_.released.size(), 3u);
  for (auto& [id, how] : sink_.released) EXPECT_EQ(how, Release::kAllow) << id;
  EXPECT_EQ(t.counters().joined, 2u);
  EXPECT_EQ(t.pending(), 0u);
}

TEST_F(FlowTableTest, DistinctFlowsGetDistinctQuestions) {
  FlowTable t = Make();
  auto a = Packet(t, Tcp(40000));
  auto b = Packet(t, Tcp(40001));
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->id, b->id);
  t.OnDecision(b->id, Action::kReject, 0, CacheScope::kFlow, clock_.Now());
  ASSERT_EQ(sink_.released.size(), 1u);
  EXPECT_EQ(sink_.released[0], (std::pair<uint32_t, Release>{2, Release::kReject}));
  EXPECT_EQ(t.pending(), 1u);
}

TEST_F(FlowTableTest, DenyIsRememberedForRetransmitsUntilItsTtl) {
  FlowTableOptions o;
  o.remembered_verdict_ttl = milliseconds(1000);
  FlowTable t = Make(o);
  auto q = Packet(t, Tcp(40000));
  t.OnDecision(q->id, Action::kDeny, 0, CacheScope::kFlow, clock_.Now());
  EXPECT_FALSE(Packet(t, Tcp(40000)).has_value()) << "the retransmitted SYN is not asked about";
  ASSERT_EQ(sink_.released.size(), 2u);
  EXPECT_EQ(sink_.released[1].second, Release::kDeny);
  EXPECT_EQ(t.counters().remembered_hits, 1u);
  clock_.Advance(milliseconds(1000));
  (void)t.OnTimer(clock_.Now());
  EXPECT_EQ(t.remembered(), 0u);
  EXPECT_TRUE(Packet(t, Tcp(40000)).has_value()) << "after the TTL the flow is asked about again";
}

TEST_F(FlowTableTest, FallbackDecisionsStampNothingAndAreNotRemembered) {
  FlowTable t = Make();
  auto a = Packet(t, Tcp(1));
  auto b = Packet(t, Tcp(2));
  t.OnDecision(a->id, Action::kAllow, 0, CacheScope::kNone, clock_.Now());
  t.OnDecision(b->id, Action::kDeny, 0, CacheScope::kNone, clock_.Now());
  EXPECT_EQ(sink_.released[0].second, Release::kPass);
  EXPECT_EQ(sink_.released[1].second, Release::kDrop);
  EXPECT_EQ(t.remembered(), 0u);
  EXPECT_TRUE(Packet(t, Tcp(2)).has_value()) << "a fail_closed drop is asked about again";
}

TEST_F(FlowTableTest, DestinationScopedVerdictsStampTheFlowLikeFlowScoped) {
  FlowTable t = Make();
  auto a = Packet(t, Tcp(1));
  auto b = Packet(t, Tcp(2));
  t.OnDecision(a->id, Action::kAllow, 0, CacheScope::kDestination, clock_.Now());
  t.OnDecision(b->id, Action::kReject, 0, CacheScope::kDestination, clock_.Now());
  EXPECT_EQ(sink_.released[0].second, Release::kAllow);
  EXPECT_EQ(sink_.released[1].second, Release::kReject);
  EXPECT_EQ(t.remembered(), 1u) << "the reject is remembered for retransmits, as for kFlow";
}

TEST_F(FlowTableTest, OverflowFollowsThePolicyAndIsCounted) {
  FlowTableOptions o;
  o.max_pending = 2;
  o.fallback = FallbackPolicy::kFailClosed;
  FlowTable t = Make(o);
  ASSERT_TRUE(Packet(t, Tcp(1)));
  ASSERT_TRUE(Packet(t, Tcp(2)));
  EXPECT_FALSE(Packet(t, Tcp(3)).has_value());
  ASSERT_EQ(sink_.released.size(), 1u);
  EXPECT_EQ(sink_.released[0].second, Release::kDrop);
  EXPECT_EQ(t.counters().overflow, 1u);
  EXPECT_EQ(t.pending(), 2u);
}

TEST_F(FlowTableTest, HeldPacketsAreBoundedPerFlow) {
  FlowTableOptions o;
  o.max_held_per_flow = 3;
  FlowTable t = Make(o);
  auto q = Packet(t, Tcp(1));
  for (int i = 0; i < 5; ++i) (void)Packet(t, Tcp(1));
  EXPECT_EQ(t.counters().held_overflow, 3u);
  t.OnDecision(q->id, Action::kAllow, 0, CacheScope::kFlow, clock_.Now());
  size_t allowed = 0;
  for (auto& [id, how] : sink_.released) allowed += how == Release::kAllow;
  EXPECT_EQ(allowed, 3u);
  EXPECT_EQ(sink_.released.size(), 6u) << "every packet is released exactly once";
}

TEST_F(FlowTableTest, InspectLetsTheHandshakeThroughThenAsksWithTheFirstBytes) {
  FlowTable t = Make();
  auto q = Packet(t, Tcp(1));
  t.OnDecision(q->id, Action::kInspect, 7, CacheScope::kFlow, clock_.Now());
  ASSERT_EQ(sink_.released.size(), 1u);
  EXPECT_EQ(sink_.released[0].second, Release::kInspect);
  EXPECT_FALSE(Packet(t, Tcp(1)).has_value()) << "bare ACK";
  EXPECT_EQ(sink_.released.back().second, Release::kPass);
  const uint8_t hello1[] = {'h', 'e', 'l'};
  const uint8_t hello2[] = {'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'};
  EXPECT_FALSE(Packet(t, Tcp(1, hello1)).has_value()) << "3 of 7 bytes: keep collecting";
  auto again = Packet(t, Tcp(1, hello2));
  ASSERT_TRUE(again.has_value());
  EXPECT_NE(again->id, q->id);
  EXPECT_EQ(std::string(again->payload.begin(), again->payload.end()), "hello world")
      << "the whole held packet, not just the 7 bytes asked for";
  size_t before = sink_.released.size();
  t.OnDecision(again->id, Action::kDeny, 0, CacheScope::kFlow, clock_.Now());
  ASSERT_EQ(sink_.released.size(), before + 2);
  EXPECT_EQ(sink_.released.back().second, Release::kDeny);
  EXPECT_EQ(t.counters().inspections, 1u);
  EXPECT_EQ(t.pending(), 0u);
}

TEST_F(FlowTableTest, InspectKeepsNoMoreThanInspectMaxBytes) {
  FlowTableOptions o;
  o.inspect_max_bytes = 5;
  FlowTable t = Make(o);
  auto q = Packet(t, Tcp(1));
  t.OnDecision(q->id, Action::kInspect, 1, CacheScope::kFlow, clock_.Now());
  const uint8_t first[] = {'a', 'b', 'c'};
  auto again = Packet(t, Tcp(1, first));
  ASSERT_TRUE(again.has_value()) << "inspect(1): the first data packet is enough to ask";
  EXPECT_EQ(again->payload.size(), 3u);
  t.OnDecision(again->id, Action::kInspect, 5, CacheScope::kFlow, clock_.Now());
  const uint8_t second[] = {'d', 'e', 'f', 'g'};
  auto third = Packet(t, Tcp(1, second));
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(std::string(third->payload.begin(), third->payload.end()), "abcde");
}

TEST_F(FlowTableTest, InspectAsksWithWhatItHasWhenTheWaitIsOver) {
  FlowTableOptions o;
  o.inspect_wait = milliseconds(100);
  FlowTable t = Make(o);
  auto q = Packet(t, Tcp(1));
  t.OnDecision(q->id, Action::kInspect, 100, CacheScope::kFlow, clock_.Now());
  EXPECT_FALSE(t.NextTimer().has_value()) << "nothing to wait for before data arrives";
  const uint8_t get[] = {'G', 'E', 'T'};
  EXPECT_FALSE(Packet(t, Tcp(1, get)).has_value());
  ASSERT_TRUE(t.NextTimer().has_value());
  EXPECT_EQ(*t.NextTimer(), clock_.Now() + milliseconds(100));
  clock_.Advance(milliseconds(99));
  EXPECT_TRUE(t.OnTimer(clock_.Now()).empty());
  clock_.Advance(milliseconds(1));
  auto qs = t.OnTimer(clock_.Now());
  ASSERT_EQ(qs.size(), 1u);
  EXPECT_EQ(qs[0].payload.size(), 3u);
  t.OnDecision(qs[0].id, Action::kAllow, 0, CacheScope::kFlow, clock_.Now());
  EXPECT_EQ(sink_.released.back().second, Release::kAllow);
}

TEST_F(FlowTableTest, InspectThatAsksForNoMoreBytesGetsTheFallbackNotALoop) {
  FlowTable t = Make();
  auto q = Packet(t, Tcp(1));
  t.OnDecision(q->id, Action::kInspect, 3, CacheScope::kFlow, clock_.Now());
  const uint8_t get[] = {'G', 'E', 'T'};
  auto again = Packet(t, Tcp(1, get));
  ASSERT_TRUE(again.has_value());
  t.OnDecision(again->id, Action::kInspect, 3, CacheScope::kFlow, clock_.Now());
  EXPECT_EQ(sink_.released.back().second, Release::kPass);  // fail_open fallback
  EXPECT_EQ(t.pending(), 0u);
}

TEST_F(FlowTableTest, UnknownDecisionIsCountedAndHarmless) {
  FlowTable t = Make();
  t.OnDecision(999, Action::kAllow, 0, CacheScope::kFlow, clock_.Now());
  EXPECT_EQ(t.counters().unknown_decisions, 1u);
  EXPECT_TRUE(sink_.released.empty());
}

TEST_F(FlowTableTest, ReleaseAllGivesEveryHeldPacketTheFallback) {
  FlowTableOptions o;
  o.fallback = FallbackPolicy::kFailClosed;
  FlowTable t = Make(o);
  (void)Packet(t, Tcp(1));
  (void)Packet(t, Tcp(1));
  (void)Packet(t, Tcp(2));
  t.ReleaseAll();
  ASSERT_EQ(sink_.released.size(), 3u);
  for (auto& [id, how] : sink_.released) EXPECT_EQ(how, Release::kDrop);
  EXPECT_EQ(t.pending(), 0u);
}

}  // namespace
}  // namespace tollgate::flow
