// sdpack: stands in for src/support/base64.h, which TVM's runtime sources include but the
// apache-tvm wheel does not ship. src/runtime/tensor.cc stores tensors in JSON as base64:
// `Base64OutStream(&out)` + writes + `Finish()`, and `Base64InStream(&in)` + `InitPosition()`
// + reads. Standard alphabet with '=' padding (RFC 4648); written for sdpack from those uses.
#ifndef SDPACK_WEBGPU_BASE64_H_
#define SDPACK_WEBGPU_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tvm {
namespace support {

namespace base64_detail {
inline const char* Alphabet() {
  return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}
/*! \brief The 6-bit value of a base64 character, or -1. */
inline int Value(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
inline bool IsSpace(int c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
}  // namespace base64_detail

/*! \brief Encodes what is written to it as base64 into another stream. */
class Base64OutStream : public Stream {
 public:
  explicit Base64OutStream(Stream* out) : out_(out) {}
  using Stream::Read;
  using Stream::Write;

  size_t Write(const void* ptr, size_t size) final {
    const unsigned char* bytes = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      pending_[npending_++] = bytes[i];
      if (npending_ == 3) EmitGroup();
    }
    return size;
  }

  size_t Read(void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "Base64OutStream cannot be read";
    return 0;
  }

  /*! \brief Flush the last partial group with padding; call once after the last write. */
  void Finish() {
    if (npending_ != 0) EmitGroup();
    if (!encoded_.empty()) out_->Write(encoded_.data(), encoded_.size());
    encoded_.clear();
  }

 private:
  void EmitGroup() {
    const char* abc = base64_detail::Alphabet();
    uint32_t v = static_cast<uint32_t>(pending_[0]) << 16;
    if (npending_ > 1) v |= static_cast<uint32_t>(pending_[1]) << 8;
    if (npending_ > 2) v |= pending_[2];
    encoded_ += abc[(v >> 18) & 63];
    encoded_ += abc[(v >> 12) & 63];
    encoded_ += npending_ > 1 ? abc[(v >> 6) & 63] : '=';
    encoded_ += npending_ > 2 ? abc[v & 63] : '=';
    npending_ = 0;
    if (encoded_.size() >= 4096) {
      out_->Write(encoded_.data(), encoded_.size());
      encoded_.clear();
    }
  }

  Stream* out_;
  unsigned char pending_[3] = {0, 0, 0};
  int npending_ = 0;
  std::string encoded_;
};

/*! \brief Decodes base64 read from another stream; whitespace is skipped, '=' ends the data. */
class Base64InStream : public Stream {
 public:
  explicit Base64InStream(Stream* in) : in_(in) {}
  using Stream::Read;
  using Stream::Write;

  /*! \brief Skip leading whitespace; call once before the first read. */
  void InitPosition() {
    int c = NextChar();
    while (c != -1 && base64_detail::IsSpace(c)) c = NextChar();
    lookahead_ = c;
  }

  size_t Read(void* ptr, size_t size) final {
    unsigned char* dst = static_cast<unsigned char*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (ndecoded_ == 0 && !DecodeGroup()) break;
      dst[n++] = decoded_[group_size_ - ndecoded_];
      --ndecoded_;
    }
    return n;
  }

  size_t Write(const void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "Base64InStream cannot be written";
    return 0;
  }

 private:
  int NextChar() {
    if (lookahead_ != -2) {
      int c = lookahead_;
      lookahead_ = -2;
      return c;
    }
    unsigned char c;
    return in_->Read(&c, 1) == 1 ? c : -1;
  }

  /*! \brief Decode the next group of 4 characters into decoded_; false at the end. */
  bool DecodeGroup() {
    if (ended_) return false;
    int values[4];
    int count = 0;
    while (count < 4) {
      int c = NextChar();
      if (c == -1 || c == '=') {
        ended_ = true;
        break;
      }
      if (base64_detail::IsSpace(c)) continue;
      int v = base64_detail::Value(c);
      if (v < 0) {
        TVM_FFI_THROW(ValueError) << "invalid base64 character " << c;
      }
      values[count++] = v;
    }
    if (count < 2) return false;
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits = (bits << 6) | static_cast<uint32_t>(i < count ? values[i] : 0);
    decoded_[0] = static_cast<unsigned char>(bits >> 16);
    decoded_[1] = static_cast<unsigned char>(bits >> 8);
    decoded_[2] = static_cast<unsigned char>(bits);
    group_size_ = count - 1;  // 4 chars -> 3 bytes, 3 -> 2, 2 -> 1
    ndecoded_ = group_size_;
    return true;
  }

  Stream* in_;
  int lookahead_ = -2;  // -2: none, -1: end of input
  bool ended_ = false;
  unsigned char decoded_[3] = {0, 0, 0};
  int group_size_ = 0;
  int ndecoded_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // SDPACK_WEBGPU_BASE64_H_
