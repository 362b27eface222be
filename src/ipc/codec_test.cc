#include "ipc/codec.h"

#include <flatbuffers/flatbuffers.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "proto/tollgate_generated.h"

namespace tollgate::ipc {
namespace {

using ::testing::HasSubstr;

// Records everything it is shown, so tests compare whole decoded messages.
struct Recorder : ItemVisitor {
  std::vector<Hello> hellos;
  std::vector<Welcome> welcomes;
  std::vector<std::string> refused, goodbyes;
  std::vector<FlowQuestion> questions;
  std::vector<Verdict> verdicts;
  std::vector<std::vector<uint8_t>> dns;
  std::vector<ForgetSelector> forgets;
  std::vector<uint64_t> pings, pongs;
  std::vector<FilterReport> reports;
  void OnHello(const Hello& h) override { hellos.push_back(h); }
  void OnWelcome(const Welcome& w) override { welcomes.push_back(w); }
  void OnRefused(const Refused& r) override { refused.push_back(r.reason); }
  void OnGoodbye(const Goodbye& g) override { goodbyes.push_back(g.reason); }
  void OnQuestion(const FlowQuestion& q) override { questions.push_back(q); }
  void OnVerdict(const Verdict& v) override { verdicts.push_back(v); }
  void OnDnsObservation(std::span<const uint8_t> r) override {
    dns.emplace_back(r.begin(), r.end());
  }
  void OnForget(const ForgetSelector& f) override { forgets.push_back(f); }
  void OnPing(uint64_t t) override { pings.push_back(t); }
  void OnPong(uint64_t t) override { pongs.push_back(t); }
  void OnFilterReport(const FilterReport& f) override { reports.push_back(f); }
  void OnDecided(const FlowQuestion& q, Action a) override { decided.emplace_back(q, a); }
  std::vector<std::pair<FlowQuestion, Action>> decided;
  size_t total() const {
    return hellos.size() + welcomes.size() + refused.size() + goodbyes.size() + questions.size() +
           verdicts.size() + dns.size() + forgets.size() + pings.size() + pongs.size() +
           reports.size() + decided.size();
  }
};

FlowQuestion SampleQuestion(uint64_t id, bool v6) {
  FlowQuestion q;
  q.id = id;
  q.tuple.src = *IpAddress::Parse(v6 ? "::1" : "127.0.0.1");
  q.tuple.dst = *IpAddress::Parse(v6 ? "fd00::2:3" : "10.1.2.3");
  q.tuple.src_port = 40000;
  q.tuple.dst_port = 443;
  q.tuple.protocol = ipproto::kTcp;
  q.direction = Direction::kInbound;
  q.iface = 7;
  q.uid = 1000;
  q.gid = 100;
  q.payload = {0x16, 0x03, 0x01};
  return q;
}

std::vector<uint8_t> Copy(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }

TEST(CodecTest, RoundTripsEveryItemInOrder) {
  MessageBuilder b;
  b.AddHello(Hello{1, 3, Role::kFilter, "filter-0.1"});
  b.AddWelcome(Welcome{1, 0, "daemon-0.1", ChannelSettings{250, FallbackPolicy::kFailClosed, 512}});
  b.AddRefused("not in group");
  b.AddGoodbye("idle");
  b.AddQuestion(SampleQuestion(42, false));
  b.AddQuestion(SampleQuestion(43, true));
  b.AddVerdict(Verdict{42, Action::kInspect, 300, "inspect: rule \"web\"", CacheScope::kNone});
  const uint8_t dns[] = {0xde, 0xad, 0xbe, 0xef};
  b.AddDnsObservation(dns);
  ForgetSelector f;
  f.dst = *IpAddress::Parse("192.168.0.0");
  f.dst_prefix = 16;
  f.protocol = ipproto::kUdp;
  f.dst_port = 53;
  b.AddForget(f);
  b.AddPing(7);
  b.AddPong(8);
  EXPECT_EQ(b.item_count(), 11u);
  auto bytes = Copy(b.Finish());

  Recorder r;
  ASSERT_TRUE(DecodeMessage(bytes, r));
  EXPECT_EQ(r.total(), 11u);
  ASSERT_EQ(r.hellos.size(), 1u);
  EXPECT_EQ(r.hellos[0].minor, 3);
  EXPECT_EQ(r.hellos[0].role, Role::kFilter);
  EXPECT_EQ(r.hellos[0].build, "filter-0.1");
  ASSERT_EQ(r.welcomes.size(), 1u);
  EXPECT_EQ(r.welcomes[0].settings.question_deadline_ms, 250u);
  EXPECT_EQ(r.welcomes[0].settings.fallback, FallbackPolicy::kFailClosed);
  EXPECT_EQ(r.welcomes[0].settings.inspect_max_bytes, 512u);
  EXPECT_EQ(r.refused, std::vector<std::string>{"not in group"});
  EXPECT_EQ(r.goodbyes, std::vector<std::string>{"idle"});
  ASSERT_EQ(r.questions.size(), 2u);
  FlowQuestion want4 = SampleQuestion(42, false);
  EXPECT_EQ(r.questions[0].id, want4.id);
  EXPECT_EQ(r.questions[0].tuple, want4.tuple);
  EXPECT_EQ(r.questions[0].direction, Direction::kInbound);
  EXPECT_EQ(r.questions[0].iface, 7u);
  EXPECT_EQ(r.questions[0].uid, 1000u);
  EXPECT_EQ(r.questions[0].gid, 100u);
  EXPECT_EQ(r.questions[0].payload, want4.payload);
  EXPECT_EQ(r.questions[1].tuple, SampleQuestion(43, true).tuple);
  EXPECT_EQ(r.questions[1].tuple.dst.ToString(), "fd00::2:3");
  ASSERT_EQ(r.verdicts.size(), 1u);
  EXPECT_EQ(r.verdicts[0].id, 42u);
  EXPECT_EQ(r.verdicts[0].action, Action::kInspect);
  EXPECT_EQ(r.verdicts[0].inspect_bytes, 300u);
  EXPECT_EQ(r.verdicts[0].reason, "inspect: rule \"web\"");
  EXPECT_EQ(r.verdicts[0].cache, CacheScope::kNone);
  EXPECT_EQ(r.dns, (std::vector<std::vector<uint8_t>>{{0xde, 0xad, 0xbe, 0xef}}));
  ASSERT_EQ(r.forgets.size(), 1u);
  EXPECT_EQ(r.forgets[0].dst.ToString(), "192.168.0.0");
  EXPECT_EQ(r.forgets[0].dst_prefix, 16);
  EXPECT_EQ(r.forgets[0].dst_port, 53);
  EXPECT_EQ(r.pings, std::vector<uint64_t>{7});
  EXPECT_EQ(r.pongs, std::vector<uint64_t>{8});
}

// Every field distinct, so a field read from the wrong slot shows.
FilterReport SampleReport() {
  FilterReport r;
  r.packets = 1'000'000'000'001ULL;
  r.questions = 2;
  r.answered = 3;
  r.fallbacks_deadline = 4;
  r.fallbacks_daemon_away = 5;
  r.fallbacks_overflow = 6;
  r.late_answers = 7;
  r.pending = 8;
  r.max_pending = 65536;
  r.queue_lost = 10;
  r.queue_enobufs = 11;
  r.verdict_errors = 12;
  r.channel_dropped = 13;
  r.first_queue = 14;
  r.last_queue = 15;
  r.fail_open = false;
  r.reused = 16;
  return r;
}

TEST(CodecTest, FilterReportRoundTripsEveryField) {
  MessageBuilder b;
  b.AddQuestion(SampleQuestion(1, false));
  b.AddFilterReport(SampleReport());
  FilterReport zero;
  zero.fail_open = true;
  b.AddFilterReport(zero);
  auto bytes = Copy(b.Finish());
  Recorder r;
  ASSERT_TRUE(DecodeMessage(bytes, r));
  EXPECT_EQ(r.total(), 3u);
  ASSERT_EQ(r.reports.size(), 2u);
  EXPECT_EQ(r.reports[0], SampleReport());
  EXPECT_EQ(r.reports[0].fallbacks(), 15u);
  EXPECT_EQ(r.reports[1], zero);
}

// (1.2) A verdict reusable for its destination, and the filter's account of a flow it decided
// from one.
TEST(CodecTest, DestinationScopeAndDecidedRoundTrip) {
  MessageBuilder b;
  Verdict v;
  v.id = 5;
  v.action = Action::kReject;
  v.reason = "reject: rule \"x\"";
  v.cache = CacheScope::kDestination;
  v.cache_ttl_ms = 60'000;
  b.AddVerdict(v);
  v.cache_until_dns = true;  // (1.3)
  b.AddVerdict(v);
  FlowQuestion q = SampleQuestion(6, true);
  q.payload.clear();
  b.AddDecided(q, Action::kDeny);
  auto bytes = Copy(b.Finish());
  Recorder r;
  ASSERT_TRUE(DecodeMessage(bytes, r));
  ASSERT_EQ(r.verdicts.size(), 2u);
  EXPECT_EQ(r.verdicts[0].cache, CacheScope::kDestination);
  EXPECT_EQ(r.verdicts[0].cache_ttl_ms, 60'000u);
  EXPECT_FALSE(r.verdicts[0].cache_until_dns);
  EXPECT_TRUE(r.verdicts[1].cache_until_dns);
  ASSERT_EQ(r.decided.size(), 1u);
  EXPECT_EQ(r.decided[0].second, Action::kDeny);
  EXPECT_EQ(r.decided[0].first.id, 6u);
  EXPECT_EQ(r.decided[0].first.tuple, q.tuple);
  EXPECT_EQ(r.decided[0].first.direction, q.direction);
  EXPECT_EQ(r.decided[0].first.uid, q.uid);
}

TEST(CodecTest, DecidedInspectOrWithoutQuestionIsRejected) {
  flatbuffers::FlatBufferBuilder fbb;
  auto bad = wire::CreateDecided(fbb, 0, wire::Action::Allow);  // no question
  std::vector<wire::Item> types{wire::Item::Decided};
  std::vector<flatbuffers::Offset<void>> items{bad.Union()};
  wire::FinishMessageBuffer(
      fbb, wire::CreateMessage(fbb, fbb.CreateVector(types), fbb.CreateVector(items)));
  Recorder r;
  Status s = DecodeMessage(std::span(fbb.GetBufferPointer(), fbb.GetSize()), r);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error().message, HasSubstr("decided: no question"));

  flatbuffers::FlatBufferBuilder fbb2;
  auto src = wire::Ip(), dst = wire::Ip();
  auto question = wire::CreateFlowQuestion(fbb2, 1, 4, 6, &src, &dst);
  auto inspect = wire::CreateDecided(fbb2, question, wire::Action::Inspect);
  std::vector<flatbuffers::Offset<void>> items2{inspect.Union()};
  wire::FinishMessageBuffer(
      fbb2, wire::CreateMessage(fbb2, fbb2.CreateVector(types), fbb2.CreateVector(items2)));
  s = DecodeMessage(std::span(fbb2.GetBufferPointer(), fbb2.GetSize()), r);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error().message, HasSubstr("allow, deny or reject"));
  EXPECT_EQ(r.total(), 0u);
}

TEST(CodecTest, FilterReportWithoutFieldsReadsAsZeros) {
  // What an older or terser filter sends: absent fields are their schema defaults.
  flatbuffers::FlatBufferBuilder fbb;
  auto report = wire::CreateFilterReport(fbb);
  std::vector<wire::Item> types{wire::Item::FilterReport};
  std::vector<flatbuffers::Offset<void>> items{report.Union()};
  wire::FinishMessageBuffer(
      fbb, wire::CreateMessage(fbb, fbb.CreateVector(types), fbb.CreateVector(items)));
  Recorder r;
  ASSERT_TRUE(DecodeMessage(std::span(fbb.GetBufferPointer(), fbb.GetSize()), r));
  ASSERT_EQ(r.reports.size(), 1u);
  EXPECT_EQ(r.reports[0], FilterReport{});
}

TEST(CodecTest, ItemNewerThanOurSchemaRejectsTheMessage) {
  // What a daemon of an older minor does with an item it does not know: the whole message is
  // refused. Hence FilterReport goes only to a daemon that announced minor >= 1.
  flatbuffers::FlatBufferBuilder fbb;
  auto ping = wire::CreatePing(fbb, 1);
  const auto newer = static_cast<wire::Item>(static_cast<uint8_t>(wire::Item::MAX) + 1);
  std::vector<wire::Item> types{wire::Item::Ping, newer};
  std::vector<flatbuffers::Offset<void>> items{ping.Union(), ping.Union()};
  wire::FinishMessageBuffer(
      fbb, wire::CreateMessage(fbb, fbb.CreateVector(types), fbb.CreateVector(items)));
  Recorder r;
  Status s = DecodeMessage(std::span(fbb.GetBufferPointer(), fbb.GetSize()), r);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error().message, HasSubstr("unknown type"));
  EXPECT_EQ(r.total(), 0u);
}

TEST(CodecTest, UnknownUidDefaultsSurviveTheWire) {
  MessageBuilder b;
  FlowQuestion q = SampleQuestion(1, false);
  q.uid = kUnknownId;
  q.gid = kUnknownId;
  q.payload.clear();
  b.AddQuestion(q);
  auto bytes = Copy(b.Finish());
  Recorder r;
  ASSERT_TRUE(DecodeMessage(bytes, r));
  EXPECT_EQ(r.questions.at(0).uid, kUnknownId);
  EXPECT_TRUE(r.questions.at(0).payload.empty());
}

TEST(CodecTest, BuilderIsReusableAfterFinish) {
  MessageBuilder b;
  b.AddPing(1);
  auto first = Copy(b.Finish());
  b.AddPing(2);
  b.AddPing(3);
  auto second = Copy(b.Finish());
  Recorder r1, r2;
  ASSERT_TRUE(DecodeMessage(first, r1));
  ASSERT_TRUE(DecodeMessage(second, r2));
  EXPECT_EQ(r1.pings, std::vector<uint64_t>{1});
  EXPECT_EQ(r2.pings, (std::vector<uint64_t>{2, 3}));
}

TEST(CodecTest, WouldFitKeepsMessagesUnderTheLimit) {
  MessageBuilder b;
  FlowQuestion q = SampleQuestion(1, true);
  q.payload.assign(4000, 0xab);
  size_t added = 0;
  while (b.WouldFit(MessageBuilder::EstimateQuestionBytes(q))) {
    b.AddQuestion(q);
    ++added;
  }
  EXPECT_GT(added, 10u);
  auto bytes = b.Finish();
  EXPECT_LE(bytes.size(), kMaxMessageBytes);
  Recorder r;
  ASSERT_TRUE(DecodeMessage(bytes, r));
  EXPECT_EQ(r.questions.size(), added);
}

TEST(CodecTest, EveryTruncationIsRejectedWithoutVisiting) {
  MessageBuilder b;
  b.AddQuestion(SampleQuestion(1, false));
  b.AddVerdict(Verdict{1, Action::kDeny, 0, "deny", CacheScope::kFlow});
  auto bytes = Copy(b.Finish());
  // FlatBuffers may end in alignment padding that no offset points into; cutting only padding
  // leaves a valid buffer, which must then decode to the very same items.
  size_t padding = 0;
  while (padding < bytes.size() && bytes[bytes.size() - 1 - padding] == 0) ++padding;
  ASSERT_LT(padding, 8u);
  for (size_t n = 0; n < bytes.size(); ++n) {
    Recorder r;
    Status s = DecodeMessage(std::span(bytes.data(), n), r);
    if (n >= bytes.size() - padding && s) {
      ASSERT_EQ(r.questions.size(), 1u);
      EXPECT_EQ(r.questions[0].tuple, SampleQuestion(1, false).tuple);
      ASSERT_EQ(r.verdicts.size(), 1u);
      EXPECT_EQ(r.verdicts[0].reason, "deny");
      continue;
    }
    EXPECT_FALSE(s) << "truncated to " << n;
    EXPECT_EQ(r.total(), 0u) << "truncated to " << n;
  }
}

TEST(CodecTest, WrongIdentifierIsRejected) {
  MessageBuilder b;
  b.AddPing(1);
  auto bytes = Copy(b.Finish());
  bytes[4] = 'X';  // file_identifier lives at bytes 4..7
  Recorder r;
  Status s = DecodeMessage(bytes, r);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kMalformed);
}

TEST(CodecTest, OversizeIsRejectedBeforeVerification) {
  std::vector<uint8_t> big(kMaxMessageBytes + 1, 0);
  Recorder r;
  Status s = DecodeMessage(big, r);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kTooLarge);
}

// Builds messages with the raw generated API to reach states our builder never produces.
std::vector<uint8_t> RawVerdictMessage(uint8_t action, size_t reason_len) {
  flatbuffers::FlatBufferBuilder fbb;
  auto reason = fbb.CreateString(std::string(reason_len, 'r'));
  auto v = wire::CreateVerdict(fbb, 1, static_cast<wire::Action>(action), 0, reason);
  std::vector<wire::Item> types{wire::Item::Verdict};
  std::vector<flatbuffers::Offset<void>> items{v.Union()};
  auto msg = wire::CreateMessage(fbb, fbb.CreateVector(types), fbb.CreateVector(items));
  wire::FinishMessageBuffer(fbb, msg);
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

TEST(CodecTest, OutOfRangeEnumIsRejected) {
  Recorder r;
  EXPECT_TRUE(DecodeMessage(RawVerdictMessage(3, 4), r));
  Status s = DecodeMessage(RawVerdictMessage(9, 4), r);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error().message, HasSubstr("unknown action"));
}

TEST(CodecTest, OverlongReasonIsRejected) {
  Recorder r;
  Status s = DecodeMessage(RawVerdictMessage(0, kMaxReasonBytes + 1), r);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error().message, HasSubstr("reason too long"));
}

TEST(CodecTest, EmptyMessageIsRejected) {
  flatbuffers::FlatBufferBuilder fbb;
  auto msg = wire::CreateMessage(fbb);
  wire::FinishMessageBuffer(fbb, msg);
  Recorder r;
  Status s = DecodeMessage(std::span(fbb.GetBufferPointer(), fbb.GetSize()), r);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error().message, HasSubstr("no items"));
}

TEST(CodecTest, QuestionWithBadFamilyRejectsTheWholeMessage) {
  flatbuffers::FlatBufferBuilder fbb;
  wire::Ip ip;
  auto good = wire::CreateFlowQuestion(fbb, 1, 4, 6, &ip, &ip);
  auto bad = wire::CreateFlowQuestion(fbb, 2, 5, 6, &ip, &ip);
  std::vector<wire::Item> types{wire::Item::FlowQuestion, wire::Item::FlowQuestion};
  std::vector<flatbuffers::Offset<void>> items{good.Union(), bad.Union()};
  wire::FinishMessageBuffer(
      fbb, wire::CreateMessage(fbb, fbb.CreateVector(types), fbb.CreateVector(items)));
  Recorder r;
  Status s = DecodeMessage(std::span(fbb.GetBufferPointer(), fbb.GetSize()), r);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error().message, HasSubstr("family"));
  EXPECT_EQ(r.total(), 0u) << "the good first item must not be delivered either";
}

TEST(VersionTest, SameMajorAnyMinorIsAccepted) {
  EXPECT_TRUE(CheckPeerVersion(kProtocolMajor, 0));
  EXPECT_TRUE(CheckPeerVersion(kProtocolMajor, 99));
}

TEST(VersionTest, OtherMajorIsRefusedWithReason) {
  Status s = CheckPeerVersion(kProtocolMajor + 1, 0);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kProtocol);
  EXPECT_THAT(s.error().message, HasSubstr("major versions differ"));
  EXPECT_FALSE(CheckPeerVersion(0, 5));
}

}  // namespace
}  // namespace tollgate::ipc
