// nfq-floor: the smallest useful NFQUEUE reader, accepting every packet. `scripts/bench connect`
// runs it as the floor of the connection benchmark: whatever a queue round trip costs on this
// kernel, Tollgate cannot do better, so its own cost is measured against this one.
//   nfq-floor --queue N | --queues A-B [--copy-range BYTES]
// Prints one JSON line with its counters when SIGTERM or SIGINT ends it (exit status 0).
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "common/unique_fd.h"
#include "platform/linux/nfqueue.h"

namespace {

bool ParseU32(std::string_view text, uint32_t max, uint32_t& out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size() && out <= max;
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "nfq-floor: %s\nusage: nfq-floor --queue N | --queues A-B [--copy-range BYTES]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t first = 0, last = 0, copy_range = 128;
  bool have_queue = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return Usage("missing value after an option");
    const std::string_view value = argv[++i];
    if (arg == "--queue") {
      if (!ParseU32(value, 65535, first)) return Usage("--queue wants 0..65535");
      last = first;
      have_queue = true;
    } else if (arg == "--queues") {
      const size_t dash = value.find('-');
      if (dash == std::string_view::npos || !ParseU32(value.substr(0, dash), 65535, first) ||
          !ParseU32(value.substr(dash + 1), 65535, last) || first > last) {
        return Usage("--queues wants A-B with A <= B <= 65535");
      }
      have_queue = true;
    } else if (arg == "--copy-range") {
      if (!ParseU32(value, 65535, copy_range) || copy_range == 0) {
        return Usage("--copy-range wants 1..65535");
      }
    } else {
      return Usage("unknown option");
    }
  }
  if (!have_queue) return Usage("--queue or --queues is required");

  // Signals arrive as readable data on an fd next to the queue, so the loop never runs a handler
  // in the middle of a verdict batch.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  tollgate::UniqueFd signals(signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals.valid()) {
    std::fprintf(stderr, "nfq-floor: signalfd: %s\n", std::strerror(errno));
    return 1;
  }

  // Only the headers matter to an accept-all reader; a small copy keeps the floor honest.
  tollgate::platform::NfQueueOptions options;
  options.copy_range = copy_range;
  options.want_uid_gid = true;  // what Tollgate asks for too, so the kernel does the same work
  auto queue = tollgate::platform::NfQueue::Open(static_cast<uint16_t>(first),
                                                 static_cast<uint16_t>(last), options);
  if (!queue) {
    std::fprintf(stderr, "nfq-floor: %s\n", queue.error().message.c_str());
    return 1;
  }
  std::fprintf(stderr, "nfq-floor: reading queues %u-%u\n", first, last);

  int status = 0;
  for (bool running = true; running;) {
    pollfd fds[2] = {{queue->fd(), POLLIN, 0}, {signals.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "nfq-floor: poll: %s\n", std::strerror(errno));
      status = 1;
      break;
    }
    if (fds[1].revents != 0) running = false;
    if (fds[0].revents != 0) {
      auto n = queue->Receive([&](const tollgate::platform::QueuedPacket& p) {
        (void)queue->Verdict(p.queue, p.packet_id, tollgate::platform::PacketVerdict::kAccept);
      });
      auto flushed = queue->FlushVerdicts();
      if (!n || !flushed) {
        std::fprintf(stderr, "nfq-floor: %s\n", (!n ? n.error() : flushed.error()).message.c_str());
        status = 1;
        break;
      }
    }
  }
  const auto& c = queue->counters();
  std::printf(
      "{\"received\":%llu,\"verdicts\":%llu,\"batches\":%llu,\"lost\":%llu,"
      "\"verdict_errors\":%llu}\n",
      static_cast<unsigned long long>(c.received), static_cast<unsigned long long>(c.verdicts),
      static_cast<unsigned long long>(c.batches), static_cast<unsigned long long>(c.lost),
      static_cast<unsigned long long>(c.verdict_errors));
  return status;
}
