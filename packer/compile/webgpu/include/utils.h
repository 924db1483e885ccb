// sdpack: stands in for src/support/utils.h, which TVM's runtime sources include but the
// apache-tvm wheel does not ship. The wasm runtime needs only StartsWith (RPC error matching in
// src/runtime/rpc/rpc_endpoint.cc). Written for sdpack from that use.
#ifndef SDPACK_WEBGPU_UTILS_H_
#define SDPACK_WEBGPU_UTILS_H_

#include <string>

namespace tvm {
namespace support {

/*! \brief Whether `value` begins with `prefix`. */
inline bool StartsWith(const std::string& value, const std::string& prefix) {
  return value.size() >= prefix.size() && value.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace support
}  // namespace tvm

#endif  // SDPACK_WEBGPU_UTILS_H_
