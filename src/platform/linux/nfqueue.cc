#include "platform/linux/nfqueue.h"

// Kernel headers first: libnetfilter_queue's bundled copy of nfnetlink_queue.h shares their guard.
#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

#include "common/log.h"

namespace tollgate::platform {

static_assert(static_cast<uint32_t>(PacketVerdict::kDrop) == NF_DROP);
static_assert(static_cast<uint32_t>(PacketVerdict::kAccept) == NF_ACCEPT);
static_assert(static_cast<uint32_t>(PacketVerdict::kRepeat) == NF_REPEAT);
static_assert(static_cast<uint8_t>(QueueHook::kLocalIn) == NF_INET_LOCAL_IN);
static_assert(static_cast<uint8_t>(QueueHook::kLocalOut) == NF_INET_LOCAL_OUT);

namespace {

// Room for the netlink and nfqueue headers and every attribute besides the payload (timestamps,
// hardware address, security context...), so a full copy_range payload never truncates a message.
constexpr size_t kMessageOverhead = 16 * 1024;
// Queued packets read per system call.
constexpr size_t kReceiveBatch = 16;
// One batch of verdicts: ~40 bytes each, so about 1600 per sendmsg; far below the socket's send
// buffer, which a kernel-bound netlink message must fit in.
constexpr size_t kBatchLimit = 64 * 1024;
constexpr auto kConfigAckTimeout = std::chrono::seconds(5);

uint16_t QueueOf(const nlmsghdr* nlh) {
  const auto* nfg = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
  return ntohs(nfg->res_id);
}

bool IsPacketMessage(const nlmsghdr* nlh) {
  return nlh->nlmsg_type == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET) &&
         nlh->nlmsg_len >= NLMSG_LENGTH(sizeof(nfgenmsg));
}

}  // namespace

struct NfQueue::State {
  mnl_socket* nl = nullptr;
  uint32_t portid = 0;
  uint16_t first_queue = 0;
  uint16_t last_queue = 0;
  uint32_t seq = 0;
  std::vector<uint8_t> recv_buf;
  // recvmmsg buffers, each recv_buf.size(): allocated on the first Receive, reused after.
  std::vector<std::vector<uint8_t>> recv_bufs;
  std::vector<iovec> iovecs;
  std::vector<mmsghdr> headers;
  // mnl_nlmsg_batch wants twice its limit: the message that overflows the limit is written past
  // it and moved to the front by the next reset.
  std::vector<uint8_t> batch_buf;
  mnl_nlmsg_batch* batch = nullptr;
  size_t pending = 0;              // messages in the batch, the overflowed one included
  std::vector<uint32_t> last_ids;  // per bound queue, for gap (loss) detection; 0 = none yet
  NfQueueCounters counters;

  ~State() {
    if (batch != nullptr) mnl_nlmsg_batch_stop(batch);
    if (nl != nullptr) mnl_socket_close(nl);
  }

  int fd() const { return mnl_socket_get_fd(nl); }

  // Fills `out` from one NFQNL_MSG_PACKET; false if it lacks what every packet message has.
  bool ParsePacket(const nlmsghdr* nlh, QueuedPacket& out) {
    nlattr* attr[NFQA_MAX + 1] = {};
    if (nfq_nlmsg_parse(nlh, attr) < 0 || attr[NFQA_PACKET_HDR] == nullptr ||
        mnl_attr_get_payload_len(attr[NFQA_PACKET_HDR]) < sizeof(nfqnl_msg_packet_hdr)) {
      return false;
    }
    const auto* ph =
        static_cast<const nfqnl_msg_packet_hdr*>(mnl_attr_get_payload(attr[NFQA_PACKET_HDR]));
    out = QueuedPacket{};
    out.queue = QueueOf(nlh);
    out.packet_id = ntohl(ph->packet_id);
    out.hw_protocol = ntohs(ph->hw_protocol);
    out.hook = static_cast<QueueHook>(ph->hook);
    auto u32 = [&](int type, uint32_t fallback) {
      return attr[type] != nullptr ? ntohl(mnl_attr_get_u32(attr[type])) : fallback;
    };
    out.mark = u32(NFQA_MARK, 0);
    out.uid = u32(NFQA_UID, kUnknownId);
    out.gid = u32(NFQA_GID, kUnknownId);
    out.in_iface = u32(NFQA_IFINDEX_INDEV, 0);
    out.out_iface = u32(NFQA_IFINDEX_OUTDEV, 0);
    out.gso = (u32(NFQA_SKB_INFO, 0) & NFQA_SKB_GSO) != 0;
    if (attr[NFQA_PAYLOAD] != nullptr) {
      out.payload = {static_cast<const uint8_t*>(mnl_attr_get_payload(attr[NFQA_PAYLOAD])),
                     mnl_attr_get_payload_len(attr[NFQA_PAYLOAD])};
    }
    out.packet_length = u32(NFQA_CAP_LEN, static_cast<uint32_t>(out.payload.size()));
    return true;
  }

  // Packet ids count up per queue, assigned just before the kernel tries to hand the packet to
  // our socket; an id we never see is a packet that did not fit.
  void TrackId(uint32_t queue, uint32_t id) {
    if (queue < first_queue || queue > last_queue) return;
    uint32_t& last = last_ids[queue - first_queue];
    const uint32_t step = id - last;  // unsigned: survives wrap-around
    if (last != 0 && step > 1 && step < 0x80000000u) counters.lost += step - 1;
    last = id;
  }

  Status SendBatch(size_t bytes, size_t messages) {
    const uint8_t* head = static_cast<const uint8_t*>(mnl_nlmsg_batch_head(batch));
    for (;;) {
      if (mnl_socket_sendto(nl, head, bytes) >= 0) break;
      if (errno == EINTR) continue;
      const int err = errno;
      return Unexpected(
          Error::System("NFQUEUE: sending " + std::to_string(messages) +
                            " verdicts (the packets stay queued until the socket closes)",
                        err));
    }
    counters.verdicts += messages;
    ++counters.batches;
    return {};
  }

  // Binds one queue: bind + copy mode + queue length + flags in a single config message, so the
  // queue never exists half-configured as far as our requests go.
  Status Configure(uint16_t queue, const NfQueueOptions& o) {
    alignas(nlmsghdr) uint8_t buf[512];
    nlmsghdr* nlh = nfq_nlmsg_put(reinterpret_cast<char*>(buf), NFQNL_MSG_CONFIG, queue);
    nlh->nlmsg_flags |= NLM_F_ACK;
    nlh->nlmsg_seq = ++seq;
    nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_BIND);
    nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, static_cast<int>(o.copy_range));
    if (o.max_queue_len != 0) nfq_nlmsg_cfg_put_qmaxlen(nlh, o.max_queue_len);
    uint32_t flags = 0;
    if (o.fail_open) flags |= NFQA_CFG_F_FAIL_OPEN;
    if (o.want_uid_gid) flags |= NFQA_CFG_F_UID_GID;
    if (o.gso) flags |= NFQA_CFG_F_GSO;
    const uint32_t mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_UID_GID | NFQA_CFG_F_GSO;
    mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
    mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(mask));
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
      return Unexpected(
          Error::System("NFQUEUE: sending the config of queue " + std::to_string(queue), errno));
    }
    return AwaitAck(queue, nlh->nlmsg_seq);
  }

  Status AwaitAck(uint16_t queue, uint32_t want_seq) {
    const auto deadline = std::chrono::steady_clock::now() + kConfigAckTimeout;
    for (;;) {
      const ssize_t n = recv(fd(), recv_buf.data(), recv_buf.size(), MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
          return Unexpected(Error::System("NFQUEUE: reading the config reply", errno));
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
          return Unexpected(ErrorCode::kTimeout,
                            "NFQUEUE: no reply to the config of queue " + std::to_string(queue));
        }
        pollfd p{fd(), POLLIN, 0};
        poll(&p, 1, static_cast<int>(left.count()));
        continue;
      }
      int len = static_cast<int>(n);
      for (auto* nlh = reinterpret_cast<const nlmsghdr*>(recv_buf.data()); mnl_nlmsg_ok(nlh, len);
           nlh = mnl_nlmsg_next(nlh, &len)) {
        if (nlh->nlmsg_type == NLMSG_ERROR && nlh->nlmsg_seq == want_seq) {
          const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
          if (err->error == 0) return {};
          return ConfigError(queue, -err->error);
        }
        if (IsPacketMessage(nlh)) {
          // A packet of a queue we bound a moment ago, possibly copied before the copy mode was
          // set. Send it round again (NF_REPEAT re-runs the hook, the rule queues it afresh) so
          // the caller sees it from Receive() like every other.
          QueuedPacket p;
          if (ParsePacket(nlh, p)) {
            ++counters.requeued_during_open;
            auto st = Queue(p.queue, p.packet_id, PacketVerdict::kRepeat, std::nullopt);
            if (!st) return st;
          }
        }
      }
    }
  }

  static Status ConfigError(uint16_t queue, int err) {
    std::string what = "NFQUEUE: binding queue " + std::to_string(queue);
    switch (err) {
      case EPERM:
        return Unexpected(ErrorCode::kPermissionDenied,
                          what +
                              ": operation not permitted: it needs CAP_NET_ADMIN in this "
                              "network namespace, and the queue must not be bound by another "
                              "process (see /proc/net/netfilter/nfnetlink_queue)");
      case EBUSY:
        return Unexpected(ErrorCode::kUnavailable,
                          what + ": already bound by another socket of this process");
      case EOPNOTSUPP:
        return Unexpected(ErrorCode::kUnavailable,
                          what +
                              ": the kernel does not support a requested flag (GSO, UID/GID, "
                              "fail-open); turn it off in the options");
      default:
        return Unexpected(Error::System(what, err));
    }
  }

  Status Queue(uint32_t queue, uint32_t id, PacketVerdict verdict, std::optional<uint32_t> mark) {
    nlmsghdr* nlh =
        nfq_nlmsg_put(static_cast<char*>(mnl_nlmsg_batch_current(batch)), NFQNL_MSG_VERDICT, queue);
    nfq_nlmsg_verdict_put(nlh, static_cast<int>(id), static_cast<int>(verdict));
    if (mark) nfq_nlmsg_verdict_put_mark(nlh, *mark);
    ++pending;
    if (mnl_nlmsg_batch_next(batch)) return {};
    // Full: send everything but the message that overflowed; reset moves that one to the front.
    auto st = SendBatch(mnl_nlmsg_batch_size(batch), pending - 1);
    mnl_nlmsg_batch_reset(batch);
    pending = 1;
    return st;
  }

  Status Flush() {
    if (pending == 0) return {};
    auto st = SendBatch(mnl_nlmsg_batch_size(batch), pending);
    mnl_nlmsg_batch_reset(batch);
    pending = 0;
    return st;
  }
};

NfQueue::NfQueue(std::unique_ptr<State> state) : state_(std::move(state)) {}
NfQueue::NfQueue(NfQueue&&) noexcept = default;
NfQueue& NfQueue::operator=(NfQueue&&) noexcept = default;
NfQueue::~NfQueue() = default;

Expected<NfQueue> NfQueue::Open(uint16_t queue_num, const NfQueueOptions& options) {
  return Open(queue_num, queue_num, options);
}

uint32_t QueueLengthFor(uint64_t held_packets, const NfQueueOptions& options) {
  const uint64_t unread = 2 * uint64_t{options.socket_buffer_bytes} / kMinQueuedPacketBytes;
  const uint64_t length = held_packets + unread + kReadRoundPackets;
  return static_cast<uint32_t>(std::clamp<uint64_t>(length, 1024, UINT32_MAX));
}

Expected<NfQueue> NfQueue::Open(uint16_t first_queue, uint16_t last_queue,
                                const NfQueueOptions& options) {
  if (first_queue > last_queue) {
    return Unexpected(ErrorCode::kInvalidArgument, "NFQUEUE: queue range " +
                                                       std::to_string(first_queue) + "-" +
                                                       std::to_string(last_queue) + " is empty");
  }
  if (options.copy_range == 0 || options.copy_range > 0xffff) {
    return Unexpected(
        ErrorCode::kInvalidArgument,
        "NFQUEUE: copy_range must be 1..65535 bytes, got " + std::to_string(options.copy_range));
  }
  auto s = std::make_unique<State>();
  s->first_queue = first_queue;
  s->last_queue = last_queue;
  s->last_ids.assign(static_cast<size_t>(last_queue - first_queue) + 1, 0);
  s->recv_buf.resize(options.copy_range + kMessageOverhead);
  s->batch_buf.resize(2 * kBatchLimit);
  s->batch = mnl_nlmsg_batch_start(s->batch_buf.data(), kBatchLimit);
  if (s->batch == nullptr) return Unexpected(ErrorCode::kSystem, "NFQUEUE: out of memory");

  s->nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (s->nl == nullptr) {
    return Unexpected(Error::System("NFQUEUE: socket(AF_NETLINK, NETLINK_NETFILTER)", errno));
  }
  if (mnl_socket_bind(s->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    return Unexpected(Error::System("NFQUEUE: binding the netlink socket", errno));
  }
  s->portid = mnl_socket_get_portid(s->nl);
  // Without this a full socket buffer makes recv() fail with ENOBUFS and drop the rest of what was
  // waiting; with it the kernel just counts the loss (we see it as packet-id gaps).
  int one = 1;
  if (mnl_socket_setsockopt(s->nl, NETLINK_NO_ENOBUFS, &one, sizeof(one)) < 0) {
    return Unexpected(Error::System("NFQUEUE: setsockopt(NETLINK_NO_ENOBUFS)", errno));
  }
  if (options.socket_buffer_bytes != 0) {
    int size = static_cast<int>(options.socket_buffer_bytes);
    // FORCE goes past net.core.rmem_max and needs CAP_NET_ADMIN, which the filter has anyway.
    if (setsockopt(s->fd(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0 &&
        setsockopt(s->fd(), SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) < 0) {
      return Unexpected(Error::System("NFQUEUE: setsockopt(SO_RCVBUF)", errno));
    }
  }
  for (uint32_t q = first_queue; q <= last_queue; ++q) {
    auto st = s->Configure(static_cast<uint16_t>(q), options);
    if (!st) return Unexpected(st.error());
  }
  // Packets re-queued while we were configuring go out now.
  auto st = s->Flush();
  if (!st) return Unexpected(st.error());
  TG_LOG_INFO("NFQUEUE %u-%u: queue length %u packets, socket buffer %u bytes, %s when full",
              first_queue, last_queue, options.max_queue_len != 0 ? options.max_queue_len : 1024,
              options.socket_buffer_bytes, options.fail_open ? "accept" : "drop");
  return NfQueue(std::move(s));
}

int NfQueue::fd() const { return state_ ? state_->fd() : -1; }

Expected<size_t> NfQueue::ReceiveImpl(void (*thunk)(void*, const QueuedPacket&), void* ctx,
                                      size_t max_packets) {
  State& s = *state_;
  size_t delivered = 0;
  QueuedPacket packet;
  // A burst of new flows is read kReceiveBatch messages per system call (recvmmsg), not one.
  if (s.recv_bufs.empty()) {
    s.recv_bufs.assign(kReceiveBatch, std::vector<uint8_t>(s.recv_buf.size()));
    s.iovecs.resize(kReceiveBatch);
    s.headers.resize(kReceiveBatch);
  }
  while (delivered < max_packets) {
    const size_t want = std::min<size_t>(kReceiveBatch, max_packets - delivered);
    for (size_t i = 0; i < want; ++i) {
      s.iovecs[i] = iovec{s.recv_bufs[i].data(), s.recv_bufs[i].size()};
      s.headers[i] = mmsghdr{};
      s.headers[i].msg_hdr.msg_iov = &s.iovecs[i];
      s.headers[i].msg_hdr.msg_iovlen = 1;
    }
    const int got =
        recvmmsg(s.fd(), s.headers.data(), static_cast<unsigned>(want), MSG_DONTWAIT, nullptr);
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        ++s.counters.enobufs;
        continue;
      }
      return Unexpected(Error::System("NFQUEUE: recvmmsg", errno));
    }
    for (int m = 0; m < got; ++m) {
      if ((s.headers[m].msg_hdr.msg_flags & MSG_TRUNC) != 0) {
        ++s.counters.parse_errors;  // cannot happen with buffers sized at Open; counted if it does
        continue;
      }
      int len = static_cast<int>(s.headers[m].msg_len);
      for (auto* nlh = reinterpret_cast<const nlmsghdr*>(s.recv_bufs[m].data());
           mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
        if (nlh->nlmsg_type == NLMSG_ERROR) {
          // Verdicts are sent without NLM_F_ACK, so any reply is a refusal (ENOENT: unknown id).
          const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
          if (err->error != 0) ++s.counters.verdict_errors;
          continue;
        }
        if (!IsPacketMessage(nlh)) continue;
        if (!s.ParsePacket(nlh, packet)) {
          ++s.counters.parse_errors;
          continue;
        }
        s.TrackId(packet.queue, packet.packet_id);
        ++s.counters.received;
        ++delivered;
        thunk(ctx, packet);
      }
    }
    if (static_cast<size_t>(got) < want) break;  // drained
  }
  return delivered;
}

Status NfQueue::Verdict(uint32_t queue, uint32_t packet_id, PacketVerdict verdict,
                        std::optional<uint32_t> mark) {
  return state_->Queue(queue, packet_id, verdict, mark);
}

Status NfQueue::FlushVerdicts() { return state_->Flush(); }

size_t NfQueue::pending_verdicts() const { return state_->pending; }

const NfQueueCounters& NfQueue::counters() const { return state_->counters; }

}  // namespace tollgate::platform
