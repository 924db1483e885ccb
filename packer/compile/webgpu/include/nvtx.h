// sdpack: stands in for <tvm/support/cuda/nvtx.h>, which TVM's runtime sources include but the
// apache-tvm wheel does not ship. NVTX marks profiler ranges for NVIDIA tools; nothing in a
// WebAssembly runtime can record them, so the range does nothing. Written for sdpack from how
// src/runtime/vm/vm.cc uses it (`support::NVTXScopedRange scope(name);`).
#ifndef SDPACK_WEBGPU_NVTX_H_
#define SDPACK_WEBGPU_NVTX_H_

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  template <typename Name>
  explicit NVTXScopedRange(const Name&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // SDPACK_WEBGPU_NVTX_H_
