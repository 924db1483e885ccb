// sdpack: stands in for src/support/arena.h, which TVM's runtime sources include but the
// apache-tvm wheel does not ship. The RPC endpoint (src/runtime/rpc/rpc_endpoint.cc) takes
// short-lived scratch arrays with `arena_.allocate_<T>(n)` and frees them all at once with
// `RecycleAll()`; this is a plain bump allocator over growing blocks, written for sdpack.
#ifndef SDPACK_WEBGPU_ARENA_H_
#define SDPACK_WEBGPU_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace tvm {
namespace support {

class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  /*! \brief Uninitialised room for `count` objects of trivial type T, valid until RecycleAll. */
  template <typename T>
  T* allocate_(size_t count = 1) {
    return static_cast<T*>(Alloc(sizeof(T) * count, alignof(T)));
  }

  /*! \brief Release every allocation; the largest block is kept for reuse. */
  void RecycleAll() {
    if (blocks_.size() > 1) {
      size_t largest = 0;
      for (size_t i = 1; i < blocks_.size(); ++i) {
        if (blocks_[i].size > blocks_[largest].size) largest = i;
      }
      Block keep = std::move(blocks_[largest]);
      blocks_.clear();
      blocks_.push_back(std::move(keep));
    }
    used_ = 0;
  }

 private:
  struct Block {
    std::unique_ptr<unsigned char[]> data;
    size_t size;
  };
  static constexpr size_t kMinBlock = 16 * 1024;

  void* Alloc(size_t size, size_t align) {
    if (!blocks_.empty()) {
      void* p = Fit(blocks_.back(), size, align);
      if (p != nullptr) return p;
    }
    size_t want = size + align;
    size_t grow = blocks_.empty() ? kMinBlock : blocks_.back().size * 2;
    Block block{std::unique_ptr<unsigned char[]>(new unsigned char[want > grow ? want : grow]),
                want > grow ? want : grow};
    blocks_.push_back(std::move(block));
    used_ = 0;
    return Fit(blocks_.back(), size, align);
  }

  void* Fit(Block& block, size_t size, size_t align) {
    uintptr_t base = reinterpret_cast<uintptr_t>(block.data.get());
    uintptr_t start = (base + used_ + align - 1) / align * align;
    if (start + size > base + block.size) return nullptr;
    used_ = start + size - base;
    return reinterpret_cast<void*>(start);
  }

  std::vector<Block> blocks_;
  size_t used_ = 0;  // bytes taken from the last block
};

}  // namespace support
}  // namespace tvm

#endif  // SDPACK_WEBGPU_ARENA_H_
