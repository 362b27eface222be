// Reads the SEQPACKET messages waiting on a socket with one recvmmsg(2), so a lone message costs
// one system call rather than a recv plus the recv that finds the queue empty. Used by the
// channel client and server; each owns one reader (its buffers are reused for every read).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace tollgate::ipc {

class DatagramReader {
 public:
  // batch: messages per system call; each buffer holds max_message bytes.
  DatagramReader(size_t batch, size_t max_message);

  struct Result {
    size_t count = 0;  // messages read (0: none waiting)
    bool eof = false;  // the peer closed; comes after the `count` messages
    int error = 0;     // errno of a failed read (after the `count` messages)
  };
  // Never blocks. Reads at most `limit` messages (and at most the batch).
  Result Read(int fd, size_t limit = SIZE_MAX);

  // The i-th message of the last Read. truncated(i): it was larger than max_message (its real
  // length is length(i)); the bytes are then incomplete and must not be decoded.
  std::span<const uint8_t> message(size_t i) const {
    return {buffers_[i].data(), std::min(lengths_[i], buffers_[i].size())};
  }
  size_t length(size_t i) const { return lengths_[i]; }
  bool truncated(size_t i) const { return lengths_[i] > buffers_[i].size(); }

 private:
  std::vector<std::vector<uint8_t>> buffers_;
  std::vector<iovec> iovecs_;
  std::vector<mmsghdr> headers_;
  std::vector<size_t> lengths_;
};

}  // namespace tollgate::ipc
