// codec/rans_avx2_decode.cpp — the "avx2" rANS decoder: table entries by
// AVX2 gathers, the fast way on Intel. Its rounds are in rans_avx2_decode.hpp;
// GCC compiles this file with its pre-register-allocation scheduler and
// generic tuning (CMakeLists.txt).
#if defined(__x86_64__) && defined(__GNUC__)
#include "codec/rans_avx2_decode.hpp"

namespace mithril::codec::rans::detail {

DecodeRoundsFn decode_rounds_avx2(unsigned lanes_log2, bool packed) {
  return decode_rounds_table<Lookup::gather>(lanes_log2, packed);
}

}  // namespace mithril::codec::rans::detail
#endif
