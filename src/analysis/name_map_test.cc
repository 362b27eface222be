#include "analysis/name_map.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tollgate::analysis {
namespace {

using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

IpAddress Ip(std::string_view text) { return IpAddress::Parse(text).value(); }

DnsRecord A(std::string name, std::string_view ip, uint32_t ttl) {
  DnsRecord r;
  r.name = std::move(name);
  r.address = Ip(ip);
  r.type = r.address.family == 4 ? DnsRecord::Type::kA : DnsRecord::Type::kAAAA;
  r.ttl = ttl;
  return r;
}

DnsRecord Cname(std::string name, std::string target, uint32_t ttl) {
  DnsRecord r;
  r.name = std::move(name);
  r.type = DnsRecord::Type::kCname;
  r.target = std::move(target);
  r.ttl = ttl;
  return r;
}

DnsReply Reply(std::string question, std::vector<DnsRecord> answers) {
  DnsReply reply;
  reply.question = std::move(question);
  reply.answers = std::move(answers);
  return reply;
}

TEST(NameMap, MapsAAndAaaa) {
  FakeClock clock;
  NameMap map;
  map.Observe(Reply("example.com", {A("example.com", "192.0.2.1", 60)}), clock.Now());
  map.Observe(Reply("example.com", {A("example.com", "2001:db8::1", 60)}), clock.Now());
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.1"), clock.Now()), ElementsAre("example.com"));
  EXPECT_THAT(map.NamesFor(Ip("2001:db8::1"), clock.Now()), ElementsAre("example.com"));
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.2"), clock.Now()), IsEmpty());
}

TEST(NameMap, FollowsCnameChainFromQuestion) {
  FakeClock clock;
  NameMap map;
  // Out of order on purpose: the chain is followed by name, not by position.
  map.Observe(Reply("www.shop.test", {A("edge.cdn.test", "198.51.100.7", 60),
                                      Cname("www.shop.test", "shop.cdn.test", 60),
                                      Cname("shop.cdn.test", "edge.cdn.test", 60)}),
              clock.Now());
  EXPECT_THAT(map.NamesFor(Ip("198.51.100.7"), clock.Now()),
              ElementsAre("www.shop.test", "shop.cdn.test", "edge.cdn.test"));
}

TEST(NameMap, IgnoresAnswersOffTheChainAndErrorReplies) {
  FakeClock clock;
  NameMap map;
  map.Observe(
      Reply("asked.test", {A("asked.test", "192.0.2.1", 60), A("bank.test", "192.0.2.66", 60)}),
      clock.Now());
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.66"), clock.Now()), IsEmpty());
  DnsReply nx = Reply("gone.test", {A("gone.test", "192.0.2.9", 60)});
  nx.rcode = 3;
  map.Observe(nx, clock.Now());
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.9"), clock.Now()), IsEmpty());
}

TEST(NameMap, BoundsCnameChainAndSurvivesLoops) {
  FakeClock clock;
  NameMapLimits limits;
  limits.max_cname_chain = 2;
  NameMap map(limits);
  map.Observe(Reply("n0.test", {Cname("n0.test", "n1.test", 60), Cname("n1.test", "n2.test", 60),
                                Cname("n2.test", "n3.test", 60), A("n2.test", "192.0.2.2", 60),
                                A("n3.test", "192.0.2.3", 60)}),
              clock.Now());
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.2"), clock.Now()),
              ElementsAre("n0.test", "n1.test", "n2.test"));
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.3"), clock.Now()), IsEmpty());

  NameMap looped;
  looped.Observe(Reply("a.test", {Cname("a.test", "b.test", 60), Cname("b.test", "a.test", 60),
                                  A("b.test", "192.0.2.4", 60)}),
                 clock.Now());
  EXPECT_THAT(looped.NamesFor(Ip("192.0.2.4"), clock.Now()), ElementsAre("a.test", "b.test"));
}

TEST(NameMap, ExpiresByTtlTakingTheChainMinimum) {
  FakeClock clock;
  NameMap map;
  map.Observe(
      Reply("www.test", {Cname("www.test", "cdn.test", 30), A("cdn.test", "192.0.2.5", 600)}),
      clock.Now());
  clock.Advance(seconds(29));
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.5"), clock.Now()), ElementsAre("www.test", "cdn.test"));
  clock.Advance(seconds(1));
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.5"), clock.Now()), IsEmpty());
  map.Observe(DnsReply{}, clock.Now());  // any Observe sweeps expired pairs
  EXPECT_EQ(map.size(), 0u);
}

TEST(NameMap, ClampsTtl) {
  FakeClock clock;
  NameMap map;
  map.Observe(Reply("zero.test", {A("zero.test", "192.0.2.1", 0)}), clock.Now());
  map.Observe(Reply("long.test", {A("long.test", "192.0.2.2", 0x7FFFFFFF)}), clock.Now());
  clock.Advance(seconds(4));
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.1"), clock.Now()), ElementsAre("zero.test"));
  clock.Advance(seconds(1));
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.1"), clock.Now()), IsEmpty());
  clock.Advance(std::chrono::hours(24) - seconds(6));
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.2"), clock.Now()), ElementsAre("long.test"));
  clock.Advance(seconds(1));
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.2"), clock.Now()), IsEmpty());
}

TEST(NameMap, ReobservingRefreshesRecencyButNeverShortensLife) {
  FakeClock clock;
  NameMap map;
  const IpAddress ip = Ip("192.0.2.8");
  map.Observe(Reply("one.test", {A("one.test", "192.0.2.8", 100)}), clock.Now());
  map.Observe(Reply("two.test", {A("two.test", "192.0.2.8", 100)}), clock.Now());
  EXPECT_THAT(map.NamesFor(ip, clock.Now()), ElementsAre("two.test", "one.test"));
  map.Observe(Reply("one.test", {A("one.test", "192.0.2.8", 10)}), clock.Now());
  EXPECT_THAT(map.NamesFor(ip, clock.Now()), ElementsAre("one.test", "two.test"));
  EXPECT_EQ(map.size(), 2u);
  clock.Advance(seconds(50));
  EXPECT_THAT(map.NamesFor(ip, clock.Now()), ElementsAre("one.test", "two.test"));
}

TEST(NameMap, EvictsSoonestExpiringWhenFull) {
  FakeClock clock;
  NameMapLimits limits;
  limits.max_entries = 2;
  NameMap map(limits);
  map.Observe(Reply("long.test", {A("long.test", "192.0.2.1", 300)}), clock.Now());
  map.Observe(Reply("short.test", {A("short.test", "192.0.2.2", 10)}), clock.Now());
  map.Observe(Reply("new.test", {A("new.test", "192.0.2.3", 60)}), clock.Now());
  EXPECT_EQ(map.size(), 2u);
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.1"), clock.Now()), ElementsAre("long.test"));
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.2"), clock.Now()), IsEmpty());
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.3"), clock.Now()), ElementsAre("new.test"));
}

TEST(NameMap, BoundsNamesPerAddress) {
  FakeClock clock;
  NameMapLimits limits;
  limits.max_names_per_address = 2;
  NameMap map(limits);
  for (const char* name : {"a.test", "b.test", "c.test"}) {
    map.Observe(Reply(name, {A(name, "192.0.2.1", 60)}), clock.Now());
  }
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.1"), clock.Now()), ElementsAre("c.test", "b.test"));
  EXPECT_EQ(map.size(), 2u);
}

TEST(NameMap, EvictionOfTheSameAddressKeepsItConsistent) {
  FakeClock clock;
  NameMapLimits limits;
  limits.max_entries = 1;
  NameMap map(limits);
  map.Observe(Reply("a.test", {A("a.test", "192.0.2.1", 60)}), clock.Now());
  map.Observe(Reply("b.test", {A("b.test", "192.0.2.1", 60)}), clock.Now());
  EXPECT_THAT(map.NamesFor(Ip("192.0.2.1"), clock.Now()), ElementsAre("b.test"));
  clock.Advance(seconds(61));
  map.Observe(DnsReply{}, clock.Now());
  EXPECT_EQ(map.size(), 0u);
}

}  // namespace
}  // namespace tollgate::analysis
