// codec/rans_avx2.cpp — the "avx2" rANS encoder: table entries by AVX2
// gathers, the fast way on Intel. Its rounds are in rans_avx2_encode.hpp;
// compiled with generic tuning.
#if defined(__x86_64__) && defined(__GNUC__)
#include "codec/rans_avx2_encode.hpp"

namespace mithril::codec::rans::detail {

EncodeRoundsFn encode_rounds_avx2(unsigned lanes_log2) { return encode_rounds_table<false>(lanes_log2); }

}  // namespace mithril::codec::rans::detail
#endif
