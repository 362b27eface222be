#include "flow/verdict_cache.h"

#include <gtest/gtest.h>

namespace tollgate::flow {
namespace {

using std::chrono::seconds;

FlowQuestion Outbound(uint8_t last_octet, uint16_t src_port, uint16_t dst_port, uint32_t uid = 1000,
                      uint64_t id = 1) {
  FlowQuestion q;
  q.id = id;
  q.tuple.src = IpAddress::V4(127, 0, 0, 1);
  q.tuple.dst = IpAddress::V4(10, 0, 0, last_octet);
  q.tuple.src_port = src_port;
  q.tuple.dst_port = dst_port;
  q.tuple.protocol = ipproto::kTcp;
  q.direction = Direction::kOutbound;
  q.uid = uid;
  return q;
}

class VerdictCacheTest : public ::testing::Test {
 protected:
  MonoTime t0_{seconds(100)};
  VerdictCache cache_{8, FlowKeyHash(1, 2)};
};

TEST_F(VerdictCacheTest, ANewFlowToTheSameDestinationReusesTheVerdict) {
  cache_.Insert(Outbound(1, 40000, 443), Action::kReject, seconds(60), t0_);
  EXPECT_EQ(cache_.Find(Outbound(1, 40001, 443), t0_ + seconds(1)), Action::kReject)
      << "another source port is the same destination";
  EXPECT_EQ(cache_.counters().hits, 1u);
}

TEST_F(VerdictCacheTest, EveryOtherPartOfTheKeyMisses) {
  cache_.Insert(Outbound(1, 40000, 443), Action::kAllow, seconds(60), t0_);
  EXPECT_FALSE(cache_.Find(Outbound(2, 40000, 443), t0_)) << "other remote address";
  EXPECT_FALSE(cache_.Find(Outbound(1, 40000, 80), t0_)) << "other destination port";
  EXPECT_FALSE(cache_.Find(Outbound(1, 40000, 443, 1001), t0_)) << "other uid";
  FlowQuestion udp = Outbound(1, 40000, 443);
  udp.tuple.protocol = ipproto::kUdp;
  EXPECT_FALSE(cache_.Find(udp, t0_)) << "other protocol";
  // Inbound from 10.0.0.1 to local port 443: the remote is the source, and the direction differs.
  FlowQuestion in = Outbound(1, 40000, 443);
  std::swap(in.tuple.src, in.tuple.dst);
  in.direction = Direction::kInbound;
  EXPECT_FALSE(cache_.Find(in, t0_)) << "other direction";
  FlowQuestion inspected = Outbound(1, 40000, 443);
  inspected.payload = {0x16, 0x03, 0x01};
  EXPECT_FALSE(cache_.Find(inspected, t0_)) << "a question with payload was asked for a reason";
  EXPECT_EQ(cache_.counters().hits, 0u);
}

TEST_F(VerdictCacheTest, InboundIsKeyedByTheRemoteSource) {
  FlowQuestion in = Outbound(1, 40000, 22);
  std::swap(in.tuple.src, in.tuple.dst);  // 10.0.0.1 -> 127.0.0.1:22
  in.direction = Direction::kInbound;
  cache_.Insert(in, Action::kDeny, seconds(60), t0_);
  FlowQuestion again = in;
  again.tuple.src_port = 50000;
  EXPECT_EQ(cache_.Find(again, t0_), Action::kDeny);
}

TEST_F(VerdictCacheTest, ExpiresAfterItsTtl) {
  cache_.Insert(Outbound(1, 1, 443), Action::kAllow, seconds(5), t0_);
  EXPECT_TRUE(cache_.Find(Outbound(1, 2, 443), t0_ + seconds(4)));
  EXPECT_FALSE(cache_.Find(Outbound(1, 3, 443), t0_ + seconds(5)));
  EXPECT_EQ(cache_.size(), 0u);
  EXPECT_EQ(cache_.counters().expired, 1u);
}

TEST_F(VerdictCacheTest, InspectAndZeroTtlAreNeverKept) {
  cache_.Insert(Outbound(1, 1, 443), Action::kInspect, seconds(5), t0_);
  cache_.Insert(Outbound(2, 1, 443), Action::kAllow, seconds(0), t0_);
  EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(VerdictCacheTest, BoundedTheOldestGoesFirst) {
  for (uint8_t i = 1; i <= 8; ++i)
    cache_.Insert(Outbound(i, 1, 443), Action::kAllow, seconds(60), t0_);
  cache_.Insert(Outbound(9, 1, 443), Action::kAllow, seconds(60), t0_);
  EXPECT_EQ(cache_.size(), 8u);
  EXPECT_EQ(cache_.counters().evicted, 1u);
  EXPECT_FALSE(cache_.Find(Outbound(1, 2, 443), t0_)) << "the oldest was evicted";
  EXPECT_TRUE(cache_.Find(Outbound(9, 2, 443), t0_));
  // Re-inserting one key many times never grows the cache or its order past the bound.
  for (int i = 0; i < 1000; ++i)
    cache_.Insert(Outbound(9, 1, 443), Action::kDeny, seconds(60), t0_);
  EXPECT_EQ(cache_.size(), 8u);
  EXPECT_EQ(cache_.Find(Outbound(9, 2, 443), t0_), Action::kDeny) << "the newest verdict wins";
}

TEST_F(VerdictCacheTest, ForgetAllOrBySelector) {
  cache_.Insert(Outbound(1, 1, 443), Action::kAllow, seconds(60), t0_);
  cache_.Insert(Outbound(2, 1, 443), Action::kAllow, seconds(60), t0_);
  cache_.Insert(Outbound(2, 1, 80), Action::kAllow, seconds(60), t0_);
  ForgetSelector by_address;
  by_address.dst = IpAddress::V4(10, 0, 0, 2);
  by_address.dst_prefix = 32;
  by_address.dst_port = 443;
  cache_.Forget(by_address);
  EXPECT_TRUE(cache_.Find(Outbound(1, 2, 443), t0_));
  EXPECT_FALSE(cache_.Find(Outbound(2, 2, 443), t0_));
  EXPECT_TRUE(cache_.Find(Outbound(2, 2, 80), t0_)) << "other port kept";
  ForgetSelector prefix;
  prefix.dst = IpAddress::V4(10, 0, 0, 0);
  prefix.dst_prefix = 24;
  cache_.Forget(prefix);
  EXPECT_EQ(cache_.size(), 0u);
  cache_.Insert(Outbound(3, 1, 443), Action::kAllow, seconds(60), t0_);
  ForgetSelector all;
  all.all = true;
  cache_.Forget(all);
  EXPECT_EQ(cache_.size(), 0u);
  EXPECT_EQ(cache_.counters().forgotten, 4u);
}

TEST_F(VerdictCacheTest, ADnsReplyNamingTheAddressEndsAVerdictThatUsedNames) {
  cache_.Insert(Outbound(1, 1, 443, 1000, /*id=*/5), Action::kDeny, seconds(60), t0_,
                /*until_dns=*/true);
  cache_.Insert(Outbound(1, 1, 80, 1000, /*id=*/6), Action::kAllow, seconds(60), t0_);
  cache_.Insert(Outbound(2, 1, 443, 1000, /*id=*/7), Action::kDeny, seconds(60), t0_, true);
  EXPECT_EQ(cache_.Find(Outbound(1, 2, 443), t0_), Action::kDeny);
  // A reply naming 10.0.0.1, passed on after question 7.
  cache_.NamedByDns(IpAddress::V4(10, 0, 0, 1), 7);
  EXPECT_FALSE(cache_.Find(Outbound(1, 3, 443), t0_)) << "the daemon may know another name now";
  EXPECT_EQ(cache_.Find(Outbound(1, 3, 80), t0_), Action::kAllow)
      << "a verdict that used no names does not depend on them";
  EXPECT_EQ(cache_.Find(Outbound(2, 3, 443), t0_), Action::kDeny) << "other address kept";
  EXPECT_EQ(cache_.counters().renamed, 1u);
  // Asked after the reply (question 8): it was decided with the new names and is kept.
  cache_.Insert(Outbound(1, 1, 443, 1000, /*id=*/8), Action::kAllow, seconds(60), t0_, true);
  EXPECT_EQ(cache_.Find(Outbound(1, 4, 443), t0_), Action::kAllow);
}

TEST_F(VerdictCacheTest, AnAnswerInFlightWhileAReplyNamedItsAddressIsNotKept) {
  // Question 3 asked; then a reply names 10.0.0.1 (after question 4); then 3's answer arrives.
  cache_.NamedByDns(IpAddress::V4(10, 0, 0, 1), 4);
  cache_.Insert(Outbound(1, 1, 443, 1000, /*id=*/3), Action::kDeny, seconds(60), t0_, true);
  EXPECT_EQ(cache_.size(), 0u);
  EXPECT_FALSE(cache_.Find(Outbound(1, 2, 443), t0_));
  EXPECT_EQ(cache_.counters().renamed, 1u);
  // The same late answer for a verdict that used no names is kept.
  cache_.Insert(Outbound(1, 1, 443, 1000, /*id=*/3), Action::kDeny, seconds(60), t0_);
  EXPECT_EQ(cache_.Find(Outbound(1, 2, 443), t0_), Action::kDeny);
}

TEST_F(VerdictCacheTest, TheRecordOfNamedAddressesIsBoundedAndErrsTowardsAsking) {
  VerdictCache small(8, FlowKeyHash(1, 2), /*max_named=*/4);
  small.Insert(Outbound(1, 1, 443, 1000, /*id=*/10), Action::kAllow, seconds(60), t0_, true);
  small.Insert(Outbound(2, 1, 443, 1000, /*id=*/30), Action::kAllow, seconds(60), t0_, true);
  // Five other addresses named after question 20: the first record (20) goes past the bound,
  // so every until_dns verdict asked at or before question 20 counts as stale.
  for (uint8_t i = 100; i < 105; ++i) small.NamedByDns(IpAddress::V4(10, 0, 1, i), 20);
  EXPECT_FALSE(small.Find(Outbound(1, 2, 443), t0_)) << "asked before the forgotten record";
  EXPECT_EQ(small.Find(Outbound(2, 2, 443), t0_), Action::kAllow) << "asked after it";
  // Naming one address again and again never grows the record past the bound.
  for (uint64_t id = 40; id < 2000; ++id) small.NamedByDns(IpAddress::V4(10, 0, 1, 100), id);
  EXPECT_EQ(small.Find(Outbound(2, 3, 443), t0_), Action::kAllow);
  EXPECT_LE(small.named_size(), 4u);
  EXPECT_LE(small.named_order_size(), 2 * 4u + 16);
}

// A flood of replies naming the same addresses with no question in between (a resolver that
// repeats itself, or a hostile one) costs nothing and records nothing more.
TEST_F(VerdictCacheTest, RepliesRepeatingThemselvesDoNotGrowTheRecord) {
  for (int i = 0; i < 100'000; ++i) {
    cache_.NamedByDns(IpAddress::V4(10, 0, 2, static_cast<uint8_t>(i % 3)), 77);
  }
  EXPECT_EQ(cache_.named_size(), 3u);
  EXPECT_EQ(cache_.named_order_size(), 3u);
}

}  // namespace
}  // namespace tollgate::flow
