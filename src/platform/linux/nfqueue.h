// A reader of one or more NFQUEUE queues over a netlink socket (libmnl + libnetfilter_queue's
// nfq_nlmsg_* helpers). tollgate-filter (and the bench's nfq-floor) poll fd(), call Receive() to
// get every queued packet, call Verdict() for each when it is decided, and FlushVerdicts() once per
// loop turn so a burst of verdicts costs one sendmsg. Nothing here allocates per packet: one
// receive buffer and one verdict batch buffer are sized at Open().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>

#include "common/error.h"
#include "common/flow.h"  // kUnknownId

namespace tollgate::platform {

struct NfQueueOptions {
  // Bytes of each packet copied to us. The filter needs headers plus the first payload bytes it
  // inspects (TLS ClientHello, HTTP Host), not whole 64 KiB GSO packets.
  uint32_t copy_range = 0xffff;
  // NFQA_CFG_F_FAIL_OPEN: when our queue is full (or our socket overruns) the kernel accepts the
  // packet instead of dropping it. Chosen from the fallback policy, like --queue-bypass.
  bool fail_open = false;
  bool want_uid_gid = true;  // NFQA_CFG_F_UID_GID: the local user behind a socket, for the daemon
  // NFQA_CFG_F_GSO: take GSO super-packets as they are instead of having the kernel segment them
  // for us (and compute checksums). We never rewrite packets, so the saving is free.
  bool gso = true;
  uint32_t max_queue_len = 0;  // packets held in the kernel at once; 0 leaves the default (1024)
  // SO_RCVBUF(FORCE) of the netlink socket: a burst of new flows must fit while we are busy.
  uint32_t socket_buffer_bytes = 8u << 20;
};

// A max_queue_len for a reader that holds at most `held_packets` packets at once while it decides
// on them: those, plus every packet that can wait unread in its socket (the kernel lets twice
// socket_buffer_bytes build up, and charges each queued packet at least kMinQueuedPacketBytes of
// it) and one read round (kReadRoundPackets) not yet given its verdict. With that length the
// reader's own bounds and fallback policy act before the kernel's queue is full: a stalled reader
// overruns its socket first, and the kernel then accepts (fail_open) or drops what does not fit.
// At least the kernel's default (1024), at most UINT32_MAX.
inline constexpr uint64_t kMinQueuedPacketBytes = 768;  // measured: ~830 for a small UDP datagram
inline constexpr uint64_t kReadRoundPackets = 4096;
uint32_t QueueLengthFor(uint64_t held_packets, const NfQueueOptions& options);

// Where the kernel queued the packet (nfqnl_msg_packet_hdr.hook, NF_INET_*).
enum class QueueHook : uint8_t {
  kPreRouting = 0,
  kLocalIn = 1,
  kForward = 2,
  kLocalOut = 3,
  kPostRouting = 4,
};

struct QueuedPacket {
  uint32_t queue = 0;
  uint32_t packet_id = 0;
  uint16_t hw_protocol = 0;  // ETH_P_IP / ETH_P_IPV6, host order
  QueueHook hook = QueueHook::kLocalOut;
  uint32_t mark = 0;          // skb mark; 0 when the kernel sent none
  uint32_t uid = kUnknownId;  // socket owner when the kernel knows the socket
  uint32_t gid = kUnknownId;
  uint32_t in_iface = 0;       // ifindex, 0 when none (locally generated)
  uint32_t out_iface = 0;      // ifindex, 0 when none (INPUT)
  uint32_t packet_length = 0;  // length before copy_range cut it (== payload.size() if not cut)
  bool gso = false;            // a GSO super-packet (NFQA_SKB_GSO)
  // The IP packet, starting at the IP header. Points into the reader's buffer: valid only until
  // the callback returns.
  std::span<const uint8_t> payload;
};

enum class PacketVerdict : uint32_t {
  kDrop = 0,    // NF_DROP
  kAccept = 1,  // NF_ACCEPT: continue with the next hook; the rest of this table's chain is skipped
  kRepeat = 4,  // NF_REPEAT: run this hook's table again from its first rule (give it a mark!)
};

struct NfQueueCounters {
  uint64_t received = 0;        // packets handed to the callback
  uint64_t verdicts = 0;        // verdict messages sent
  uint64_t batches = 0;         // sendmsg calls that carried them
  uint64_t verdict_errors = 0;  // verdicts the kernel refused (unknown id, queue gone)
  uint64_t enobufs = 0;         // ENOBUFS from recv (only if NETLINK_NO_ENOBUFS is unavailable)
  // Packets the kernel queued for us but could not deliver (socket full): seen as gaps in the
  // per-queue packet ids. With fail_open they were accepted unseen, without it dropped.
  uint64_t lost = 0;
  uint64_t parse_errors = 0;          // messages we could not read (truncated, missing attributes)
  uint64_t requeued_during_open = 0;  // packets that arrived before configuration finished
};

class NfQueue {
 public:
  // Binds queue_num (or every queue of first..last) on one socket, copy mode "packet".
  // EPERM: needs CAP_NET_ADMIN; EBUSY: another process is bound to the queue.
  static Expected<NfQueue> Open(uint16_t queue_num, const NfQueueOptions& options);
  static Expected<NfQueue> Open(uint16_t first_queue, uint16_t last_queue,
                                const NfQueueOptions& options);

  NfQueue(NfQueue&&) noexcept;
  NfQueue& operator=(NfQueue&&) noexcept;
  ~NfQueue();  // closing the socket unbinds; the kernel drops packets still waiting for a verdict

  int fd() const;

  // Reads every message available now (non-blocking), up to max_packets, and calls
  // on_packet(const QueuedPacket&) for each queued packet. The callback may call Verdict(). Returns
  // the number of packets delivered; a socket error other than "nothing more" is returned.
  template <typename F>
  Expected<size_t> Receive(F&& on_packet, size_t max_packets = SIZE_MAX) {
    using Fn = std::remove_reference_t<F>;
    return ReceiveImpl([](void* ctx, const QueuedPacket& p) { (*static_cast<Fn*>(ctx))(p); },
                       const_cast<void*>(static_cast<const void*>(&on_packet)), max_packets);
  }

  // Adds a verdict to the batch; sends the batch first if it is full. `mark` sets the skb mark
  // (NFQA_MARK) and replaces the whole mark, so keep the bits that are not yours.
  Status Verdict(uint32_t queue, uint32_t packet_id, PacketVerdict verdict,
                 std::optional<uint32_t> mark = std::nullopt);
  // Sends every collected verdict in one sendmsg. Cheap when there is nothing to send.
  Status FlushVerdicts();
  size_t pending_verdicts() const;

  const NfQueueCounters& counters() const;

 private:
  struct State;
  explicit NfQueue(std::unique_ptr<State> state);
  Expected<size_t> ReceiveImpl(void (*thunk)(void*, const QueuedPacket&), void* ctx,
                               size_t max_packets);

  std::unique_ptr<State> state_;
};

}  // namespace tollgate::platform
