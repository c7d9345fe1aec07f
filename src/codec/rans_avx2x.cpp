// codec/rans_avx2x.cpp — the "avx2x" rANS encoder: table entries by scalar
// loads, for AMD Zen, whose AVX2 gathers are slow. Its rounds are in
// rans_avx2_encode.hpp; scheduled for Zen 3 (-mtune=znver3: no other
// instructions, another order; CMakeLists.txt).
#if defined(__x86_64__) && defined(__GNUC__)
#include "codec/rans_avx2_encode.hpp"

namespace mithril::codec::rans::detail {

EncodeRoundsFn encode_rounds_avx2x(unsigned lanes_log2) { return encode_rounds_table<true>(lanes_log2); }

}  // namespace mithril::codec::rans::detail
#endif
