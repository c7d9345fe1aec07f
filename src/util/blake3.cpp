// util/blake3.cpp — BLAKE3, written from the specification
// (https://github.com/BLAKE3-team/BLAKE3-specs/blob/master/blake3.pdf).
//
// Layout of the work:
//  * compress(): the portable compression function (7 rounds of G).
//  * hash8_avx2() / hash16_avx512(): eight / sixteen whole 1 KiB chunks at
//    once, one chunk per 32-bit lane; the hot path for large inputs. The same
//    kernels hash eight / sixteen parent nodes at once (a subtree's levels of
//    parents, about one compression per chunk, would otherwise be scalar).
//    Chosen at run time, same output as portable.
//  * Blake3 (incremental): chunk state + stack of subtree chaining values with
//    the spec's lazy merging, so the last chunk can still become the root.
//  * blake3_parallel(): the spec's tree rule (the left subtree holds the largest
//    power of two chunks that leaves at least one byte on the right) applied
//    recursively, with big subtrees hashed on different threads.
#include "util/blake3.hpp"

#include <tbb/parallel_invoke.h>
#include <tbb/task_arena.h>

#include "util/simd_level.hpp"
#include "util/tsan.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <thread>
#include <tuple>
#include <utility>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MITHRIL_BLAKE3_X86 1
#endif

namespace mithril::util {
namespace {

constexpr std::size_t k_block_len = 64;
constexpr std::size_t k_chunk_len = 1024;
// Whole chunks hashed at once, parents included (power_subtree_cv): 512 KiB,
// 16 KiB of chaining values on the stack.
constexpr std::size_t k_leaf_batch = 512;

// Spec §2.1: the IV is SHA-256's.
constexpr std::array<std::uint32_t, 8> k_iv = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                                               0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

// Spec §2.1, Table 3: domain flags.
enum : std::uint32_t {
  k_chunk_start = 1u << 0,
  k_chunk_end = 1u << 1,
  k_parent = 1u << 2,
  k_root = 1u << 3,
  k_keyed_hash = 1u << 4,
  k_derive_key_context = 1u << 5,
  k_derive_key_material = 1u << 6,
};

// Spec §2.2: message word permutation applied between rounds. Precomputed as
// the word index used by each round.
constexpr std::array<std::uint8_t, 16> k_permutation = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};

constexpr std::array<std::array<std::uint8_t, 16>, 7> make_schedule() {
  std::array<std::array<std::uint8_t, 16>, 7> s{};
  for (std::uint8_t i = 0; i < 16; ++i) s[0][i] = i;
  for (std::size_t r = 1; r < 7; ++r)
    for (std::size_t i = 0; i < 16; ++i) s[r][i] = s[r - 1][k_permutation[i]];
  return s;
}
constexpr auto k_schedule = make_schedule();

using Words8 = std::array<std::uint32_t, 8>;
using Words16 = std::array<std::uint32_t, 16>;

inline std::uint32_t load_le32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  return v;
}
inline void store_le32(std::uint8_t* p, std::uint32_t v) {
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
}

inline void g(Words16& v, int a, int b, int c, int d, std::uint32_t x, std::uint32_t y) {
  v[a] = v[a] + v[b] + x;
  v[d] = std::rotr(v[d] ^ v[a], 16);
  v[c] = v[c] + v[d];
  v[b] = std::rotr(v[b] ^ v[c], 12);
  v[a] = v[a] + v[b] + y;
  v[d] = std::rotr(v[d] ^ v[a], 8);
  v[c] = v[c] + v[d];
  v[b] = std::rotr(v[b] ^ v[c], 7);
}

// The seven rounds (spec §2.2) of quarter-round `G`, unrolled with each
// round's message schedule as constants: indexing the message words with a
// schedule read at run time keeps them in memory (one scalar load, shift and
// memory operand per word), which halved the SIMD kernels' speed.
#define MITHRIL_BLAKE3_ROUND(G, v, m, s)          \
  G(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);            \
  G(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);            \
  G(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);           \
  G(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);           \
  G(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);           \
  G(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);         \
  G(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);          \
  G(v, 3, 4, 9, 14, m[s[14]], m[s[15]])

template <std::size_t... R>
[[gnu::always_inline]] inline void rounds(Words16& v, const Words16& m, std::index_sequence<R...>) {
  const auto one = [&]<std::size_t Round>() {
    constexpr auto s = k_schedule[Round];
    MITHRIL_BLAKE3_ROUND(g, v, m, s);
  };
  (one.template operator()<R>(), ...);
}

// Full 16-word output of the compression function (spec §2.2).
Words16 compress(const Words8& cv, const std::uint8_t block[k_block_len], std::uint64_t counter,
                 std::uint32_t block_len, std::uint32_t flags) {
  Words16 m;
  for (int i = 0; i < 16; ++i) m[i] = load_le32(block + 4 * i);
  Words16 v = {cv[0],    cv[1],    cv[2],    cv[3],
               cv[4],    cv[5],    cv[6],    cv[7],
               k_iv[0],  k_iv[1],  k_iv[2],  k_iv[3],
               static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32),
               block_len, flags};
  rounds(v, m, std::make_index_sequence<7>{});
  for (int i = 0; i < 8; ++i) {
    v[i] ^= v[i + 8];
    v[i + 8] ^= cv[i];
  }
  return v;
}

Words8 first8(const Words16& w) {
  Words8 r;
  std::copy_n(w.begin(), 8, r.begin());
  return r;
}

// The last compression of a node, kept unevaluated so that it can be either a
// chaining value (non-root) or the root's extendable output.
struct Output {
  Words8 cv;
  std::array<std::uint8_t, k_block_len> block;
  std::uint64_t counter;
  std::uint32_t block_len;
  std::uint32_t flags;

  Words8 chaining_value() const { return first8(compress(cv, block.data(), counter, block_len, flags)); }

  void root_bytes(std::span<std::uint8_t> out) const {
    std::uint64_t out_counter = 0;
    std::size_t pos = 0;
    while (pos < out.size()) {
      Words16 w = compress(cv, block.data(), out_counter++, block_len, flags | k_root);
      std::uint8_t buf[64];
      for (int i = 0; i < 16; ++i) store_le32(buf + 4 * i, w[i]);
      std::size_t take = std::min<std::size_t>(64, out.size() - pos);
      std::memcpy(out.data() + pos, buf, take);
      pos += take;
    }
  }
};

Output parent_output(const Words8& left, const Words8& right, const Words8& key, std::uint32_t flags) {
  Output o;
  o.cv = key;
  for (int i = 0; i < 8; ++i) {
    store_le32(o.block.data() + 4 * i, left[i]);
    store_le32(o.block.data() + 32 + 4 * i, right[i]);
  }
  o.counter = 0;
  o.block_len = k_block_len;
  o.flags = flags | k_parent;
  return o;
}

Words8 parent_cv(const Words8& left, const Words8& right, const Words8& key, std::uint32_t flags) {
  return parent_output(left, right, key, flags).chaining_value();
}

// Output of one chunk of 1..1024 bytes (or 0 bytes for the empty input).
Output chunk_output(const std::uint8_t* data, std::size_t len, const Words8& key, std::uint64_t counter,
                    std::uint32_t flags) {
  Words8 cv = key;
  std::size_t blocks = len == 0 ? 1 : (len + k_block_len - 1) / k_block_len;
  for (std::size_t b = 0; b + 1 < blocks; ++b) {
    std::uint32_t f = flags | (b == 0 ? k_chunk_start : 0u);
    cv = first8(compress(cv, data + b * k_block_len, counter, k_block_len, f));
  }
  Output o;
  o.cv = cv;
  o.block.fill(0);
  std::size_t last_len = len - (blocks - 1) * k_block_len;
  if (last_len) std::memcpy(o.block.data(), data + (blocks - 1) * k_block_len, last_len);
  o.counter = counter;
  o.block_len = static_cast<std::uint32_t>(last_len);
  o.flags = flags | k_chunk_end | (blocks == 1 ? k_chunk_start : 0u);
  return o;
}

// ---- many whole chunks at once ---------------------------------------------

using HashManyFn = void (*)(const std::uint8_t* data, std::size_t n_chunks, const Words8& key,
                            std::uint64_t counter, std::uint32_t flags, Words8* out);

void hash_many_portable(const std::uint8_t* data, std::size_t n_chunks, const Words8& key, std::uint64_t counter,
                        std::uint32_t flags, Words8* out) {
  for (std::size_t i = 0; i < n_chunks; ++i)
    out[i] = chunk_output(data + i * k_chunk_len, k_chunk_len, key, counter + i, flags).chaining_value();
}

// Parents of many pairs of chaining values: parent i of children[2i] and
// children[2i + 1]. out may be children itself (parent i is written after
// children 2i and 2i + 1 are read, and never over a later pair).
using ParentsFn = void (*)(const Words8* children, std::size_t n_parents, const Words8& key, std::uint32_t flags,
                           Words8* out);

void parents_portable(const Words8* children, std::size_t n_parents, const Words8& key, std::uint32_t flags,
                      Words8* out) {
  for (std::size_t i = 0; i < n_parents; ++i) out[i] = parent_cv(children[2 * i], children[2 * i + 1], key, flags);
}

// The inputs of one SIMD call, lane by lane: lane j hashes the chunk (for
// parents: the 64-byte block, a pair of chaining values) at ptr[j] with chunk
// counter lo[j] | hi[j] << 32 (0 for parents). Lanes past the live ones
// repeat the last live lane, whose output is dropped: no padded copy, no read
// past the input.
template <std::size_t N>
struct Lanes {
  const std::uint8_t* ptr[N];
  alignas(64) std::uint32_t lo[N];
  alignas(64) std::uint32_t hi[N];
};

// `at(i)` = {pointer, counter} of input i; lanes for inputs [0, live).
template <std::size_t N, class At>
Lanes<N> make_lanes(std::size_t live, At at) {
  Lanes<N> l;
  for (std::size_t j = 0; j < N; ++j) {
    const auto [ptr, counter] = at(std::min(j, live - 1));
    l.ptr[j] = ptr;
    l.lo[j] = static_cast<std::uint32_t>(counter);
    l.hi[j] = static_cast<std::uint32_t>(counter >> 32);
  }
  return l;
}

// Where each lane's input starts inside a SIMD call: one base and a fixed
// stride (Strided: hash-many's whole batches, addressed from that one base),
// or every lane's own pointer, copied out of the Lanes (the AVX2 kernel's
// assembly clobbers memory, which would reload them every block).
template <std::size_t N, bool Strided, std::size_t Stride>
class LaneInputs {
 public:
  explicit LaneInputs(const Lanes<N>& l) noexcept {
    if constexpr (Strided)
      m_ptr[0] = l.ptr[0];
    else
      std::copy_n(l.ptr, N, m_ptr);
  }
  const std::uint8_t* operator[](std::size_t j) const noexcept {
    if constexpr (Strided)
      return m_ptr[0] + j * Stride;
    else
      return m_ptr[j];
  }

 private:
  const std::uint8_t* m_ptr[Strided ? 1 : N];
};

// Whole chunks anywhere: chunk i at chunks[i], counter counters[i].
using GatheredFn = void (*)(const std::uint8_t* const* chunks, const std::uint64_t* counters, std::size_t n,
                            const Words8& key, std::uint32_t flags, Words8* out);

void gathered_portable(const std::uint8_t* const* chunks, const std::uint64_t* counters, std::size_t n,
                       const Words8& key, std::uint32_t flags, Words8* out) {
  for (std::size_t i = 0; i < n; ++i) hash_many_portable(chunks[i], 1, key, counters[i], flags, out + i);
}

#ifdef MITHRIL_BLAKE3_X86
#define MITHRIL_AVX2 __attribute__((target("avx2")))

// Prefetch for block b of a chunk batch: the block k_ahead blocks on in each
// lane. A strided batch's last blocks fetch the start of the next batch's
// lanes instead (which lie right after this batch: hash-many's whole
// batches), where the reading of block 0 would otherwise wait on memory.
// Prefetching past the input's end is harmless (no fault).
template <std::size_t N, bool Strided, std::size_t Stride>
[[gnu::always_inline]] inline void prefetch_ahead(const LaneInputs<N, Strided, Stride>& lane, std::size_t b) {
  constexpr std::size_t k_ahead = 4;
  constexpr std::size_t blocks = Stride / k_block_len;
  for (std::size_t j = 0; j < N; ++j) {
    std::uintptr_t at = reinterpret_cast<std::uintptr_t>(lane[j]) + (b + k_ahead) * k_block_len;
    if constexpr (Strided) {
      if (b + k_ahead >= blocks) at += (N - 1) * Stride;
    }
    _mm_prefetch(reinterpret_cast<const char*>(at), _MM_HINT_T0);
  }
}

// vpshufb masks of the rotations by 16 and 8 bits (memory operands of
// compress8_asm).
alignas(32) constexpr std::uint8_t k_rot16[32] = {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
                                                  2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13};
alignas(32) constexpr std::uint8_t k_rot8[32] = {1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12,
                                                 1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12};

// 8x8 transpose of 32-bit words: row i of the input becomes column i.
MITHRIL_AVX2 inline void transpose8(__m256i* r) {
  __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
  __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
  __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
  __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
  __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
  __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
  r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
  r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
  r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
  r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
  r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

// One compression function of eight lanes in a block of inline assembly,
// laid out as the reference's hand-written AVX2 kernel is (BLAKE3 team,
// c/blake3_avx2_x86-64_unix.S; written here from that design, not copied):
// the four G functions of a half-round side by side, one instruction of each
// in turn, so that the core always has four independent chains to run. The
// sixteen state vectors and one scratch register for the shift-rotations
// need seventeen of the sixteen ymm registers, so v8 (c0 of every
// half-round: the diagonals are taken with the one through v8 first) stays
// in memory, read and written once per G step; ymm8 is the scratch.
//
// Why assembly: with intrinsics GCC 12 kept the shuffle masks in registers
// and spilled state vectors of its own choosing onto the dependency chain
// (2.47 GB/s; 2.9 with the masks forced into memory operands; 2.06-2.15 with
// the four G functions in lockstep, docs/benchmarks.md). On AMD Zen 3, one
// core, best of 8 alternating runs against the official `blake3` package
// (Rust crate, its own assembly): 1 MiB 3.49 GiB/s (intrinsics 3.11,
// official 3.66), 8 MiB 3.45 (2.96, 3.53).
// Four G steps side by side (one half of G for each of four columns): the
// columns' registers are ymm A_i, B_i, C_i, D_i, except C_0, which is v8's
// slot in memory, (%[w]); ymm8 is the scratch. X_i: the message word of
// column i (its index into m); MASK, SR, SL: the byte-shuffle mask operand
// and the shifts of this half (16 then 12, or 8 then 7).
#define B3_Y(r) "%%ymm" #r
#define B3_STEP(A0, A1, A2, A3, B0, B1, B2, B3, C1, C2, C3, D0, D1, D2, D3, X0, X1, X2, X3, MASK, SR, SL) \
  "vpaddd " #X0 "*32(%[m]), " B3_Y(A0) ", " B3_Y(A0) "\n\t"                                           \
  "vpaddd " #X1 "*32(%[m]), " B3_Y(A1) ", " B3_Y(A1) "\n\t"                                           \
  "vpaddd " #X2 "*32(%[m]), " B3_Y(A2) ", " B3_Y(A2) "\n\t"                                           \
  "vpaddd " #X3 "*32(%[m]), " B3_Y(A3) ", " B3_Y(A3) "\n\t"                                           \
  "vpaddd " B3_Y(B0) ", " B3_Y(A0) ", " B3_Y(A0) "\n\t"                                               \
  "vpaddd " B3_Y(B1) ", " B3_Y(A1) ", " B3_Y(A1) "\n\t"                                               \
  "vpaddd " B3_Y(B2) ", " B3_Y(A2) ", " B3_Y(A2) "\n\t"                                               \
  "vpaddd " B3_Y(B3) ", " B3_Y(A3) ", " B3_Y(A3) "\n\t"                                               \
  "vpxor " B3_Y(A0) ", " B3_Y(D0) ", " B3_Y(D0) "\n\t"                                                \
  "vpxor " B3_Y(A1) ", " B3_Y(D1) ", " B3_Y(D1) "\n\t"                                                \
  "vpxor " B3_Y(A2) ", " B3_Y(D2) ", " B3_Y(D2) "\n\t"                                                \
  "vpxor " B3_Y(A3) ", " B3_Y(D3) ", " B3_Y(D3) "\n\t"                                                \
  "vpshufb %[" #MASK "], " B3_Y(D0) ", " B3_Y(D0) "\n\t"                                              \
  "vpshufb %[" #MASK "], " B3_Y(D1) ", " B3_Y(D1) "\n\t"                                              \
  "vpshufb %[" #MASK "], " B3_Y(D2) ", " B3_Y(D2) "\n\t"                                              \
  "vpshufb %[" #MASK "], " B3_Y(D3) ", " B3_Y(D3) "\n\t"                                              \
  "vpaddd (%[w]), " B3_Y(D0) ", %%ymm8\n\t"                                                           \
  "vpaddd " B3_Y(D1) ", " B3_Y(C1) ", " B3_Y(C1) "\n\t"                                               \
  "vpaddd " B3_Y(D2) ", " B3_Y(C2) ", " B3_Y(C2) "\n\t"                                               \
  "vpaddd " B3_Y(D3) ", " B3_Y(C3) ", " B3_Y(C3) "\n\t"                                               \
  "vmovdqa %%ymm8, (%[w])\n\t"                                                                        \
  "vpxor %%ymm8, " B3_Y(B0) ", " B3_Y(B0) "\n\t"                                                      \
  "vpxor " B3_Y(C1) ", " B3_Y(B1) ", " B3_Y(B1) "\n\t"                                                \
  "vpxor " B3_Y(C2) ", " B3_Y(B2) ", " B3_Y(B2) "\n\t"                                                \
  "vpxor " B3_Y(C3) ", " B3_Y(B3) ", " B3_Y(B3) "\n\t"                                                \
  "vpsrld $" #SR ", " B3_Y(B0) ", %%ymm8\n\t"                                                         \
  "vpslld $" #SL ", " B3_Y(B0) ", " B3_Y(B0) "\n\t"                                                   \
  "vpor %%ymm8, " B3_Y(B0) ", " B3_Y(B0) "\n\t"                                                       \
  "vpsrld $" #SR ", " B3_Y(B1) ", %%ymm8\n\t"                                                         \
  "vpslld $" #SL ", " B3_Y(B1) ", " B3_Y(B1) "\n\t"                                                   \
  "vpor %%ymm8, " B3_Y(B1) ", " B3_Y(B1) "\n\t"                                                       \
  "vpsrld $" #SR ", " B3_Y(B2) ", %%ymm8\n\t"                                                         \
  "vpslld $" #SL ", " B3_Y(B2) ", " B3_Y(B2) "\n\t"                                                   \
  "vpor %%ymm8, " B3_Y(B2) ", " B3_Y(B2) "\n\t"                                                       \
  "vpsrld $" #SR ", " B3_Y(B3) ", %%ymm8\n\t"                                                         \
  "vpslld $" #SL ", " B3_Y(B3) ", " B3_Y(B3) "\n\t"                                                   \
  "vpor %%ymm8, " B3_Y(B3) ", " B3_Y(B3) "\n\t"
// A half-round: G on four columns, words X_i then Y_i.
#define B3_HALF(A0, A1, A2, A3, B0, B1, B2, B3, C1, C2, C3, D0, D1, D2, D3, X0, Y0, X1, Y1, X2, Y2, X3, Y3) \
  B3_STEP(A0, A1, A2, A3, B0, B1, B2, B3, C1, C2, C3, D0, D1, D2, D3, X0, X1, X2, X3, r16, 12, 20)          \
  B3_STEP(A0, A1, A2, A3, B0, B1, B2, B3, C1, C2, C3, D0, D1, D2, D3, Y0, Y1, Y2, Y3, r8, 7, 25)
// A round with message words S0..S15 (the schedule's row): the columns
// (0,4,8,12)..(3,7,11,15), then the diagonals, the one through v8 first:
// (2,7,8,13), (3,4,9,14), (0,5,10,15), (1,6,11,12).
#define B3_ROUND(S0, S1, S2, S3, S4, S5, S6, S7, S8, S9, S10, S11, S12, S13, S14, S15)  \
  B3_HALF(0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, S0, S1, S2, S3, S4, S5, S6, S7)  \
  B3_HALF(2, 3, 0, 1, 7, 4, 5, 6, 9, 10, 11, 13, 14, 15, 12, S12, S13, S14, S15, S8, S9, S10, S11)
// The rows of B3_ROUND below, as numbers (the assembly needs them literally).
constexpr std::uint8_t k_schedule_asm[7][16] = {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
                                                {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
                                                {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
                                                {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
                                                {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
                                                {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
                                                {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13}};
constexpr bool schedule_asm_matches() {
  for (std::size_t r = 0; r < 7; ++r)
    for (std::size_t i = 0; i < 16; ++i)
      if (k_schedule_asm[r][i] != k_schedule[r][i]) return false;
  return true;
}
static_assert(schedule_asm_matches(), "B3_ROUND's message schedule differs from k_schedule");

// One compression of eight lanes: h (8 chaining-value vectors, 32-byte
// aligned) is replaced by the first half of the output. w (32-byte aligned):
// w[0] the slot for v8, w[1..3] IV[1..3], w[4..7] counter low, counter high,
// block length and flags, w[8] IV[0]; all broadcast. m: the 16 message
// vectors.
MITHRIL_AVX2 inline void compress8_asm(__m256i* h, __m256i* w, const __m256i* m) {
  asm volatile(
      "vmovdqa 8*32(%[w]), %%ymm8\n\t"  // v8 = IV[0], into its slot
      "vmovdqa %%ymm8, (%[w])\n\t"
      "vmovdqa 0*32(%[h]), %%ymm0\n\t"
      "vmovdqa 1*32(%[h]), %%ymm1\n\t"
      "vmovdqa 2*32(%[h]), %%ymm2\n\t"
      "vmovdqa 3*32(%[h]), %%ymm3\n\t"
      "vmovdqa 4*32(%[h]), %%ymm4\n\t"
      "vmovdqa 5*32(%[h]), %%ymm5\n\t"
      "vmovdqa 6*32(%[h]), %%ymm6\n\t"
      "vmovdqa 7*32(%[h]), %%ymm7\n\t"
      "vmovdqa 1*32(%[w]), %%ymm9\n\t"
      "vmovdqa 2*32(%[w]), %%ymm10\n\t"
      "vmovdqa 3*32(%[w]), %%ymm11\n\t"
      "vmovdqa 4*32(%[w]), %%ymm12\n\t"
      "vmovdqa 5*32(%[w]), %%ymm13\n\t"
      "vmovdqa 6*32(%[w]), %%ymm14\n\t"
      "vmovdqa 7*32(%[w]), %%ymm15\n\t"
      // The message schedule (spec §2.2), checked against k_schedule above.
      B3_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
      B3_ROUND(2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
      B3_ROUND(3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1)
      B3_ROUND(10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6)
      B3_ROUND(12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4)
      B3_ROUND(9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7)
      B3_ROUND(11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13)
      // h = v[0..7] ^ v[8..15]
      "vpxor (%[w]), %%ymm0, %%ymm0\n\t"
      "vpxor %%ymm9, %%ymm1, %%ymm1\n\t"
      "vpxor %%ymm10, %%ymm2, %%ymm2\n\t"
      "vpxor %%ymm11, %%ymm3, %%ymm3\n\t"
      "vpxor %%ymm12, %%ymm4, %%ymm4\n\t"
      "vpxor %%ymm13, %%ymm5, %%ymm5\n\t"
      "vpxor %%ymm14, %%ymm6, %%ymm6\n\t"
      "vpxor %%ymm15, %%ymm7, %%ymm7\n\t"
      "vmovdqa %%ymm0, 0*32(%[h])\n\t"
      "vmovdqa %%ymm1, 1*32(%[h])\n\t"
      "vmovdqa %%ymm2, 2*32(%[h])\n\t"
      "vmovdqa %%ymm3, 3*32(%[h])\n\t"
      "vmovdqa %%ymm4, 4*32(%[h])\n\t"
      "vmovdqa %%ymm5, 5*32(%[h])\n\t"
      "vmovdqa %%ymm6, 6*32(%[h])\n\t"
      "vmovdqa %%ymm7, 7*32(%[h])\n\t"
      :
      : [h] "r"(h), [w] "r"(w), [m] "r"(m), [r16] "m"(*reinterpret_cast<const __m256i*>(k_rot16)),
        [r8] "m"(*reinterpret_cast<const __m256i*>(k_rot8))
      : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "xmm14", "xmm15");
}
#undef B3_ROUND
#undef B3_HALF
#undef B3_STEP
#undef B3_Y

// Eight whole chunks, one per lane; with Parent, eight parent nodes
// instead: lane j's one block is the 64 bytes at l.ptr[j] (a pair of
// chaining values), counter 0, flags | PARENT. Strided: the inputs lie one
// after another from l.ptr[0] (hash-many's whole batches), addressed from
// that one base.
template <bool Parent, bool Strided>
MITHRIL_AVX2 void hash8_avx2(const Lanes<8>& l, const Words8& key, std::uint32_t flags, Words8* out) {
  constexpr std::size_t blocks = Parent ? 1 : k_chunk_len / k_block_len;
  constexpr std::size_t stride = Parent ? k_block_len : k_chunk_len;
  alignas(32) __m256i h[8];
  for (int i = 0; i < 8; ++i) h[i] = _mm256_set1_epi32(static_cast<int>(key[i]));
  const __m256i ctr_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(l.lo));
  const __m256i ctr_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(l.hi));
  const __m256i blen = _mm256_set1_epi32(static_cast<int>(k_block_len));
  // compress8_asm's constants and v8's slot.
  alignas(32) __m256i work[9] = {_mm256_setzero_si256(),
                                 _mm256_set1_epi32(static_cast<int>(k_iv[1])),
                                 _mm256_set1_epi32(static_cast<int>(k_iv[2])),
                                 _mm256_set1_epi32(static_cast<int>(k_iv[3])),
                                 ctr_lo,
                                 ctr_hi,
                                 blen,
                                 _mm256_setzero_si256(),
                                 _mm256_set1_epi32(static_cast<int>(k_iv[0]))};

  const LaneInputs<8, Strided, stride> lane(l);
  for (std::size_t b = 0; b < blocks; ++b) {
    // (Loaded and transposed in r, which never escapes, then stored once in
    // m, the assembly's input: loaded straight into m, GCC 12 also stored
    // the untransposed words, 4% of the time.)
    __m256i r[16];
    if constexpr (!Parent) prefetch_ahead(lane, b);  // eight streams (see hash16_avx512)
    for (int j = 0; j < 8; ++j)
      r[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lane[j] + b * k_block_len));
    for (int j = 0; j < 8; ++j)
      r[8 + j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lane[j] + b * k_block_len + 32));
    transpose8(r);
    transpose8(r + 8);
    alignas(32) __m256i m[16];
    std::copy_n(r, 16, m);
    const std::uint32_t f = Parent ? flags | k_parent
                                   : flags | (b == 0 ? k_chunk_start : 0u) | (b + 1 == blocks ? k_chunk_end : 0u);
    work[7] = _mm256_set1_epi32(static_cast<int>(f));
    compress8_asm(h, work, m);
  }
  transpose8(h);
  for (int j = 0; j < 8; ++j) {
    alignas(32) std::uint32_t w[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(w), h[j]);
    std::memcpy(out[j].data(), w, sizeof w);
    if constexpr (std::endian::native == std::endian::big)
      for (auto& x : out[j]) x = __builtin_bswap32(x);
  }
}

// GCC 12's AVX-512 headers build _mm512_undefined_epi32() from a
// self-initialized variable, which -Wuninitialized flags inside inlined
// intrinsics (GCC bug 105593); the values are never read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define MITHRIL_AVX512 __attribute__((target("avx512f")))

// Four G functions side by side, step by step (the column or the diagonal
// half of a round): G i works on words a = Q[i], b = Q[4 + i], c = Q[8 + i],
// d = Q[12 + i] with message words x[i], y[i]. Each step's four operations
// are independent, which the core's schedulers then see together instead of
// four dependent chains one after the other (AMD Zen 4, one thread: 5.0 ->
// 5.3 GiB/s on 512 KiB).
template <std::array<int, 16> Q, std::size_t... I>
[[gnu::always_inline]] MITHRIL_AVX512 inline void g16x4(__m512i* v, const __m512i* x, const __m512i* y,
                                                       std::index_sequence<I...>) {
  ((v[Q[I]] = _mm512_add_epi32(_mm512_add_epi32(v[Q[I]], x[I]), v[Q[4 + I]])), ...);
  ((v[Q[12 + I]] = _mm512_ror_epi32(_mm512_xor_si512(v[Q[12 + I]], v[Q[I]]), 16)), ...);
  ((v[Q[8 + I]] = _mm512_add_epi32(v[Q[8 + I]], v[Q[12 + I]])), ...);
  ((v[Q[4 + I]] = _mm512_ror_epi32(_mm512_xor_si512(v[Q[4 + I]], v[Q[8 + I]]), 12)), ...);
  ((v[Q[I]] = _mm512_add_epi32(_mm512_add_epi32(v[Q[I]], y[I]), v[Q[4 + I]])), ...);
  ((v[Q[12 + I]] = _mm512_ror_epi32(_mm512_xor_si512(v[Q[12 + I]], v[Q[I]]), 8)), ...);
  ((v[Q[8 + I]] = _mm512_add_epi32(v[Q[8 + I]], v[Q[12 + I]])), ...);
  ((v[Q[4 + I]] = _mm512_ror_epi32(_mm512_xor_si512(v[Q[4 + I]], v[Q[8 + I]]), 7)), ...);
}

// The columns, then the diagonals (spec §2.2).
constexpr std::array<int, 16> k_columns{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
constexpr std::array<int, 16> k_diagonals{0, 1, 2, 3, 5, 6, 7, 4, 10, 11, 8, 9, 15, 12, 13, 14};

// Which input each lane of load_transposed16's words belongs to.
alignas(64) constexpr std::int32_t k_lane_order[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};

// One 64-byte block of each of the sixteen inputs (`lane`, at `offset`),
// transposed: m[i] holds word i of every input, input k_lane_order[p] in lane
// p. Inputs j and j + 8 share a register from the load on: the upper half
// comes in by a masked broadcast, which the load unit does without the
// shuffle a register stage would take, leaving two shuffle stages of 16
// and one of 16 lane moves (against four stages of 16 for a plain 16x16
// transpose of loaded blocks).
template <class Lane>
[[gnu::always_inline]] MITHRIL_AVX512 inline void load_transposed16(const Lane& lane, std::size_t offset, __m512i* m) {
  __m512i t[16];  // t[j]: words 0-7 of inputs j, j + 8; t[8 + j]: words 8-15
  for (int j = 0; j < 8; ++j) {
    const std::uint8_t* a = lane[j] + offset;
    const std::uint8_t* c = lane[j + 8] + offset;
    t[j] = _mm512_mask_broadcast_i64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))),
                                       0xF0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
    t[8 + j] = _mm512_mask_broadcast_i64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32))), 0xF0,
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32)));
  }
  // 4x4 transposes inside each 128-bit lane, four registers at a time: s[4g + x]
  // lane L then holds word 4 (L % 2) + x (+ 8 for g >= 2) of inputs 4 (g % 2)
  // .. 4 (g % 2) + 3, plus 8 where L >= 2.
  __m512i s[16];
  for (int g = 0; g < 4; ++g) {
    const __m512i* x = t + 4 * g;
    const __m512i u0 = _mm512_unpacklo_epi32(x[0], x[1]), u1 = _mm512_unpackhi_epi32(x[0], x[1]);
    const __m512i u2 = _mm512_unpacklo_epi32(x[2], x[3]), u3 = _mm512_unpackhi_epi32(x[2], x[3]);
    s[4 * g + 0] = _mm512_unpacklo_epi64(u0, u2);
    s[4 * g + 1] = _mm512_unpackhi_epi64(u0, u2);
    s[4 * g + 2] = _mm512_unpacklo_epi64(u1, u3);
    s[4 * g + 3] = _mm512_unpackhi_epi64(u1, u3);
  }
  // Word w = 8 h + 4 q + x: lanes q and q + 2 of inputs 0-3 (group 2 h) and
  // of inputs 4-7 (group 2 h + 1): inputs 0-3, 8-11, 4-7, 12-15.
  for (int h = 0; h < 2; ++h)
    for (int x = 0; x < 4; ++x) {
      const __m512i a = s[4 * (2 * h) + x], b = s[4 * (2 * h + 1) + x];
      m[8 * h + x] = _mm512_shuffle_i32x4(a, b, 0x88);
      m[8 * h + 4 + x] = _mm512_shuffle_i32x4(a, b, 0xDD);
    }
}

template <std::size_t Round>
[[gnu::always_inline]] MITHRIL_AVX512 inline void round16(__m512i* v, const __m512i* m) {
  constexpr auto s = k_schedule[Round];
  const __m512i cx[4] = {m[s[0]], m[s[2]], m[s[4]], m[s[6]]}, cy[4] = {m[s[1]], m[s[3]], m[s[5]], m[s[7]]};
  g16x4<k_columns>(v, cx, cy, std::make_index_sequence<4>{});
  const __m512i dx[4] = {m[s[8]], m[s[10]], m[s[12]], m[s[14]]}, dy[4] = {m[s[9]], m[s[11]], m[s[13]], m[s[15]]};
  g16x4<k_diagonals>(v, dx, dy, std::make_index_sequence<4>{});
}
template <std::size_t... R>
[[gnu::always_inline]] MITHRIL_AVX512 inline void rounds16(__m512i* v, const __m512i* m, std::index_sequence<R...>) {
  (round16<R>(v, m), ...);
}

// Sixteen whole chunks, one per lane; with Parent, sixteen parent nodes (as
// hash8_avx2).
template <bool Parent, bool Strided>
MITHRIL_AVX512 void hash16_avx512(const Lanes<16>& l, const Words8& key, std::uint32_t flags, Words8* out) {
  constexpr std::size_t blocks = Parent ? 1 : k_chunk_len / k_block_len;
  constexpr std::size_t stride = Parent ? k_block_len : k_chunk_len;
  const LaneInputs<16, Strided, stride> lane(l);
  __m512i h[8];
  for (int i = 0; i < 8; ++i) h[i] = _mm512_set1_epi32(static_cast<int>(key[i]));
  // Lane p computes input k_lane_order[p] (load_transposed16).
  const __m512i order = _mm512_loadu_si512(k_lane_order);
  const __m512i ctr_lo = _mm512_permutexvar_epi32(order, _mm512_load_si512(l.lo));
  const __m512i ctr_hi = _mm512_permutexvar_epi32(order, _mm512_load_si512(l.hi));
  const __m512i blen = _mm512_set1_epi32(static_cast<int>(k_block_len));

  for (std::size_t b = 0; b < blocks; ++b) {
    __m512i m[16];
    // Sixteen streams 1 KiB apart, one 64-byte line each per block: the
    // hardware prefetcher does not keep up with them (the loads were ~40% of
    // the kernel's time). Fetch four blocks ahead, as BLAKE3's reference
    // kernels do.
    if constexpr (!Parent) prefetch_ahead(lane, b);
    load_transposed16(lane, b * k_block_len, m);
    const std::uint32_t f = Parent ? flags | k_parent
                                   : flags | (b == 0 ? k_chunk_start : 0u) | (b + 1 == blocks ? k_chunk_end : 0u);
    __m512i v[16] = {h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
                     _mm512_set1_epi32(static_cast<int>(k_iv[0])), _mm512_set1_epi32(static_cast<int>(k_iv[1])),
                     _mm512_set1_epi32(static_cast<int>(k_iv[2])), _mm512_set1_epi32(static_cast<int>(k_iv[3])),
                     ctr_lo, ctr_hi, blen, _mm512_set1_epi32(static_cast<int>(f))};
    rounds16(v, m, std::make_index_sequence<7>{});
    for (int i = 0; i < 8; ++i) h[i] = _mm512_xor_si512(v[i], v[i + 8]);
  }
  alignas(64) std::uint32_t w[8][16];
  for (int i = 0; i < 8; ++i) _mm512_store_si512(w[i], h[i]);
  for (int j = 0; j < 16; ++j)
    for (int i = 0; i < 8; ++i) out[j][i] = w[i][k_lane_order[j]];  // the order is its own inverse
}

// Inputs [0, n) in SIMD calls of N lanes: `at(i)` = {pointer, counter} of
// input i; At::strided says they lie one after another. Full calls write
// straight to out; a last, partial one (at least `min_live` inputs, else
// `rest` hashes them) goes through a scratch output.
template <std::size_t N, class Hash, class At, class Rest>
void in_lanes(std::size_t n, std::size_t min_live, Hash hash, At at, Rest rest, Words8* out) {
  std::size_t i = 0;
  for (; i + N <= n; i += N)
    hash(std::bool_constant<At::strided>{}, make_lanes<N>(N, [&](std::size_t j) { return at(i + j); }), out + i);
  if (n - i >= min_live) {
    Words8 scratch[N];
    hash(std::false_type{}, make_lanes<N>(n - i, [&](std::size_t j) { return at(i + j); }), scratch);
    std::copy_n(scratch, n - i, out + i);
  } else if (n > i) {
    rest(i);
  }
}

// Inputs i, i + 1, ... of `at`, as 0, 1, ...
template <class At>
struct Shifted {
  static constexpr bool strided = At::strided;
  At at;
  std::size_t first;
  auto operator()(std::size_t i) const { return at(first + i); }
};

// A chunk one lane at a time costs 16 compressions one by one, about what a
// whole hash8_avx2 call of eight does (0.53 against 2.9 GB/s on AMD Zen 3):
// from two chunks on the SIMD call wins, idle lanes and all. Likewise
// hash16_avx512 over hash8_avx2 from nine on. Partial calls come from the
// unaligned ends of tensors and the top levels of every subtree's parents.
template <bool Parent, class At>
void lanes_avx2(std::size_t n, const Words8& key, std::uint32_t flags, At at, Words8* out) {
  in_lanes<8>(
      n, 2, [&](auto strided, const Lanes<8>& l, Words8* o) { hash8_avx2<Parent, strided>(l, key, flags, o); }, at,
      [&](std::size_t i) {
        const auto [ptr, counter] = at(i);
        if constexpr (Parent)
          parents_portable(reinterpret_cast<const Words8*>(ptr), 1, key, flags, out + i);
        else
          hash_many_portable(ptr, 1, key, counter, flags, out + i);
      },
      out);
}

template <bool Parent, class At>
void lanes_avx512(std::size_t n, const Words8& key, std::uint32_t flags, At at, Words8* out) {
  in_lanes<16>(
      n, 9, [&](auto strided, const Lanes<16>& l, Words8* o) { hash16_avx512<Parent, strided>(l, key, flags, o); },
      at,
      [&](std::size_t i) {
        lanes_avx2<Parent>(n - i, key, flags, Shifted<At>{at, i}, out + i);
      },
      out);
}

// Whole chunks at data + 1 KiB i, counters counter + i.
struct ConsecutiveChunks {
  static constexpr bool strided = true;
  const std::uint8_t* data;
  std::uint64_t counter;
  std::pair<const std::uint8_t*, std::uint64_t> operator()(std::size_t i) const {
    return {data + i * k_chunk_len, counter + i};
  }
};
// Pairs of chaining values at children + 2 i (a pair in memory is a parent's
// 64-byte block: Words8 is eight words, no padding, little-endian on x86).
struct ChildPairs {
  static constexpr bool strided = true;
  const Words8* children;
  std::pair<const std::uint8_t*, std::uint64_t> operator()(std::size_t i) const {
    static_assert(sizeof(Words8) == 32);
    return {reinterpret_cast<const std::uint8_t*>(children + 2 * i), 0};
  }
};

struct GatheredChunks {
  static constexpr bool strided = false;
  const std::uint8_t* const* chunks;
  const std::uint64_t* counters;
  std::pair<const std::uint8_t*, std::uint64_t> operator()(std::size_t i) const { return {chunks[i], counters[i]}; }
};

// One ISA's three entry points (HashManyFn, ParentsFn, GatheredFn) over its
// lanes function. (Parents in place, children == out: every SIMD call loads
// its lanes' children before it stores any output, and parent i lands at or
// before child 2i, so a call never overwrites a later call's children.)
template <class Isa>
struct Entries {
  static void hash_many(const std::uint8_t* data, std::size_t n_chunks, const Words8& key, std::uint64_t counter,
                        std::uint32_t flags, Words8* out) {
    Isa::template lanes<false>(n_chunks, key, flags, ConsecutiveChunks{data, counter}, out);
  }
  static void parents(const Words8* children, std::size_t n_parents, const Words8& key, std::uint32_t flags,
                      Words8* out) {
    Isa::template lanes<true>(n_parents, key, flags, ChildPairs{children}, out);
  }
  static void gathered(const std::uint8_t* const* chunks, const std::uint64_t* counters, std::size_t n,
                       const Words8& key, std::uint32_t flags, Words8* out) {
    Isa::template lanes<false>(n, key, flags, GatheredChunks{chunks, counters}, out);
  }
};
struct Avx2 {
  template <bool Parent, class At>
  static void lanes(std::size_t n, const Words8& key, std::uint32_t flags, At at, Words8* out) {
    lanes_avx2<Parent>(n, key, flags, at, out);
  }
};
struct Avx512 {
  template <bool Parent, class At>
  static void lanes(std::size_t n, const Words8& key, std::uint32_t flags, At at, Words8* out) {
    lanes_avx512<Parent>(n, key, flags, at, out);
  }
};
#pragma GCC diagnostic pop
#endif

struct Kernel {
  const char* name;
  HashManyFn fn;
  ParentsFn parents;
  GatheredFn gathered;
  bool available;
};

std::vector<Kernel> kernels() {
  std::vector<Kernel> k;
#ifdef MITHRIL_BLAKE3_X86
  __builtin_cpu_init();
  // (MITHRIL_ISA may cap them: util/simd_level.hpp.)
  const bool avx2 = simd_allows(SimdLevel::avx2) && __builtin_cpu_supports("avx2");
  k.push_back({"avx512", Entries<Avx512>::hash_many, Entries<Avx512>::parents, Entries<Avx512>::gathered,
               avx2 && simd_allows(SimdLevel::avx512) && __builtin_cpu_supports("avx512f")});
  k.push_back({"avx2", Entries<Avx2>::hash_many, Entries<Avx2>::parents, Entries<Avx2>::gathered, avx2});
#endif
  k.push_back({"portable", hash_many_portable, parents_portable, gathered_portable, true});
  return k;
}

Kernel pick_kernel() {
  for (const auto& k : kernels())
    if (k.available) return k;
  return {"portable", hash_many_portable, parents_portable, gathered_portable, true};
}

const Kernel g_initial = pick_kernel();
HashManyFn g_hash_many = g_initial.fn;
ParentsFn g_parents = g_initial.parents;
GatheredFn g_gathered = g_initial.gathered;

Words8 key_words(std::span<const std::uint8_t, 32> key) {
  Words8 k;
  for (int i = 0; i < 8; ++i) k[i] = load_le32(key.data() + 4 * i);
  return k;
}

// Chaining value of a subtree of exactly `n_chunks` whole chunks, n a power of two.
Words8 power_subtree_cv(const std::uint8_t* data, std::size_t n_chunks, const Words8& key, std::uint64_t counter,
                        std::uint32_t flags) {
  if (n_chunks <= k_leaf_batch) {
    Words8 cvs[k_leaf_batch];
    g_hash_many(data, n_chunks, key, counter, flags, cvs);
    // Each level's parents in one SIMD pass (in place), not one by one.
    for (std::size_t n = n_chunks; n > 1; n /= 2) g_parents(cvs, n / 2, key, flags, cvs);
    return cvs[0];
  }
  Words8 l = power_subtree_cv(data, n_chunks / 2, key, counter, flags);
  Words8 r = power_subtree_cv(data + n_chunks / 2 * k_chunk_len, n_chunks / 2, key, counter + n_chunks / 2, flags);
  return parent_cv(l, r, key, flags);
}

// One task of invoke_parallel. Its fork is declared on the task object
// itself: the worker acquires `this` before it reads any member, so even the
// task's own bytes on the caller's stack are ordered after the caller built
// them (with a token captured in a closure, the worker had to read the
// closure first, and TSan reported that read against whatever the caller had
// written to the same stack bytes earlier — libtbb's hand-off is invisible to it).
template <class G>
struct ParallelTask {
  G* body;
  const char* join;
  void operator()() const {
    tsan::acquire(this);
    struct Done {
      const void* token;
      ~Done() { tsan::release(token); }
    } on_exit{join};
    (*body)();
  }
};

// tbb::parallel_invoke with its fork and join declared to TSan (util/tsan.hpp).
template <class... F>
void invoke_parallel(F&&... f) {
  const char join = 0;
  std::tuple<ParallelTask<std::remove_reference_t<F>>...> tasks{ParallelTask<std::remove_reference_t<F>>{&f, &join}...};
  std::apply(
      [](const auto&... t) {
        (tsan::release(&t), ...);
        tbb::parallel_invoke(t...);
      },
      tasks);
  tsan::acquire(&join);
}

// Output node of the subtree over data[0, len), chunk counters from `counter`,
// following the spec's left-heavy tree. Splits above `grain` bytes run in parallel.
Output subtree_output(const std::uint8_t* data, std::size_t len, const Words8& key, std::uint64_t counter,
                      std::uint32_t flags, std::size_t grain) {
  if (len <= k_chunk_len) return chunk_output(data, len, key, counter, flags);
  std::size_t chunks = (len + k_chunk_len - 1) / k_chunk_len;
  std::size_t left_chunks = std::bit_floor(chunks - 1);
  std::size_t left_len = left_chunks * k_chunk_len;
  Words8 l, r;
  auto left = [&] { l = power_subtree_cv(data, left_chunks, key, counter, flags); };
  auto right = [&] {
    r = subtree_output(data + left_len, len - left_len, key, counter + left_chunks, flags, grain).chaining_value();
  };
  if (len > grain) {
    // The left half is a power of two: split it further for balance.
    if (left_len > grain && left_chunks >= 2) {
      Words8 ll, lr;
      std::size_t half = left_chunks / 2;
      invoke_parallel([&] { ll = power_subtree_cv(data, half, key, counter, flags); },
                           [&] { lr = power_subtree_cv(data + half * k_chunk_len, half, key, counter + half, flags); },
                           right);
      l = parent_cv(ll, lr, key, flags);
    } else {
      invoke_parallel(left, right);
    }
  } else {
    left();
    right();
  }
  return parent_output(l, r, key, flags);
}

}  // namespace

struct Blake3::State {
  static Output chunk_state_output(const Blake3& h) {
    Output o;
    o.cv = h.m_cv;
    o.block.fill(0);
    std::memcpy(o.block.data(), h.m_block.data(), h.m_block_len);
    o.counter = h.m_chunk_counter;
    o.block_len = h.m_block_len;
    o.flags = h.m_flags | k_chunk_end | (h.m_blocks_compressed == 0 ? k_chunk_start : 0u);
    return o;
  }
  static std::size_t chunk_len(const Blake3& h) { return std::size_t{h.m_blocks_compressed} * k_block_len + h.m_block_len; }

  // Spec §5.1.2: merge completed subtrees while the chunk count has trailing zeros.
  static void push_chunk_cv(Blake3& h, Words8 cv, std::uint64_t total_chunks) {
    while ((total_chunks & 1) == 0) {
      cv = parent_cv(h.m_stack[--h.m_stack_len], cv, h.m_key, h.m_flags);
      total_chunks >>= 1;
    }
    h.m_stack[h.m_stack_len++] = cv;
  }

  static void reset_chunk(Blake3& h, std::uint64_t counter) {
    h.m_cv = h.m_key;
    h.m_block_len = 0;
    h.m_blocks_compressed = 0;
    h.m_chunk_counter = counter;
  }
};

Blake3::Blake3() {
  m_key = k_iv;
  m_cv = k_iv;
}

Blake3 Blake3::keyed(std::span<const std::uint8_t, 32> key) {
  Blake3 h;
  h.m_key = key_words(key);
  h.m_cv = h.m_key;
  h.m_flags = k_keyed_hash;
  return h;
}

Blake3 Blake3::derive_key(std::string_view context) {
  Blake3 ctx;
  ctx.m_flags = k_derive_key_context;
  ctx.update(ByteSpan(reinterpret_cast<const std::byte*>(context.data()), context.size()));
  std::array<std::uint8_t, 32> ctx_key{};
  ctx.finalize(ctx_key);
  Blake3 h;
  h.m_key = key_words(ctx_key);
  h.m_cv = h.m_key;
  h.m_flags = k_derive_key_material;
  return h;
}

void Blake3::update(ByteSpan data) {
  auto* p = reinterpret_cast<const std::uint8_t*>(data.data());
  std::size_t n = data.size();
  while (n > 0) {
    std::size_t len = State::chunk_len(*this);
    if (len == k_chunk_len) {
      // More input follows, so this chunk is not the root: finish it.
      State::push_chunk_cv(*this, State::chunk_state_output(*this).chaining_value(), m_chunk_counter + 1);
      State::reset_chunk(*this, m_chunk_counter + 1);
      len = 0;
    }
    if (len == 0 && n > k_chunk_len) {
      // Whole chunks with at least one byte after them: none can be the root.
      std::size_t whole = (n - 1) / k_chunk_len;
      Words8 cvs[64];
      while (whole > 0) {
        std::size_t batch = std::min<std::size_t>(whole, 64);
        if (batch == 64 && m_chunk_counter % 64 == 0) {
          // An aligned subtree of 64 to 512 chunks: its parents hashed many
          // at a time, then pushed as one entry (the merge rule in units of
          // its size: every entry below it is an aligned subtree at least as big).
          while (batch < k_leaf_batch && whole >= 2 * batch && m_chunk_counter % (2 * batch) == 0) batch *= 2;
          const Words8 cv = power_subtree_cv(p, batch, m_key, m_chunk_counter, m_flags);
          State::push_chunk_cv(*this, cv, (m_chunk_counter + batch) / batch);
        } else {
          g_hash_many(p, batch, m_key, m_chunk_counter, m_flags, cvs);
          for (std::size_t i = 0; i < batch; ++i) State::push_chunk_cv(*this, cvs[i], m_chunk_counter + i + 1);
        }
        State::reset_chunk(*this, m_chunk_counter + batch);
        p += batch * k_chunk_len;
        n -= batch * k_chunk_len;
        whole -= batch;
      }
      continue;
    }
    // Fill the block buffer; compress a full block only once more input arrives.
    if (m_block_len == k_block_len) {
      std::uint32_t f = m_flags | (m_blocks_compressed == 0 ? k_chunk_start : 0u);
      m_cv = first8(compress(m_cv, m_block.data(), m_chunk_counter, k_block_len, f));
      ++m_blocks_compressed;
      m_block_len = 0;
    }
    std::size_t take = std::min<std::size_t>(k_block_len - m_block_len, n);
    std::memcpy(m_block.data() + m_block_len, p, take);
    m_block_len = static_cast<std::uint8_t>(m_block_len + take);
    p += take;
    n -= take;
  }
}

void Blake3::finalize(std::span<std::uint8_t> out) const {
  Output o = State::chunk_state_output(*this);
  for (std::size_t i = m_stack_len; i > 0; --i) o = parent_output(m_stack[i - 1], o.chaining_value(), m_key, m_flags);
  o.root_bytes(out);
}

Digest Blake3::digest() const {
  Digest d;
  finalize(d);
  return d;
}

Digest blake3(ByteSpan data) {
  Blake3 h;
  h.update(data);
  return h.digest();
}

Digest blake3_parallel(ByteSpan data, unsigned threads) {
  constexpr std::size_t k_min_parallel = 1u << 20;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  if (threads == 0 || threads > cores) threads = cores;
  if (threads == 1 || data.size() < 2 * k_min_parallel) return blake3(data);
  std::size_t grain = std::max<std::size_t>(k_min_parallel, data.size() / (4 * threads));
  Digest d;
  tbb::task_arena arena(static_cast<int>(threads));
  const char start = 0, joined = 0;  // execute() may run the call on a worker
  tsan::release(&start);
  arena.execute([&] {
    tsan::task(&start, &joined, [&] {
      Output o = subtree_output(reinterpret_cast<const std::uint8_t*>(data.data()), data.size(), k_iv, 0, 0, grain);
      o.root_bytes(d);
    });
  });
  tsan::acquire(&joined);
  return d;
}

namespace detail {

std::string_view blake3_kernel() {
  for (const auto& k : kernels())
    if (k.fn == g_hash_many) return k.name;
  return "portable";
}

bool set_blake3_kernel(std::string_view name) {
  for (const auto& k : kernels())
    if (k.name == name && k.available) {
      g_hash_many = k.fn;
      g_parents = k.parents;
      g_gathered = k.gathered;
      return true;
    }
  return false;
}

ChainingValue blake3_parent_cv(const ChainingValue& left, const ChainingValue& right) {
  return parent_cv(left, right, k_iv, 0);
}

void blake3_chunk_cvs(const std::uint8_t* const* chunks, const std::uint64_t* counters, std::size_t n,
                      ChainingValue* out) {
  g_gathered(chunks, counters, n, k_iv, 0, out);
}

void blake3_aligned_subtrees(const std::uint8_t* data, std::uint64_t first_chunk, std::uint64_t n_chunks,
                             std::vector<SubtreeCv>& out) {
  const std::uint64_t stop = first_chunk + n_chunks;
  std::uint64_t c = first_chunk;
  // A batch: the subtrees of up to k_leaf_batch chunks, then their leaves in
  // one hash-many call and each level's parents in one parents call (in
  // place: the subtrees still above one value are packed to the front, and
  // each has an even count, so no pair crosses two of them).
  while (c < stop) {
    const std::size_t begin = out.size();
    std::uint64_t batch = 0;
    while (c < stop) {
      const unsigned align = c == 0 ? 63u : static_cast<unsigned>(std::countr_zero(c));
      const unsigned fits = static_cast<unsigned>(std::bit_width(stop - c) - 1);
      const unsigned level = std::min(align, fits);
      const std::uint64_t n = std::uint64_t{1} << level;
      if (n > k_leaf_batch) {  // a whole batch of its own, through power_subtree_cv
        if (batch != 0) break;
        out.push_back({c, level, power_subtree_cv(data + (c - first_chunk) * k_chunk_len, n, k_iv, c, 0)});
        c += n;
        break;
      }
      if (batch + n > k_leaf_batch) break;
      out.push_back({c, level, {}});
      batch += n;
      c += n;
    }
    if (batch == 0) continue;
    const std::uint64_t from = out[begin].first_chunk;
    Words8 cvs[k_leaf_batch];
    g_hash_many(data + (from - first_chunk) * k_chunk_len, batch, k_iv, from, 0, cvs);
    // Subtree out[open[k]] has count[k] values, packed in order at the front of cvs.
    std::size_t open[k_leaf_batch];
    std::size_t count[k_leaf_batch];
    std::size_t n_open = 0;
    for (std::size_t i = begin; i < out.size(); ++i) {
      open[n_open] = i;
      count[n_open++] = std::size_t{1} << out[i].level;
    }
    while (n_open != 0) {
      std::size_t read = 0, write = 0, still = 0;
      for (std::size_t k = 0; k < n_open; ++k) {
        const std::size_t n = count[k];
        if (n == 1) {
          out[open[k]].cv = cvs[read];
        } else {
          if (write != read) std::memmove(&cvs[write], &cvs[read], n * sizeof(Words8));
          write += n;
          open[still] = open[k];
          count[still++] = n / 2;
        }
        read += n;
      }
      n_open = still;
      if (write != 0) g_parents(cvs, write / 2, k_iv, 0, cvs);
    }
  }
}

Digest blake3_root(std::span<const ChainingValue> stack, ByteSpan last_chunk, std::uint64_t last_counter) {
  Output o = chunk_output(reinterpret_cast<const std::uint8_t*>(last_chunk.data()), last_chunk.size(), k_iv,
                          last_counter, 0);
  for (std::size_t i = stack.size(); i > 0; --i) o = parent_output(stack[i - 1], o.chaining_value(), k_iv, 0);
  Digest d;
  o.root_bytes(d);
  return d;
}

}  // namespace detail

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    s.push_back(k_digits[b >> 4]);
    s.push_back(k_digits[b & 15]);
  }
  return s;
}

bool parse_hex(std::string_view hex, std::span<std::uint8_t> out) {
  if (hex.size() != 2 * out.size()) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < out.size(); ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool parse_hex_digest(std::string_view hex, Digest& out) { return parse_hex(hex, out); }

}  // namespace mithril::util
