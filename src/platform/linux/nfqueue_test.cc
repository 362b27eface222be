#include "platform/linux/nfqueue.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>

#include <set>
#include <string>

#include "platform/linux/netfilter_test_support.h"

namespace tollgate::platform {
namespace {

using testing::BoundSocket;
using testing::CollectQueued;
using testing::DatagramArrives;
using ::testing::HasSubstr;
using testing::Loopback;
using testing::PortOf;
using testing::RunCommand;
using testing::RunInNetns;

void SendTo(int fd, int family, uint16_t port, std::string_view data) {
  auto to = Loopback(family, port);
  ASSERT_EQ(sendto(fd, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&to),
                   testing::AddrLen(family)),
            static_cast<ssize_t>(data.size()))
      << std::strerror(errno);
}

TEST(NfQueueTest, OpenRejectsBadOptions) {
  NfQueueOptions o;
  o.copy_range = 0;
  auto q = NfQueue::Open(1, o);
  ASSERT_FALSE(q.has_value());
  EXPECT_THAT(q.error().message, HasSubstr("copy_range must be 1..65535"));
  auto range = NfQueue::Open(5, 4, NfQueueOptions{});
  ASSERT_FALSE(range.has_value());
  EXPECT_THAT(range.error().message, HasSubstr("queue range 5-4 is empty"));
}

// The brief's scenario: a UDP datagram to 127.0.0.1:9999 is queued; accept delivers it, drop
// loses it, repeat with a mark lets a mark rule placed before the queue rule accept it.
TEST(NfQueueTest, AcceptDropAndRepeatWithMark) {
  TG_REQUIRE_PRIVILEGED();
  RunInNetns([] {
    constexpr uint16_t kQueue = 7;
    constexpr uint32_t kMark = 0x5a;
    ASSERT_TRUE(
        RunCommand("iptables -w -A OUTPUT -p udp --dport 9999 -m mark --mark 0x5a -j ACCEPT"));
    ASSERT_TRUE(RunCommand("iptables -w -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-num 7"));
    auto q = NfQueue::Open(kQueue, NfQueueOptions{});
    ASSERT_TRUE(q.has_value()) << q.error().message;
    auto rx = BoundSocket(AF_INET, SOCK_DGRAM, 9999);
    auto tx = BoundSocket(AF_INET, SOCK_DGRAM, 0);

    SendTo(tx.get(), AF_INET, 9999, "accept");
    auto got = CollectQueued(*q, 1);
    ASSERT_EQ(got.size(), 1u);
    const auto& p = got[0];
    EXPECT_EQ(p.meta.queue, kQueue);
    EXPECT_EQ(p.meta.hook, QueueHook::kLocalOut);
    EXPECT_EQ(p.meta.hw_protocol, ETH_P_IP);
    EXPECT_EQ(p.meta.uid, getuid());
    EXPECT_EQ(p.meta.gid, getgid());
    EXPECT_EQ(p.meta.mark, 0u);
    EXPECT_EQ(p.meta.in_iface, 0u);
    EXPECT_NE(p.meta.out_iface, 0u);  // lo
    EXPECT_EQ(p.tuple.src, IpAddress::V4(127, 0, 0, 1));
    EXPECT_EQ(p.tuple.dst, IpAddress::V4(127, 0, 0, 1));
    EXPECT_EQ(p.tuple.protocol, ipproto::kUdp);
    EXPECT_EQ(p.tuple.src_port, PortOf(tx.get()));
    EXPECT_EQ(p.tuple.dst_port, 9999);
    EXPECT_EQ(p.payload_size, 6u);
    EXPECT_FALSE(DatagramArrives(rx.get(), 100)) << "held while it waits for a verdict";
    ASSERT_TRUE(q->Verdict(p.meta.queue, p.meta.packet_id, PacketVerdict::kAccept).has_value());
    EXPECT_EQ(q->pending_verdicts(), 1u);
    ASSERT_TRUE(q->FlushVerdicts().has_value());
    EXPECT_EQ(q->pending_verdicts(), 0u);
    EXPECT_TRUE(DatagramArrives(rx.get(), 1000));

    SendTo(tx.get(), AF_INET, 9999, "drop");
    got = CollectQueued(*q, 1);
    ASSERT_EQ(got.size(), 1u);
    ASSERT_TRUE(q->Verdict(kQueue, got[0].meta.packet_id, PacketVerdict::kDrop).has_value());
    ASSERT_TRUE(q->FlushVerdicts().has_value());
    EXPECT_FALSE(DatagramArrives(rx.get(), 300));

    SendTo(tx.get(), AF_INET, 9999, "repeat");
    got = CollectQueued(*q, 1);
    ASSERT_EQ(got.size(), 1u);
    ASSERT_TRUE(
        q->Verdict(kQueue, got[0].meta.packet_id, PacketVerdict::kRepeat, kMark).has_value());
    ASSERT_TRUE(q->FlushVerdicts().has_value());
    EXPECT_TRUE(DatagramArrives(rx.get(), 1000));
    EXPECT_TRUE(CollectQueued(*q, 1, 200).empty()) << "the mark rule took it, not the queue";

    const NfQueueCounters& c = q->counters();
    EXPECT_EQ(c.received, 3u);
    EXPECT_EQ(c.verdicts, 3u);
    EXPECT_EQ(c.batches, 3u);
    EXPECT_EQ(c.verdict_errors, 0u);
    EXPECT_EQ(c.lost, 0u);
    EXPECT_EQ(c.parse_errors, 0u);
  });
}

TEST(NfQueueTest, VerdictsForABurstGoOutInOneSendmsgIpv6) {
  TG_REQUIRE_PRIVILEGED();
  RunInNetns([] {
    ASSERT_TRUE(RunCommand("ip6tables -w -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-num 3"));
    auto q = NfQueue::Open(3, NfQueueOptions{});
    ASSERT_TRUE(q.has_value()) << q.error().message;
    auto rx = BoundSocket(AF_INET6, SOCK_DGRAM, 9999);
    auto tx = BoundSocket(AF_INET6, SOCK_DGRAM, 0);
    constexpr size_t kBurst = 50;
    for (size_t i = 0; i < kBurst; ++i) SendTo(tx.get(), AF_INET6, 9999, "burst");
    auto got = CollectQueued(*q, kBurst);
    ASSERT_EQ(got.size(), kBurst);
    for (const auto& p : got) {
      EXPECT_EQ(p.meta.hw_protocol, ETH_P_IPV6);
      EXPECT_EQ(p.tuple.dst, *IpAddress::Parse("::1"));
      EXPECT_EQ(p.meta.uid, getuid());
      ASSERT_TRUE(q->Verdict(p.meta.queue, p.meta.packet_id, PacketVerdict::kAccept).has_value());
    }
    EXPECT_EQ(q->counters().batches, 0u);
    ASSERT_TRUE(q->FlushVerdicts().has_value());
    EXPECT_EQ(q->counters().batches, 1u);
    EXPECT_EQ(q->counters().verdicts, kBurst);
    size_t arrived = 0;
    while (DatagramArrives(rx.get(), 500)) ++arrived;
    EXPECT_EQ(arrived, kBurst);
    EXPECT_EQ(q->counters().lost, 0u);
  });
}

TEST(NfQueueTest, BatchLargerThanOneSendmsgIsSplit) {
  TG_REQUIRE_PRIVILEGED();
  RunInNetns([] {
    ASSERT_TRUE(RunCommand("iptables -w -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-num 0"));
    NfQueueOptions o;
    o.max_queue_len = 4096;
    auto q = NfQueue::Open(0, o);
    ASSERT_TRUE(q.has_value()) << q.error().message;
    auto rx = BoundSocket(AF_INET, SOCK_DGRAM, 9999);
    int big = 8 << 20;
    setsockopt(rx.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
    auto tx = BoundSocket(AF_INET, SOCK_DGRAM, 0);
    // Held packets still count against the sender's buffer until their verdict.
    setsockopt(tx.get(), SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
    constexpr size_t kBurst = 2500;  // more verdicts than fit one 64 KiB batch
    for (size_t i = 0; i < kBurst; ++i) SendTo(tx.get(), AF_INET, 9999, "x");
    auto got = CollectQueued(*q, kBurst, 5000);
    ASSERT_EQ(got.size(), kBurst);
    for (const auto& p : got) {
      ASSERT_TRUE(q->Verdict(p.meta.queue, p.meta.packet_id, PacketVerdict::kAccept).has_value());
    }
    ASSERT_TRUE(q->FlushVerdicts().has_value());
    EXPECT_EQ(q->counters().verdicts, kBurst);
    EXPECT_GE(q->counters().batches, 2u);
    EXPECT_EQ(q->counters().verdict_errors, 0u);
    size_t arrived = 0;
    while (DatagramArrives(rx.get(), 500)) ++arrived;
    EXPECT_EQ(arrived, kBurst);
  });
}

TEST(NfQueueTest, PacketsTheSocketCouldNotTakeAreCountedAsLost) {
  TG_REQUIRE_PRIVILEGED();
  RunInNetns([] {
    ASSERT_TRUE(RunCommand("iptables -w -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-num 2"));
    NfQueueOptions o;
    o.socket_buffer_bytes = 1;  // the kernel's minimum: a few messages
    auto q = NfQueue::Open(2, o);
    ASSERT_TRUE(q.has_value()) << q.error().message;
    auto tx = BoundSocket(AF_INET, SOCK_DGRAM, 0);
    constexpr size_t kBurst = 40;
    for (size_t i = 0; i < kBurst; ++i) SendTo(tx.get(), AF_INET, 9999, "overrun");
    auto got = CollectQueued(*q, kBurst, 300);
    ASSERT_LT(got.size(), kBurst) << "the socket took everything; the test needs an overrun";
    // A loss shows as a gap before the next delivered id, so send one more now there is room.
    SendTo(tx.get(), AF_INET, 9999, "after");
    auto after = CollectQueued(*q, 1);
    ASSERT_EQ(after.size(), 1u);
    EXPECT_GT(q->counters().lost, 0u);
    EXPECT_EQ(q->counters().received + q->counters().lost, kBurst + 1);
    EXPECT_EQ(q->counters().enobufs, 0u) << "NETLINK_NO_ENOBUFS is set";
    for (const auto& p : got)
      (void)q->Verdict(p.meta.queue, p.meta.packet_id, PacketVerdict::kDrop);
    (void)q->Verdict(2, after[0].meta.packet_id, PacketVerdict::kDrop);
    EXPECT_TRUE(q->FlushVerdicts().has_value());
  });
}

TEST(NfQueueTest, CopyRangeCutsThePayloadButKeepsTheLength) {
  TG_REQUIRE_PRIVILEGED();
  RunInNetns([] {
    ASSERT_TRUE(RunCommand("iptables -w -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-num 1"));
    NfQueueOptions o;
    o.copy_range = 64;
    auto q = NfQueue::Open(1, o);
    ASSERT_TRUE(q.has_value()) << q.error().message;
    auto tx = BoundSocket(AF_INET, SOCK_DGRAM, 0);
    SendTo(tx.get(), AF_INET, 9999, std::string(500, 'z'));
    auto got = CollectQueued(*q, 1);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].bytes.size(), 64u);
    EXPECT_EQ(got[0].meta.packet_length, 20u + 8u + 500u);
    EXPECT_EQ(got[0].payload_size, 64u - 28u);
    EXPECT_TRUE(q->Verdict(1, got[0].meta.packet_id, PacketVerdict::kAccept).has_value());
    EXPECT_TRUE(q->FlushVerdicts().has_value());
  });
}

TEST(NfQueueTest, SeveralQueuesOnOneSocket) {
  TG_REQUIRE_PRIVILEGED();
  RunInNetns([] {
    ASSERT_TRUE(
        RunCommand("iptables -w -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-balance 3:4"));
    auto q = NfQueue::Open(3, 4, NfQueueOptions{});
    ASSERT_TRUE(q.has_value()) << q.error().message;
    // Bound to any address: the datagrams go to many loopback addresses.
    UniqueFd rx(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_port = htons(9999);
    ASSERT_EQ(bind(rx.get(), reinterpret_cast<sockaddr*>(&any), sizeof(any)), 0);
    // --queue-balance hashes the address pair and protocol, not the ports (so both directions of
    // a flow meet one reader): spreading needs other addresses, which 127/8 has plenty of.
    std::vector<UniqueFd> senders;
    for (int i = 0; i < 32; ++i) {
      senders.push_back(BoundSocket(AF_INET, SOCK_DGRAM, 0));
      sockaddr_in to = any;
      to.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + static_cast<uint32_t>(i));
      ASSERT_EQ(sendto(senders.back().get(), "spread", 6, 0, reinterpret_cast<sockaddr*>(&to),
                       sizeof(to)),
                6);
    }
    auto got = CollectQueued(*q, senders.size());
    ASSERT_EQ(got.size(), senders.size());
    std::set<uint32_t> queues;
    for (const auto& p : got) {
      queues.insert(p.meta.queue);
      ASSERT_TRUE(q->Verdict(p.meta.queue, p.meta.packet_id, PacketVerdict::kAccept).has_value());
    }
    EXPECT_EQ(queues, (std::set<uint32_t>{3, 4}));
    ASSERT_TRUE(q->FlushVerdicts().has_value());
    EXPECT_EQ(q->counters().batches, 1u);
    size_t arrived = 0;
    while (DatagramArrives(rx.get(), 500)) ++arrived;
    EXPECT_EQ(arrived, senders.size());
  });
}

TEST(NfQueueTest, ASecondReaderOfABoundQueueIsRefused) {
  TG_REQUIRE_PRIVILEGED();
  RunInNetns([] {
    auto first = NfQueue::Open(9, NfQueueOptions{});
    ASSERT_TRUE(first.has_value()) << first.error().message;
    auto second = NfQueue::Open(9, NfQueueOptions{});
    ASSERT_FALSE(second.has_value());
    EXPECT_EQ(second.error().code, ErrorCode::kPermissionDenied);
    EXPECT_THAT(second.error().message, HasSubstr("binding queue 9"));
    // Once the first reader is gone the queue is free again.
    first = NfQueue::Open(10, NfQueueOptions{});  // moves out and closes the reader of 9
    EXPECT_TRUE(NfQueue::Open(9, NfQueueOptions{}).has_value());
  });
}

TEST(NfQueueTest, AVerdictForAnUnknownPacketIsCountedNotFatal) {
  TG_REQUIRE_PRIVILEGED();
  RunInNetns([] {
    auto q = NfQueue::Open(5, NfQueueOptions{});
    ASSERT_TRUE(q.has_value()) << q.error().message;
    ASSERT_TRUE(q->Verdict(5, 12345, PacketVerdict::kAccept).has_value());
    ASSERT_TRUE(q->FlushVerdicts().has_value());
    auto n = q->Receive([](const QueuedPacket&) { ADD_FAILURE() << "no packet expected"; });
    ASSERT_TRUE(n.has_value());
    EXPECT_EQ(*n, 0u);
    EXPECT_EQ(q->counters().verdict_errors, 1u);
  });
}

// The queue length is what the reader may hold, plus what can wait unread in its socket, plus
// one read round; never past what the kernel can count.
TEST(NfQueueTest, QueueLengthCoversHeldUnreadAndOneRound) {
  NfQueueOptions o;
  o.socket_buffer_bytes = 768 * 1000;  // 2x the buffer holds 2000 packets of the minimum charge
  EXPECT_EQ(QueueLengthFor(10'000, o), 10'000u + 2'000u + kReadRoundPackets);
  EXPECT_EQ(QueueLengthFor(65536 * 32, NfQueueOptions{}), 2'123'093u);  // the filter's default
  o.socket_buffer_bytes = 0;
  EXPECT_EQ(QueueLengthFor(0, o), kReadRoundPackets);
  EXPECT_EQ(QueueLengthFor(uint64_t{1} << 40, o), UINT32_MAX);
}

}  // namespace
}  // namespace tollgate::platform
