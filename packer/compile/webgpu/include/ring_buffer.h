// sdpack: stands in for src/support/ring_buffer.h, which TVM's runtime sources include but the
// apache-tvm wheel does not ship. The RPC endpoint (src/runtime/rpc/rpc_endpoint.cc) queues
// bytes between its channel and its protocol handler with this FIFO: Write/Read copy bytes in
// and out, WriteWithCallback/ReadWithCallback hand a contiguous region to a channel's
// recv/send and advance by what that moved. Written for sdpack from those uses.
#ifndef SDPACK_WEBGPU_RING_BUFFER_H_
#define SDPACK_WEBGPU_RING_BUFFER_H_

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  RingBuffer() : buf_(kInitialCapacity) {}

  /*! \brief Bytes written and not yet read. */
  size_t bytes_available() const { return size_; }

  /*! \brief Total room, used and free. */
  size_t capacity() const { return buf_.size(); }

  /*! \brief Make room for at least `n` bytes in total, keeping the queued bytes. */
  void Reserve(size_t n) {
    if (n <= buf_.size()) return;
    std::vector<char> grown(std::max(n, buf_.size() * 2));
    CopyOut(grown.data(), size_);
    buf_.swap(grown);
    head_ = 0;
  }

  /*! \brief Take `size` queued bytes (the caller checks bytes_available first). */
  void Read(void* data, size_t size) {
    size = std::min(size, size_);
    CopyOut(static_cast<char*>(data), size);
    Consume(size);
  }

  /*! \brief Queue `size` bytes, growing as needed. */
  void Write(const void* data, size_t size) {
    Reserve(size_ + size);
    const char* src = static_cast<const char*>(data);
    size_t tail = (head_ + size_) % buf_.size();
    size_t first = std::min(size, buf_.size() - tail);
    std::memcpy(buf_.data() + tail, src, first);
    std::memcpy(buf_.data(), src + first, size - first);
    size_ += size;
  }

  /*!
   * \brief Offer up to `max_nbytes` queued bytes to `fsend(const void*, size_t) -> size_t`,
   *        one contiguous region; drop what it reports sent and return that count.
   */
  template <typename FSend>
  size_t ReadWithCallback(FSend fsend, size_t max_nbytes) {
    size_t size = std::min({max_nbytes, size_, buf_.size() - head_});
    if (size == 0) return 0;
    size_t sent = fsend(buf_.data() + head_, size);
    Consume(std::min(sent, size));
    return sent;
  }

  /*!
   * \brief Let `frecv(void*, size_t) -> size_t` fill up to `max_nbytes` of free room (one
   *        contiguous region); queue what it reports received and return that count.
   */
  template <typename FRecv>
  size_t WriteWithCallback(FRecv frecv, size_t max_nbytes) {
    if (max_nbytes == 0) return 0;
    Reserve(size_ + max_nbytes);
    size_t tail = (head_ + size_) % buf_.size();
    size_t room = std::min(max_nbytes, (tail >= head_ ? buf_.size() : head_) - tail);
    size_t got = frecv(buf_.data() + tail, room);
    size_ += std::min(got, room);
    return got;
  }

 private:
  static constexpr size_t kInitialCapacity = 1024;

  void CopyOut(char* dst, size_t size) const {
    size_t first = std::min(size, buf_.size() - head_);
    std::memcpy(dst, buf_.data() + head_, first);
    std::memcpy(dst + first, buf_.data(), size - first);
  }

  void Consume(size_t size) {
    size_ -= size;
    head_ = size_ == 0 ? 0 : (head_ + size) % buf_.size();
  }

  std::vector<char> buf_;
  size_t head_ = 0;  // index of the oldest queued byte
  size_t size_ = 0;  // queued bytes
};

}  // namespace support
}  // namespace tvm

#endif  // SDPACK_WEBGPU_RING_BUFFER_H_
