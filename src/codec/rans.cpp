// codec/rans.cpp — static order-0 rANS coder for byte planes.
//
// Block format, version 1 (multi-byte integers little-endian):
//
//   block    := tag body
//   tag      := u8 (version << 4) | kind                 version = 1
//   kind 0, empty:     body := ""                          original size is 0
//   kind 1, constant:  body := u8 symbol                   every byte is `symbol`
//   kind 2, rans:      body := params table states words
//   params   := u8 (log2_lanes << 4) | (scale - 8)        lanes 1..64, scale 8..16
//   table    := bit string, least significant bit first, zero-padded to a byte:
//                 runs   alternating absent/present runs covering symbols 0..255,
//                        absent first: EG0(len) for the first run (may be 0),
//                        EG0(len - 1) for every later run; they end exactly at 256
//                 k      4 bits
//                 freqs  EGk(freq - 1) for every present symbol but the last;
//                        the last gets M - sum(others), which must be >= 1,
//                        where M = 2^scale. At least two symbols are present.
//   states   := lanes x u32                              each in [2^16, 2^32)
//   words    := u16 ...                                  up to the end of the block
//
//   EGk(v), exp-Golomb of order k: u = (v >> k) + 1, b = bit_width(u); then
//   b - 1 zero bits, a one bit, the low b - 1 bits of u, the low k bits of v
//   (each field least significant bit first).
//
// Decoding (n = original size, given by the caller): symbol i uses lane
// i % lanes, whose state x starts as stored. slot = x mod M; the symbol s is
// the one whose range [cum_s, cum_s + f_s) holds slot, symbols in byte order;
// x = f_s * (x >> scale) + slot - cum_s; if x < 2^16 then x = x << 16 | next
// word. After the last symbol every state is 2^16 and every word has been
// read. The encoder runs the exact inverse from the last symbol to the first.
//
// Design: 32-bit states with 16-bit words (L = 2^16) need one branch-free
// renormalisation per symbol and let 8 lanes share an AVX2 register; the
// rounding loss of x / f is ~0.01% at scale 12, ~0.04% at 15 and ~0.15% at
// 16 (measured on bf16 exponents).
// The coder is bound by the latency of its table gathers, so big blocks use
// 64 lanes (eight AVX2 or four AVX-512 independent vector chains, also for
// the encoder); small blocks use fewer, since
// each lane's state costs 4 bytes. Scales up to 12 pack symbol, frequency and
// bias into one 32-bit table entry, which halves the decoder's loads; the
// encoder picks a finer scale only when it saves more than 0.2%.
//
// Limits: an order-0 model with 2^16 slots gives every present symbol at
// least 2^-16, so data with many distinct very rare symbols (say 99.9% zeros
// and the rest spread over 255 values) codes ~15% above the entropy.
#include "codec/rans.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "codec/byte_group.hpp"
#include "codec/rans_kernels.hpp"
#include "codec/rans_table.hpp"
#include "mithril/error.hpp"

namespace mithril::codec::rans {
namespace {

using namespace detail;
using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

constexpr unsigned k_version = 1;
constexpr unsigned k_kind_empty = 0;
constexpr unsigned k_kind_constant = 1;
constexpr unsigned k_kind_rans = 2;

[[noreturn]] void corrupt(const char* what) { throw Error(Errc::corrupt, std::string("rans block: ") + what); }

u8 tag(unsigned kind) { return static_cast<u8>((k_version << 4) | kind); }

// ---- planning ----------------------------------------------------------------
struct Plan {
  unsigned scale = 0;
  unsigned k = 0;
  unsigned lanes_log2 = 0;
  Freqs freq{};
  u64 table_bits = 0;
  double payload_bits = 0.0;
};

// A finer tier's model (payload + table bits) must come under this to be
// taken over a coarser one's `total`.
double finer_bar(double total) { return total * (1.0 - 1.0 / 512) - 64; }

// The coarsest scale that gives each of nsym symbols a frequency of at least 1.
unsigned lo_scale(unsigned nsym) {
  return std::max<unsigned>(k_min_scale, static_cast<unsigned>(std::bit_width(nsym - 1u)));
}

Plan plan_block(const Histogram& hist, u64 n, unsigned nsym, unsigned max_scale) {
  // Three tiers of scale: up to 12 the decoder needs one table load per
  // symbol and runs about twice as fast; 13..15 cost ~0.04% in rounding, 16
  // ~0.15%. A finer tier is taken only when its model saves more than 0.2%
  // over the coarser one, which happens for very skewed data with many rare
  // symbols. Big blocks try only the finest scale of each tier; small ones
  // try every scale, as their table size matters as much as precision.
  const unsigned lo = lo_scale(nsym);
  const bool big = n >= (u64{1} << 16);
  constexpr double k_inf = std::numeric_limits<double>::infinity();
  std::array<Plan, 3> tier;
  std::array<double, 3> tier_total{k_inf, k_inf, k_inf};
  Plan p;
  // No model codes below the entropy, and a finer scale's table is about a
  // bit per symbol longer than a coarser one's (its frequencies are twice
  // as large), so once the coarse tier is planned a finer one can win only
  // if the entropy plus the coarse table leaves room for it: when it does
  // not (nearly always), its normalisations are skipped.
  const double entropy_bits = order0_bits(hist);
  for (unsigned scale = lo; scale <= max_scale; ++scale) {
    const unsigned t = scale <= k_packed_max_scale ? 0 : scale < k_max_scale ? 1 : 2;
    if (t != 0 && !(entropy_bits + static_cast<double>(tier[0].table_bits) < finer_bar(tier_total[0]))) break;
    if (big && scale != k_packed_max_scale && scale != k_max_scale - 1 && scale != k_max_scale) continue;
    p.scale = scale;
    normalize(hist, n, scale, p.freq);
    p.payload_bits = payload_bits(hist, p.freq, scale);
    const TableCost tc = table_cost(p.freq);
    p.k = tc.k;
    p.table_bits = tc.bits;
    const double total = p.payload_bits + static_cast<double>(tc.bits);
    if (total < tier_total[t]) {
      tier_total[t] = total;
      tier[t] = p;
    } else if (t == 0) {
      // Small blocks try the coarse scales upwards: the payload falls and
      // the table grows with the scale, and once the total rises it keeps
      // rising (the table's extra bit per symbol outweighs the payload's
      // shrinking gain), so the rest of the tier is skipped.
      scale = k_packed_max_scale;
    }
  }
  unsigned pick = 0;
  for (unsigned t = 1; t < 3; ++t)
    if (tier_total[t] < finer_bar(tier_total[pick])) pick = t;
  Plan best = tier[pick];
  // Each lane stores a 4-byte state, ~3 bytes of it overhead. Allow that
  // ~0.8% of the payload, or 1/2048 of the raw size so that big blocks that
  // code to almost nothing (mostly zeros) still decode with all lanes. An
  // exponent plane is about a quarter of its chunk's coded bytes (the
  // mantissa planes are mostly stored), so that is ~0.2% of the chunk. With
  // 0.4% (before session 41) a 64 KiB exponent plane of a 128 KiB bf16
  // tensor got 16 lanes, which decode through two dependent chains: a
  // 12-layer bf16 transformer of such tensors (d_model 128, 4.8 MB)
  // decompressed in 3.04 ms, in 2.45 ms with 0.8% (2.10 with 1.6%), for
  // 0.07% (0.17%) of its size; MiniLM +0.005% at the same speed, the GPT
  // bench files +0.001% (AMD Zen 4, one thread, bench_pipeline, medians of 4).
  const double budget = std::max(best.payload_bits / 8.0 / 128.0, static_cast<double>(n) / 2048.0);
  while (best.lanes_log2 < k_max_lanes_log2 && (u64{4} << (best.lanes_log2 + 1)) <= budget &&
         (u64{1} << (best.lanes_log2 + 1)) <= n)
    ++best.lanes_log2;
  // A block with few lanes decodes one symbol after another through a chain
  // of dependent multiplies. A file of 100 bf16 tensors of 64x80 (5 KiB
  // planes) decoded at 310 MB/s, 86% of it in the 1-lane decoder, against
  // ~3 GB/s for big tensors. Small blocks get up to 16 lanes (two registers
  // of the AVX2 decoder) while their states stay within 1/128 of the raw
  // size: that file decoded 2.3x and coded 1.5x as fast for 0.31% of its
  // size, one of 60 128x128 tensors 2.2x and 1.2x for 0.17%; MiniLM and the
  // bf16, fp16, fp32 and AdamW bench files grew by 15-232 bytes (< 0.0003%).
  // (Zen 3, one thread, bench_pipeline, session 40.)
  // Since session 42, up to 32 lanes (four registers) within 1/64: the
  // exponent planes of LoRA adapters (16x1024 tensors, 8192 pair symbols)
  // decoded through 16 lanes at half the speed of big planes. 48 bf16 A/B
  // pairs: decompress 1.67 -> 1.14 ms for 0.22% of the size (ratio 1.5134
  // -> 1.5102; ZipNN 1.5005), fp32 2.57 -> 1.84 ms for 0.13%; a 12-layer
  // transformer of 128x128 tensors 2.43 -> 2.24 ms for 0.02%; MiniLM and
  // the GPT bench files level (AMD Zen 4, one thread, bench_pipeline).
  while (best.lanes_log2 < 5 && (u64{4} << (best.lanes_log2 + 1)) * 64 <= n) ++best.lanes_log2;
  return best;
}

// ---- encoder -----------------------------------------------------------------
// Encodes in[0, n) backwards, writing words downwards from `front` but never
// below `floor`. Returns false when they do not fit.
bool encode_lanes(const u8* in, std::size_t n, unsigned lanes_log2, const EncTables& t, Kernel kernel,
                  const u8* floor, u8*& front, u32* states_out) {
  const std::size_t lanes = std::size_t{1} << lanes_log2;
  EncodeCursor c;
  for (std::size_t k = 0; k < lanes; ++k) c.x[k] = k_state_low;
  c.p = front;
  c.floor = floor;
  auto checked = [&](std::size_t k, u8 sym) {
    const EncSym& e = t.sym[sym];
    u32 x = c.x[k];
    if (x >= e.x_max) {
      if (c.p - floor < 2) return false;
      c.p -= 2;
      util::store_le<u16>(reinterpret_cast<std::byte*>(c.p), static_cast<u16>(x));
      x >>= 16;
    }
    c.x[k] = x + e.bias + x / ((u32{1} << t.scale) - e.cmpl) * e.cmpl;  // = q * M + x mod f + cum
    return true;
  };
  const std::size_t rounds = n / lanes;
  for (std::size_t k = n % lanes; k-- > 0;)
    if (!checked(k, in[rounds * lanes + k])) return false;
  c.round = rounds;
  encode_rounds(kernel, lanes_log2)(in, t, c);
  for (; c.round > 0; --c.round)
    for (std::size_t k = lanes; k-- > 0;)
      if (!checked(k, in[(c.round - 1) * lanes + k])) return false;
  front = c.p;
  std::memcpy(states_out, c.x, lanes * sizeof(u32));
  return true;
}

std::optional<std::size_t> encode_impl(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out,
                                       Kernel kernel, unsigned max_scale = k_max_scale, unsigned min_lanes_log2 = 0) {
  const std::size_t n = in.size();
  if (n > std::numeric_limits<u32>::max())
    throw Error(Errc::invalid_argument, "rans::encode: block of " + std::to_string(n) + " bytes exceeds 4 GiB");
  u64 total = 0;
  unsigned nsym = 0, last = 0;
  for (unsigned s = 0; s < 256; ++s) {
    total += hist[s];
    if (hist[s]) nsym++, last = s;
  }
  if (total != n)
    throw Error(Errc::invalid_argument, "rans::encode: histogram counts " + std::to_string(total) +
                                            " bytes, input has " + std::to_string(n));
  u8* o = reinterpret_cast<u8*>(out.data());
  if (n == 0) {
    if (out.empty()) return std::nullopt;
    o[0] = tag(k_kind_empty);
    return 1;
  }
  if (nsym == 1) {
    if (out.size() < 2) return std::nullopt;
    o[0] = tag(k_kind_constant);
    o[1] = static_cast<u8>(last);
    return 2;
  }

  Plan plan = plan_block(hist, n, nsym, std::clamp(max_scale, lo_scale(nsym), k_max_scale));
  while (plan.lanes_log2 < min_lanes_log2 && (u64{1} << (plan.lanes_log2 + 1)) <= n) ++plan.lanes_log2;
  const std::size_t lanes = std::size_t{1} << plan.lanes_log2;
  const std::size_t head = 2 + (plan.table_bits + 7) / 8;
  const std::size_t floor = head + 4 * lanes;
  // Give up before any work when the model's size is clearly over: rANS
  // lands within a few bytes per lane of payload_bits (it can undercut it
  // only by what the final states hold, < 2 bytes a lane), so the slack
  // below is generous, yet small enough to catch near-random planes.
  const double estimate = static_cast<double>(head) + 2.0 * static_cast<double>(lanes) + plan.payload_bits / 8.0;
  const double slack = plan.payload_bits / 8.0 / 262144.0 + 32.0;
  if (estimate - slack > static_cast<double>(out.size()) || out.size() < floor) return std::nullopt;

  o[0] = tag(k_kind_rans);
  o[1] = static_cast<u8>((plan.lanes_log2 << 4) | (plan.scale - k_min_scale));
  {
    std::array<u8, k_max_table_bytes> buf;  // aside, so `out` is never overrun
    const std::size_t written = write_table(plan.freq, plan.k, buf.data());
    if (2 + written != head) throw Error(Errc::internal, "rans::encode: table size mismatch");
    std::memcpy(o + 2, buf.data(), written);
  }
  EncTables tab;
  build_encoder(plan.freq, plan.scale, tab);
  u32 states[k_max_lanes];
  u8* front = o + out.size();
  const auto* src = reinterpret_cast<const u8*>(in.data());
  if (!encode_lanes(src, n, plan.lanes_log2, tab, kernel, o + floor, front, states)) return std::nullopt;
  const auto words = static_cast<std::size_t>(o + out.size() - front);
  std::memmove(o + floor, front, words);
  for (std::size_t k = 0; k < lanes; ++k) util::store_le<u32>(out.data() + head + 4 * k, states[k]);
  return floor + words;
}

// ---- decoder -----------------------------------------------------------------
Kernel usable(Kernel k) { return kernel_available(k) ? k : Kernel::scalar; }

// One symbol with every read checked: for rounds the kernels leave, partial
// rounds and the tail.
template <bool Packed>
void decode_checked(const DecTables& t, DecodeCursor& c, unsigned k, u8* o) {
  u32 y = dec_step<Packed>(t, c.x[k], *o);
  if (y < k_state_low) {
    if (c.end - c.p < 2) corrupt("stream truncated");
    y = (y << 16) | util::load_le<u16>(reinterpret_cast<const std::byte*>(c.p));
    c.p += 2;
  }
  c.x[k] = y;
}

}  // namespace

struct PieceDecoder::State {
  unsigned kind = k_kind_empty;
  u8 constant = 0;
  std::size_t n = 0;
  std::size_t pos = 0;
  unsigned lanes_log2 = 0;
  bool packed = true;
  DecodeRoundsFn rounds_fn = nullptr;
  DecTables t;
  DecodeCursor c;
  Kernel kernel;
  explicit State(Kernel k) : kernel(k) {}

  // Symbols o[0, m) are symbols [pos, pos + m) of the block: a partial round
  // (lane by lane), whole rounds (the kernel, then the checked loop where
  // the stream is too near its end for it), a partial round again.
  template <bool Packed>
  void decode(u8* o, std::size_t m) {
    const std::size_t lanes = std::size_t{1} << lanes_log2;
    const std::size_t mask = lanes - 1;
    for (; m > 0 && (pos & mask) != 0; --m, ++o, ++pos)
      decode_checked<Packed>(t, c, static_cast<unsigned>(pos & mask), o);
    const std::size_t rounds = m >> lanes_log2;
    if (rounds > 0) {
      c.out = o;
      c.round = 0;
      c.rounds = rounds;
      rounds_fn(t, c);
      for (; c.round < rounds; ++c.round)
        for (unsigned k = 0; k < lanes; ++k) decode_checked<Packed>(t, c, k, o + c.round * lanes + k);
      o += rounds * lanes;
      pos += rounds * lanes;
      m -= rounds * lanes;
    }
    for (unsigned k = 0; k < m; ++k) decode_checked<Packed>(t, c, k, o + k);
    pos += m;
  }
};

PieceDecoder::PieceDecoder() : m_state(std::make_unique<State>(active_decode_kernel())) {}
PieceDecoder::PieceDecoder(Kernel kernel) : m_state(std::make_unique<State>(usable(kernel))) {}
PieceDecoder::~PieceDecoder() = default;
PieceDecoder::PieceDecoder(PieceDecoder&&) noexcept = default;
PieceDecoder& PieceDecoder::operator=(PieceDecoder&&) noexcept = default;

std::size_t PieceDecoder::position() const noexcept { return m_state->pos; }

void PieceDecoder::start(util::ByteSpan block, std::size_t n) {
  State& st = *m_state;
  st.n = n;
  st.pos = 0;
  st.kind = k_kind_empty;
  if (block.empty()) corrupt("empty");
  const u8* b = reinterpret_cast<const u8*>(block.data());
  const std::size_t size = block.size();
  if ((b[0] >> 4) != k_version)
    throw Error(Errc::corrupt, "rans block: unknown version " + std::to_string(b[0] >> 4));
  switch (b[0] & 15) {
    case k_kind_empty:
      if (size != 1) corrupt("bad empty block");
      if (n != 0) corrupt("empty block for a non-empty output");
      return;
    case k_kind_constant:
      if (size != 2) corrupt("bad constant block");
      if (n == 0) corrupt("constant block for an empty output");
      st.kind = k_kind_constant;
      st.constant = b[1];
      return;
    case k_kind_rans:
      break;
    default:
      corrupt("unknown block kind");
  }
  if (size < 2) corrupt("truncated header");
  const unsigned lanes_log2 = b[1] >> 4;
  const unsigned scale = (b[1] & 15) + k_min_scale;
  if (lanes_log2 > k_max_lanes_log2 || scale > k_max_scale) corrupt("bad parameters");
  const std::size_t lanes = std::size_t{1} << lanes_log2;
  if (lanes > n) corrupt("more lanes than symbols");
  Freqs freq;
  const std::size_t head = 2 + read_table(b + 2, size - 2, scale, freq);
  if (size - head < 4 * lanes) corrupt("truncated states");
  DecodeCursor& c = st.c;
  for (std::size_t k = 0; k < lanes; ++k) {
    c.x[k] = util::load_le<u32>(block.data() + head + 4 * k);
    if (c.x[k] < k_state_low) corrupt("state out of range");
  }
  c.p = b + head + 4 * lanes;
  c.end = b + size;
  build_decoder(freq, scale, st.t);
  st.kind = k_kind_rans;
  st.lanes_log2 = lanes_log2;
  st.packed = scale <= k_packed_max_scale;
  st.rounds_fn = decode_rounds(st.kernel, lanes_log2, st.packed);
}

void PieceDecoder::next(util::MutableByteSpan out) {
  State& st = *m_state;
  if (out.size() > st.n - st.pos) throw Error(Errc::internal, "rans::PieceDecoder: more bytes asked for than the block has");
  if (out.empty()) return;
  u8* o = reinterpret_cast<u8*>(out.data());
  if (st.kind == k_kind_constant) {
    std::memset(o, st.constant, out.size());
    st.pos += out.size();
  } else if (st.packed) {
    st.decode<true>(o, out.size());
  } else {
    st.decode<false>(o, out.size());
  }
}

void PieceDecoder::finish() {
  const State& st = *m_state;
  if (st.pos != st.n) throw Error(Errc::internal, "rans::PieceDecoder: finished before the end of the block");
  if (st.kind != k_kind_rans) return;
  if (st.c.p != st.c.end) corrupt("trailing bytes after the stream");
  for (std::size_t k = 0; k < (std::size_t{1} << st.lanes_log2); ++k)
    if (st.c.x[k] != k_state_low) corrupt("final state mismatch");
}

namespace {

void decode_impl(util::ByteSpan block, util::MutableByteSpan out, Kernel kernel) {
  PieceDecoder d(kernel);
  d.start(block, out.size());
  d.next(out);
  d.finish();
}

}  // namespace

std::optional<std::size_t> encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out) {
  return encode_impl(in, hist, out, active_encode_kernel());
}

std::optional<std::size_t> encode_fast(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out) {
  return encode_impl(in, hist, out, active_encode_kernel(), k_packed_max_scale);
}

std::optional<std::size_t> encode_lanes(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out,
                                        unsigned min_lanes_log2) {
  return encode_impl(in, hist, out, active_encode_kernel(), k_max_scale, std::min(min_lanes_log2, k_max_lanes_log2));
}

void decode(util::ByteSpan block, util::MutableByteSpan out) { decode_impl(block, out, active_decode_kernel()); }

namespace detail {
std::optional<std::size_t> encode_with(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out, Kernel k) {
  return encode_impl(in, hist, out, usable(k));
}
void decode_with(util::ByteSpan block, util::MutableByteSpan out, Kernel k) { decode_impl(block, out, usable(k)); }
}  // namespace detail

}  // namespace mithril::codec::rans
