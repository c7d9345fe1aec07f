// codec/rans_avx2_decode.hpp — the AVX2 rANS decoders' rounds, as templates:
// eight lanes per register, up to eight independent registers (64 lanes).
// Same arithmetic and the same bytes as the scalar decoder in
// rans_scalar.cpp; see rans_kernels.hpp. Included only by the two files
// that instantiate them, each with the compiler flags its kernel runs best
// with (CMakeLists.txt): rans_avx2_decode.cpp the gather kernel ("avx2"),
// rans_avx2x_decode.cpp the scalar-load kernel ("avx2x"). Everything here
// has internal linkage, so each file's copy is compiled with its own flags.
#pragma once
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "codec/rans_kernels.hpp"

namespace mithril::codec::rans::detail {
namespace {

using u8 = std::uint8_t;
using u32 = std::uint32_t;

// Decoder: lane k of an 8-lane group takes the (number of renormalising lanes
// below k)-th 16-bit word of the group's 16-byte load, zero-extended; lanes
// that do not renormalise get 0. As vpshufb controls on the load broadcast to
// both 128-bit halves: bytes 2j, 2j + 1 of the load, then two zero bytes
// (0x80: vpshufb writes 0).
struct ExpandLut {
  alignas(32) u8 ctl[256][32];
};
constexpr ExpandLut make_expand_lut() {
  ExpandLut l{};
  for (unsigned m = 0; m < 256; ++m)
    for (unsigned k = 0, j = 0; k < 8; ++k) {
      const bool takes = (m >> k) & 1;
      l.ctl[m][4 * k] = takes ? static_cast<u8>(2 * j) : 0x80;
      l.ctl[m][4 * k + 1] = takes ? static_cast<u8>(2 * j + 1) : 0x80;
      l.ctl[m][4 * k + 2] = 0x80;
      l.ctl[m][4 * k + 3] = 0x80;
      j += takes;
    }
  return l;
}
constexpr ExpandLut k_expand = make_expand_lut();

// How a decoder group looks up its eight table entries.
enum class Lookup {
  gather,  // _mm256_i32gather_epi32: the "avx2" kernel (fast on Intel)
  loads,   // eight scalar loads: the "avx2x" kernel (AVX2 gathers are slow on AMD Zen)
};

// Eight 32-bit table entries by scalar loads, put together with vmovd +
// vpinsrd. The slots leave the vector register two at a time (vmovq /
// vpextrq, split with a shift in the integer units): on AMD Zen 3, where
// vpextrd is two uops on the vector side, that measured 3-17% faster than
// one vpextrd per slot in seven of eight medians (one 2% slower) of 4-5
// paired bench_rans runs on bf16 exponent planes (synthetic and MiniLM's,
// 1 and 16 MiB blocks; the shared machine's noise was +-20%);
// putting pairs of entries together in integer registers and inserting them
// with vpinsrq measured 7% slower, and storing the entries for one vector
// reload 3x slower (the reload cannot be forwarded from eight stores).
__attribute__((target("avx2"))) inline __m256i lookup_loads(const u32* table, __m256i slot) {
  const __m128i l = _mm256_castsi256_si128(slot);
  const __m128i h = _mm256_extracti128_si256(slot, 1);
  const auto a = static_cast<std::uint64_t>(_mm_cvtsi128_si64(l));
  const auto b = static_cast<std::uint64_t>(_mm_extract_epi64(l, 1));
  const auto c = static_cast<std::uint64_t>(_mm_cvtsi128_si64(h));
  const auto d = static_cast<std::uint64_t>(_mm_extract_epi64(h, 1));
  auto at = [table](std::uint64_t i) { return static_cast<int>(table[static_cast<u32>(i)]); };
  __m128i lo = _mm_cvtsi32_si128(at(a));
  __m128i hi = _mm_cvtsi32_si128(at(c));
  lo = _mm_insert_epi32(lo, at(a >> 32), 1);
  hi = _mm_insert_epi32(hi, at(c >> 32), 1);
  lo = _mm_insert_epi32(lo, at(b), 2);
  hi = _mm_insert_epi32(hi, at(d), 2);
  lo = _mm_insert_epi32(lo, at(b >> 32), 3);
  hi = _mm_insert_epi32(hi, at(d >> 32), 3);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

// The symbol bytes of eight slots (wide table) by scalar loads, one per dword.
__attribute__((target("avx2"))) inline __m256i lookup_sym_loads(const u8* sym, __m256i slot) {
  alignas(32) u32 i[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(i), slot);
  return _mm256_setr_epi32(sym[i[0]], sym[i[1]], sym[i[2]], sym[i[3]], sym[i[4]], sym[i[5]], sym[i[6]], sym[i[7]]);
}

struct DecConsts {
  __m256i mask;    // 2^scale - 1
  __m128i shift;   // scale
  const u32* slots;
  const u8* sym;   // wide table only
};

// One group of eight lanes: one decoding step and the renormalisation of x,
// whose words come from p (advanced past them). Returns the symbols, one per
// dword, each < 256. The group's 16-byte load stays within the 2 * lanes
// bytes that a round requires. Lean (packed table): each symbol comes with
// its table entry's high bits (the caller keeps the low byte), and the bias
// is cut out of the entry by two shifts rather than a shift and a mask: two
// constants fewer held in registers, for the gather kernel's unrolled rounds.
template <bool Packed, Lookup L, bool Lean = false>
__attribute__((always_inline, target("avx2,popcnt"))) inline __m256i decode_group(__m256i& x, const u8*& p,
                                                                                   const DecConsts& k) {
  const __m256i slot = _mm256_and_si256(x, k.mask);
  __m256i e, s, y;
  if constexpr (L == Lookup::gather)
    e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(k.slots), slot, 4);
  else
    e = lookup_loads(k.slots, slot);
  if constexpr (Packed) {
    s = Lean ? e : _mm256_and_si256(e, _mm256_set1_epi32(0xff));
    y = _mm256_mullo_epi32(_mm256_srli_epi32(e, 20), _mm256_srl_epi32(x, k.shift));
    const __m256i bias = Lean ? _mm256_srli_epi32(_mm256_slli_epi32(e, 12), 20)
                              : _mm256_and_si256(_mm256_srli_epi32(e, 8), _mm256_set1_epi32(0xfff));
    y = _mm256_add_epi32(y, bias);
  } else {
    if constexpr (L == Lookup::gather)
      s = _mm256_and_si256(_mm256_i32gather_epi32(reinterpret_cast<const int*>(k.sym), slot, 1),
                           _mm256_set1_epi32(0xff));
    else
      s = lookup_sym_loads(k.sym, slot);
    y = _mm256_mullo_epi32(_mm256_and_si256(e, _mm256_set1_epi32(0xffff)), _mm256_srl_epi32(x, k.shift));
    y = _mm256_add_epi32(y, _mm256_srli_epi32(e, 16));
  }
  const __m256i renorm = _mm256_cmpeq_epi32(_mm256_srli_epi32(y, 16), _mm256_setzero_si256());
  const auto bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(renorm)));
  const __m256i w = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
                                        _mm256_load_si256(reinterpret_cast<const __m256i*>(k_expand.ctl[bits])));
  x = _mm256_or_si256(_mm256_sllv_epi32(y, _mm256_and_si256(renorm, _mm256_set1_epi32(16))), w);
  p += 2 * _mm_popcnt_u32(bits);
  return s;
}

// Four groups (32 lanes) whose symbols leave in one 32-byte store:
// packus_epi32 twice and packus_epi16 leave, in dword j of 128-bit half h,
// lanes 4h..4h+3 of group j; one vpermd puts them in lane order. Measured on
// Zen 5 against one shuffle + permute + 8-byte store per group: 1.76 vs
// 1.44 GB/s with gathers.
__attribute__((always_inline, target("avx2"))) inline void store_quad(const __m256i* s, u8* o) {
  const __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(s[0], s[1]), _mm256_packus_epi32(s[2], s[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(o),
                      _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

template <bool Packed, Lookup L>
__attribute__((always_inline, target("avx2,popcnt"))) inline void decode_quad(__m256i* x, const u8*& p, u8* o,
                                                                              const DecConsts& k) {
  __m256i s[4];
  for (unsigned j = 0; j < 4; ++j) s[j] = decode_group<Packed, L>(x[j], p, k);
  store_quad(s, o);
}

// Same arithmetic as the scalar decoder, eight lanes per register; a round
// starts only when 2 * Lanes bytes remain, which covers every group's load.
// With scalar loads the groups are fully unrolled, four at a time storing
// their symbols together (decode_quad). The gather kernel's groups are
// unrolled too, each storing its own eight symbols and decoded Lean: on
// Zen 5 (MiniLM exponents, 64 lanes) it ran at 1.05 GB/s unrolled in quads
// and 1.67 GB/s rolled (scalar loads 2.0-2.5 GB/s either way, within the
// noise of the shared machine; AMD CPUs time it slower than avx2x, which
// they then run). On the Intel Xeon with AMX (MITHRIL_ISA=avx2, session
// 51), rolled with quads against unrolled Lean groups, bench_rans medians
// of 6-8 alternations, 1 MiB blocks: bf16 exponents 7.73 -> 7.04 ms, fp16
// high bytes 7.95 -> 7.15, MiniLM's exponents 8.06 -> 7.25 (2.2 -> 2.4
// GB/s); the rolled loop unrolled by 2 or 4 was level, quads unrolled 1.35x
// slower, every other group by scalar loads 1.15-1.2x slower. Unrolled
// without Lean, the eight states and nine constants outnumber the sixteen
// ymm registers more (2-4% slower than Lean).
//
// On AMD Zen 3 (2.45 GHz, quiet; bench_rans best of 5 rounds, 64 lanes, bf16
// exponents) avx2x decoded at 1.64-1.70 GB/s: ~11.7 cycles per group of
// eight. Each of these measured level (within 1%): the cursor's
// end/out/rounds held in locals, a 64-bit popcount, the renormalisation test
// as min_epu32 + cmpeq instead of a shift. Each of these, which also lengthen
// a group's dependency chain, lost: slots out through one store and eight
// 32-bit reloads (-6%), table entries by vbroadcastss loads + seven vpblendd
// (-3 to -5%; -8% with the stored slots), one group in eight, four or two
// with a gather (-6%, -16%, -20%). What moved it (session 34, old and new
// binaries alternating, 8 rounds, MiniLM, N(0, 0.02) and fp16 planes, 1 and
// 16 MiB blocks): the renormalisation words by vpshufb of a broadcast load
// and vpsllvd instead of vpmovzxwd + vpermd + vpblendvb (fewer macro-ops, a
// shorter chain), then GCC's pre-RA scheduler (CMakeLists.txt),
// which interleaves a round's groups: medians 1431-1515 -> 1800-1881 MiB/s
// (1.89-1.97 GB/s). Level or slower: the four groups of a quad written stage
// by stage by hand (level; the scheduler does it), the eight table entries
// as a tree of vpunpckldq instead of the vpinsrd chains (-10%), even and odd
// slots split in the vector so that no shift or zero-extension is left to
// the integer units (eight transfers instead of four: -10%), the slots out
// through a store and 64-bit reloads (level), a 64-bit popcount (level), two
// rounds per iteration (level), the shift by an immediate (level). A group
// is ~60 instructions (8 table loads folded into vmovd/vpinsrd, 4 slot
// extractions, 4 shr + 4 mov for the 32-bit halves, the arithmetic, two
// spilled states), ~11-12 cycles at ~2.87 GHz (a dependent-add loop's
// clock): fewer macro-ops per symbol is what is left. Session 35 (same
// harness, 8 rounds): each upper slot by BMI2 shrx instead of mov + shr
// (level), the slots packed to 16 bits and split by movzx / bextr (-3 to
// -8%), the vpsllvd counts from a second table instead of renorm & 16 (-5
// to -9%), the slots stored once and reloaded as eight 32-bit indices (-22%:
// store-to-load forwarding from a 256-bit store), and the decoders built by
// clang 14 (373 instructions a round against GCC's 430, yet -5%).
template <unsigned V, bool Packed, Lookup L>
__attribute__((target("avx2,popcnt"))) void decode_rounds_v(const DecTables& t, DecodeCursor& c) {
  constexpr unsigned Lanes = 8 * V;
  __m256i x[V];
  for (unsigned v = 0; v < V; ++v) x[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.x + 8 * v));
  const DecConsts k{_mm256_set1_epi32(static_cast<int>((u32{1} << t.scale) - 1)),
                    _mm_cvtsi32_si128(static_cast<int>(t.scale)), t.slots.get(), t.sym.get()};
  // Low byte of each dword to the bottom of each 128-bit half, then halves together.
  const __m256i pack_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                              0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i pack_halves = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
  const u8* p = c.p;
  std::size_t r = c.round;
  for (; r < c.rounds && c.end - p >= static_cast<std::ptrdiff_t>(2 * Lanes); ++r) {
    u8* o = c.out + r * Lanes;
    if constexpr (V % 4 != 0 || L == Lookup::gather) {
#pragma GCC unroll 8
      for (unsigned v = 0; v < V; ++v) {
        const __m256i s = decode_group<Packed, L, L == Lookup::gather>(x[v], p, k);
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(s, pack_bytes), pack_halves);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(o + 8 * v), _mm256_castsi256_si128(b));
      }
    } else {
#pragma GCC unroll 8
      for (unsigned v = 0; v < V; v += 4) decode_quad<Packed, L>(x + v, p, o + 8 * v, k);
    }
  }
  for (unsigned v = 0; v < V; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c.x + 8 * v), x[v]);
  c.p = p;
  c.round = r;
}

// The kernel of one lookup, for 8-64 lanes (packed or wide table); null for
// fewer than 8 lanes.
template <Lookup L>
DecodeRoundsFn decode_rounds_table(unsigned lanes_log2, bool packed) {
  constexpr DecodeRoundsFn fns[2][4] = {
      {decode_rounds_v<1, false, L>, decode_rounds_v<2, false, L>, decode_rounds_v<4, false, L>,
       decode_rounds_v<8, false, L>},
      {decode_rounds_v<1, true, L>, decode_rounds_v<2, true, L>, decode_rounds_v<4, true, L>,
       decode_rounds_v<8, true, L>}};
  return lanes_log2 >= 3 ? fns[packed][lanes_log2 - 3] : nullptr;
}

}  // namespace
}  // namespace mithril::codec::rans::detail
#endif
