// sdpack: stands in for 3rdparty/compiler-rt/builtin_fp16.h, which TVM's runtime sources include
// but the apache-tvm wheel does not ship. The wasm runtime uses only the widening conversion,
// `__extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(bits)` (IEEE half -> float, in
// src/runtime/extra/contrib/sort/sort.cc). Written for sdpack: an exact IEEE-754 widening of
// any binary format into a wider one (zeros, subnormals, infinities and NaNs included).
#ifndef SDPACK_WEBGPU_BUILTIN_FP16_H_
#define SDPACK_WEBGPU_BUILTIN_FP16_H_

#include <climits>
#include <cstdint>
#include <cstring>

template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T,
          typename DST_REP_T, int DST_SIG_BITS>
static inline DST_T __extendXfYf2__(SRC_T a) {
  constexpr int kSrcBits = sizeof(SRC_T) * CHAR_BIT;
  constexpr int kDstBits = sizeof(DST_T) * CHAR_BIT;
  constexpr int kSrcExpBits = kSrcBits - SRC_SIG_BITS - 1;
  constexpr int kDstExpBits = kDstBits - DST_SIG_BITS - 1;
  constexpr int kSrcBias = (1 << (kSrcExpBits - 1)) - 1;
  constexpr int kDstBias = (1 << (kDstExpBits - 1)) - 1;
  constexpr SRC_REP_T kSrcExpMax = (SRC_REP_T(1) << kSrcExpBits) - 1;
  constexpr DST_REP_T kDstExpMax = (DST_REP_T(1) << kDstExpBits) - 1;
  constexpr SRC_REP_T kSrcSigMask = (SRC_REP_T(1) << SRC_SIG_BITS) - 1;

  SRC_REP_T rep;
  std::memcpy(&rep, &a, sizeof(rep));
  DST_REP_T sign = static_cast<DST_REP_T>((rep >> (kSrcBits - 1)) & 1);
  SRC_REP_T exp = (rep >> SRC_SIG_BITS) & kSrcExpMax;
  SRC_REP_T sig = rep & kSrcSigMask;

  DST_REP_T out_exp;
  DST_REP_T out_sig;
  if (exp == kSrcExpMax) {  // infinity or NaN: keep the payload
    out_exp = kDstExpMax;
    out_sig = static_cast<DST_REP_T>(sig) << (DST_SIG_BITS - SRC_SIG_BITS);
  } else if (exp != 0) {  // normal
    out_exp = static_cast<DST_REP_T>(static_cast<int>(exp) - kSrcBias + kDstBias);
    out_sig = static_cast<DST_REP_T>(sig) << (DST_SIG_BITS - SRC_SIG_BITS);
  } else if (sig == 0) {  // signed zero
    out_exp = 0;
    out_sig = 0;
  } else {  // subnormal: normalise (the wider format represents it as a normal number)
    int e = 1 - kSrcBias;
    DST_REP_T s = sig;
    while ((s & (DST_REP_T(1) << SRC_SIG_BITS)) == 0) {
      s <<= 1;
      --e;
    }
    out_exp = static_cast<DST_REP_T>(e + kDstBias);
    out_sig = (s & kSrcSigMask) << (DST_SIG_BITS - SRC_SIG_BITS);
  }
  DST_REP_T bits = (sign << (kDstBits - 1)) | (out_exp << DST_SIG_BITS) | out_sig;
  DST_T result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

#endif  // SDPACK_WEBGPU_BUILTIN_FP16_H_
