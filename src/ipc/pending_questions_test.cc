#include "ipc/pending_questions.h"

#include <gtest/gtest.h>

#include <vector>

namespace tollgate::ipc {
namespace {

using std::chrono::milliseconds;

FlowQuestion Q(uint64_t id) {
  FlowQuestion q;
  q.id = id;
  return q;
}

std::vector<uint64_t> Expire(PendingQuestions& p, MonoTime now) {
  std::vector<uint64_t> ids;
  p.ExpireUntil(now, [&](const FlowQuestion& q) { ids.push_back(q.id); });
  return ids;
}

TEST(PendingQuestionsTest, VerdictSettlesOnceAndLateVerdictIsUnknown) {
  FakeClock clock;
  PendingQuestions p;
  p.Add(Q(1), clock.Now() + milliseconds(200));
  auto first = p.Settle(1);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->id, 1u);
  EXPECT_FALSE(p.Settle(1).has_value()) << "a second verdict for the same id must be refused";
  EXPECT_FALSE(p.Settle(99).has_value());
  EXPECT_TRUE(p.empty());
}

TEST(PendingQuestionsTest, DeadlineExpiresInAskOrderAndExactlyAtTheDeadline) {
  FakeClock clock;
  PendingQuestions p;
  p.Add(Q(1), clock.Now() + milliseconds(200));
  clock.Advance(milliseconds(50));
  p.Add(Q(2), clock.Now() + milliseconds(200));
  p.Add(Q(3), clock.Now() + milliseconds(200));

  clock.Advance(milliseconds(149));
  EXPECT_TRUE(Expire(p, clock.Now()).empty()) << "199 ms after the first ask nothing is due";
  clock.Advance(milliseconds(1));
  EXPECT_EQ(Expire(p, clock.Now()), std::vector<uint64_t>{1});
  clock.Advance(milliseconds(50));
  EXPECT_EQ(Expire(p, clock.Now()), (std::vector<uint64_t>{2, 3}));
  EXPECT_TRUE(p.empty());
}

TEST(PendingQuestionsTest, SettledQuestionNeverExpiresLater) {
  FakeClock clock;
  PendingQuestions p;
  p.Add(Q(1), clock.Now() + milliseconds(10));
  p.Add(Q(2), clock.Now() + milliseconds(10));
  ASSERT_TRUE(p.Settle(2).has_value());
  clock.Advance(milliseconds(10));
  EXPECT_EQ(Expire(p, clock.Now()), std::vector<uint64_t>{1});
  EXPECT_FALSE(p.Settle(1).has_value()) << "a verdict after the fallback is late";
}

TEST(PendingQuestionsTest, NextDeadlineSkipsSettledQuestions) {
  FakeClock clock;
  PendingQuestions p;
  EXPECT_FALSE(p.NextDeadline().has_value());
  MonoTime t1 = clock.Now() + milliseconds(10);
  p.Add(Q(1), t1);
  clock.Advance(milliseconds(5));
  MonoTime t2 = clock.Now() + milliseconds(10);
  p.Add(Q(2), t2);
  EXPECT_EQ(p.NextDeadline(), t1);
  ASSERT_TRUE(p.Settle(1).has_value());
  EXPECT_EQ(p.NextDeadline(), t2);
}

TEST(PendingQuestionsTest, ResendsOnlyWhatTheNewSessionHasNotSeen) {
  FakeClock clock;
  PendingQuestions p;
  for (uint64_t id = 1; id <= 3; ++id) p.Add(Q(id), clock.Now() + milliseconds(200));
  p.MarkSent(1, 1);
  std::vector<uint64_t> sent;
  p.ForEachUnsent(1, [&](const FlowQuestion& q) { sent.push_back(q.id); });
  EXPECT_EQ(sent, (std::vector<uint64_t>{2, 3}));
  sent.clear();
  p.ForEachUnsent(1, [&](const FlowQuestion& q) { sent.push_back(q.id); });
  EXPECT_TRUE(sent.empty()) << "nothing is sent twice on one connection";
  ASSERT_TRUE(p.Settle(2).has_value());
  p.ForEachUnsent(2, [&](const FlowQuestion& q) { sent.push_back(q.id); });
  EXPECT_EQ(sent, (std::vector<uint64_t>{1, 3})) << "after a reconnect, every pending one again";
}

TEST(PendingQuestionsTest, SettleAllEmptiesInAskOrder) {
  FakeClock clock;
  PendingQuestions p;
  for (uint64_t id = 5; id <= 7; ++id) p.Add(Q(id), clock.Now() + milliseconds(200));
  ASSERT_TRUE(p.Settle(6).has_value());
  std::vector<uint64_t> ids;
  p.SettleAll([&](const FlowQuestion& q) { ids.push_back(q.id); });
  EXPECT_EQ(ids, (std::vector<uint64_t>{5, 7}));
  EXPECT_TRUE(p.empty());
  EXPECT_FALSE(p.NextDeadline().has_value());
}

TEST(PendingQuestionsDeathTest, DuplicateIdIsOurBug) {
  PendingQuestions p;
  FakeClock clock;
  p.Add(Q(1), clock.Now());
  EXPECT_DEATH(p.Add(Q(1), clock.Now()), "check failed");
}

double Half() { return 0.5; }
double Low() { return 0.0; }
double High() { return 0.999999; }

TEST(BackoffTest, ScheduleIsImmediateThenDoublingUpToTheCap) {
  Backoff b({milliseconds(50), milliseconds(1000), 0.2}, Half);
  std::vector<int64_t> ms;
  for (int i = 0; i < 9; ++i) {
    ms.push_back(std::chrono::duration_cast<milliseconds>(b.Next()).count());
  }
  EXPECT_EQ(ms, (std::vector<int64_t>{0, 50, 100, 200, 400, 800, 1000, 1000, 1000}));
  b.Reset();
  EXPECT_EQ(b.Next(), Duration{0}) << "after a good connection the next retry is immediate";
}

TEST(BackoffTest, JitterStaysWithinItsBand) {
  Backoff low({milliseconds(100), milliseconds(1000), 0.2}, Low);
  Backoff high({milliseconds(100), milliseconds(1000), 0.2}, High);
  (void)low.Next();
  (void)high.Next();
  EXPECT_EQ(low.Next(), milliseconds(80));
  auto h = high.Next();
  EXPECT_GT(h, milliseconds(119));
  EXPECT_LE(h, milliseconds(120));
}

TEST(BackoffTest, ManyAttemptsDoNotOverflow) {
  Backoff b({milliseconds(50), std::chrono::seconds(5), 0.0}, Half);
  Duration last{};
  for (int i = 0; i < 10000; ++i) last = b.Next();
  EXPECT_EQ(last, std::chrono::seconds(5));
}

}  // namespace
}  // namespace tollgate::ipc
