// codec/rans_avx2x_decode.cpp — the "avx2x" rANS decoder: table entries by
// scalar loads, for AMD Zen, whose AVX2 gathers are slow. Its rounds are in
// rans_avx2_decode.hpp; GCC compiles this file with its pre-register-
// allocation scheduler and schedules it for Zen 3 (-mtune=znver3: no other
// instructions, another order; CMakeLists.txt).
#if defined(__x86_64__) && defined(__GNUC__)
#include "codec/rans_avx2_decode.hpp"

namespace mithril::codec::rans::detail {

DecodeRoundsFn decode_rounds_avx2x(unsigned lanes_log2, bool packed) {
  return decode_rounds_table<Lookup::loads>(lanes_log2, packed);
}

}  // namespace mithril::codec::rans::detail
#endif
