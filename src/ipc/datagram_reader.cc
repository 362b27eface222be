#include "ipc/datagram_reader.h"

#include <algorithm>
#include <cerrno>

namespace tollgate::ipc {

DatagramReader::DatagramReader(size_t batch, size_t max_message)
    : buffers_(batch, std::vector<uint8_t>(max_message)),
      iovecs_(batch),
      headers_(batch),
      lengths_(batch) {}

DatagramReader::Result DatagramReader::Read(int fd, size_t limit) {
  for (size_t i = 0; i < headers_.size(); ++i) {
    iovecs_[i] = iovec{buffers_[i].data(), buffers_[i].size()};
    headers_[i] = mmsghdr{};
    headers_[i].msg_hdr.msg_iov = &iovecs_[i];
    headers_[i].msg_hdr.msg_iovlen = 1;
  }
  Result r;
  int n;
  do {
    // MSG_TRUNC: msg_len is the real length, so an oversize message is detected, not cut.
    n = ::recvmmsg(fd, headers_.data(), static_cast<unsigned>(std::min(limit, headers_.size())),
                   MSG_DONTWAIT | MSG_TRUNC, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) r.error = errno;
    return r;
  }
  // A zero-length read is the peer's close: our protocol has no empty messages.
  for (int i = 0; i < n; ++i) {
    if (headers_[i].msg_len == 0) {
      r.eof = true;
      break;
    }
    lengths_[r.count++] = headers_[i].msg_len;
  }
  return r;
}

}  // namespace tollgate::ipc
