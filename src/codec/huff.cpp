// codec/huff.cpp — static order-0 Huffman coder for byte planes (huff.hpp).
//
// Block format, version 1 (multi-byte integers little-endian):
//
//   block    := tag body
//   tag      := u8 (version << 4) | kind                 version = 1
//   kind 0, empty:     body := ""                          original size is 0
//   kind 1, constant:  body := u8 symbol                   every byte is `symbol`
//   kind 2, huffman:   body := lo:u8 count_minus_1:u8 lengths sizes streams
//   lengths  := count nibbles, low nibble first, zero-padded to a byte: the
//               code length (0 = absent, 1..11) of symbols lo .. lo+count-1
//               (lo + count <= 256); every other symbol is absent. At least
//               two are present and the code is complete: the sum of
//               2^(11 - len) over present symbols is exactly 2^11.
//   sizes    := 6 x u32                                  each stream's bytes
//   streams  := the 6 streams, one after the other, up to the end of the block
//
// Codes are canonical: present symbols sorted by (length, symbol) get
// consecutive code values, the first 0, each next one (previous + 1) shifted
// left by the growth in length. A stream is a bit string read least
// significant bit first from its bytes; each code is stored first bit first.
//
// Which stream holds which bytes (n = original size): the data is cut into
// rounds of 16384 bytes, the last one shorter; a round of m bytes is cut
// into 6 slices, slice k of size m / 6 + (k < m % 6), in order; stream k holds
// slice k of every round, in order. After the last symbol, every stream has
// ended in its last byte (fewer than 8 bits left over).
//
// Decoding takes an 11-bit window of a stream; a table gives all the whole
// codes in it (up to 6 symbols), which are stored with one 8-byte write, and
// the bits they used. The six streams are independent chains, interleaved.
#include "codec/huff.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "mithril/error.hpp"

namespace mithril::codec::huff {

namespace {

constexpr unsigned k_version = 1;
constexpr unsigned k_table = 1u << k_max_len;
constexpr unsigned k_max_multi = 6;  // symbols one table entry can hold

[[noreturn]] void corrupt(const char* what) { throw Error(Errc::corrupt, std::string("huffman block: ") + what); }

inline std::uint64_t load64(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // the project builds for little-endian targets only
}
inline void store64(std::byte* p, std::uint64_t v) noexcept { std::memcpy(p, &v, 8); }

std::uint32_t reverse_bits(std::uint32_t code, unsigned len) noexcept {
  std::uint32_t r = 0;
  for (unsigned i = 0; i < len; ++i) {
    r = (r << 1) | (code & 1);
    code >>= 1;
  }
  return r;
}

// Huffman lengths for weights w (0 = absent), unlimited; two-queue method,
// ties broken towards leaves and lower symbols (deterministic).
std::array<std::uint8_t, 256> huffman_lengths(const std::array<std::uint64_t, 256>& w) {
  struct Node {
    std::uint64_t weight;
    int parent;
  };
  std::vector<Node> nodes;  // leaves (sorted by weight, symbol) then internal nodes
  std::array<int, 256> leaf_of{};
  std::vector<int> syms;
  for (int s = 0; s < 256; ++s)
    if (w[s]) syms.push_back(s);
  std::stable_sort(syms.begin(), syms.end(), [&](int a, int b) { return w[a] < w[b]; });
  for (int s : syms) {
    leaf_of[s] = static_cast<int>(nodes.size());
    nodes.push_back({w[s], -1});
  }
  std::array<std::uint8_t, 256> len{};
  const std::size_t leaves = nodes.size();
  if (leaves < 2) return len;
  std::size_t next_leaf = 0, next_inner = leaves;
  auto take = [&]() {
    if (next_leaf < leaves && (next_inner == nodes.size() || nodes[next_leaf].weight <= nodes[next_inner].weight))
      return next_leaf++;
    return next_inner++;
  };
  for (std::size_t i = 0; i + 1 < leaves; ++i) {
    const std::size_t a = take(), b = take();
    const int id = static_cast<int>(nodes.size());
    nodes.push_back({nodes[a].weight + nodes[b].weight, -1});
    nodes[a].parent = id;
    nodes[b].parent = id;
  }
  std::vector<std::uint8_t> depth(nodes.size(), 0);
  for (std::size_t i = nodes.size() - 1; i-- > 0;) depth[i] = static_cast<std::uint8_t>(std::min(255, depth[nodes[i].parent] + 1));
  for (int s : syms) len[s] = depth[leaf_of[s]];
  return len;
}

struct Codes {
  std::array<std::uint32_t, 256> rev{};  // code, bit-reversed (first bit in bit 0)
  std::array<std::uint8_t, 256> len{};
};

Codes canonical(const std::array<std::uint8_t, 256>& len) {
  Codes c;
  c.len = len;
  std::vector<int> order;
  for (int s = 0; s < 256; ++s)
    if (len[s]) order.push_back(s);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return len[a] < len[b]; });
  std::uint32_t code = 0;
  unsigned prev = 0;
  bool first = true;
  for (int s : order) {
    if (first) {
      code = 0;
      first = false;
    } else {
      code = (code + 1) << (len[s] - prev);
    }
    prev = len[s];
    c.rev[s] = reverse_bits(code, len[s]);
  }
  return c;
}

std::size_t header_size(unsigned count) { return 1 + 2 + (count + 1) / 2 + 4 * k_streams; }

struct Span {
  unsigned lo = 0, count = 0;
};
Span present_span(const std::array<std::uint8_t, 256>& len) {
  int lo = -1, hi = -1;
  for (int s = 0; s < 256; ++s)
    if (len[s]) {
      if (lo < 0) lo = s;
      hi = s;
    }
  if (lo < 0) return {};
  return {static_cast<unsigned>(lo), static_cast<unsigned>(hi - lo + 1)};
}

// Slice k of a round of m bytes: offset and size.
struct Slice {
  std::size_t at, size;
};
inline Slice slice_of(std::size_t m, unsigned k) noexcept {
  const std::size_t q = m / k_streams, r = m % k_streams;
  return {k * q + std::min<std::size_t>(k, r), q + (k < r ? 1 : 0)};
}

// The pair table of the encoder: for bytes a, b the codes of a then b,
// (bits << 5) | length; 256 KiB, kept per thread.
std::uint32_t* pair_table() {
  thread_local std::unique_ptr<std::uint32_t[]> table;
  if (!table) table = std::make_unique<std::uint32_t[]>(65536);
  return table.get();
}

// The decoder's tables for one block.
struct Tables {
  std::array<std::uint16_t, k_table> single;  // (len << 8) | symbol; len 0: none
  std::array<std::uint64_t, k_table> multi;   // bits in byte 0, symbols in bytes 1..6, count in byte 7
};

void build_tables(const std::array<std::uint8_t, 256>& len, Tables& t) {
  const Codes c = canonical(len);
  t.single.fill(0);
  for (unsigned s = 0; s < 256; ++s) {
    const unsigned l = len[s];
    if (!l) continue;
    const std::uint16_t e = static_cast<std::uint16_t>((l << 8) | s);
    for (std::uint32_t hi = 0; hi < (1u << (k_max_len - l)); ++hi) t.single[c.rev[s] | (hi << l)] = e;
  }
  for (std::uint32_t idx = 0; idx < k_table; ++idx) {
    std::uint64_t e = 0;
    unsigned pos = 0, n = 0;
    while (n < k_max_multi) {
      const std::uint16_t s = t.single[idx >> pos];
      const unsigned l = s >> 8;
      if (l == 0 || l > k_max_len - pos) break;
      e |= std::uint64_t{static_cast<std::uint8_t>(s)} << (8 + 8 * n);
      ++n;
      pos += l;
    }
    t.multi[idx] = e | pos | (std::uint64_t{n} << 56);
  }
}

}  // namespace

std::array<std::uint8_t, 256> code_lengths(const Histogram& hist) {
  std::array<std::uint64_t, 256> w{};
  for (int s = 0; s < 256; ++s) w[s] = hist[s];
  auto len = huffman_lengths(w);
  if (*std::max_element(len.begin(), len.end()) <= k_max_len) return len;
  // Too deep: cut every code to k_max_len bits, then restore the Kraft sum
  // (in units of 2^-k_max_len; a complete code sums to exactly k_table) by
  // lengthening, each time, the code whose extra bit costs least for the
  // room it frees (count / 2^(k_max_len - len - 1)) without freeing more
  // than is missing; then use any room left by shortening the most frequent
  // code that fits in it. Deterministic: ties go to the lower symbol.
  std::int64_t kraft = 0;
  for (int s = 0; s < 256; ++s)
    if (len[s]) {
      len[s] = static_cast<std::uint8_t>(std::min<unsigned>(len[s], k_max_len));
      kraft += std::int64_t{1} << (k_max_len - len[s]);
    }
  while (kraft > static_cast<std::int64_t>(k_table)) {
    const std::int64_t excess = kraft - static_cast<std::int64_t>(k_table);
    int best = -1;      // cheapest bits per unit freed, among those that free at most the excess
    int smallest = -1;  // else the one that frees least (then costs least)
    for (int s = 0; s < 256; ++s) {
      if (!len[s] || len[s] >= k_max_len) continue;
      const std::int64_t freed = std::int64_t{1} << (k_max_len - len[s] - 1);
      if (freed <= excess) {
        // w[s] / freed(s) < w[best] / freed(best), cross-multiplied (counts < 2^32: no overflow)
        if (best < 0 || (w[s] << (k_max_len - len[best])) < (w[best] << (k_max_len - len[s]))) best = s;
      } else if (smallest < 0 || len[s] > len[smallest] || (len[s] == len[smallest] && w[s] < w[smallest])) {
        smallest = s;
      }
    }
    if (best < 0) best = smallest;
    ++len[best];
    kraft -= std::int64_t{1} << (k_max_len - len[best]);
  }
  while (kraft < static_cast<std::int64_t>(k_table)) {
    // Some code fits: the room left is a multiple of the smallest term.
    int best = -1;
    for (int s = 0; s < 256; ++s)
      if (len[s] > 1 && kraft + (std::int64_t{1} << (k_max_len - len[s])) <= static_cast<std::int64_t>(k_table) &&
          (best < 0 || w[s] > w[best]))
        best = s;
    kraft += std::int64_t{1} << (k_max_len - len[best]);
    --len[best];
  }
  return len;
}

std::size_t coded_size(const Histogram& hist, const std::array<std::uint8_t, 256>& lengths) {
  const Span sp = present_span(lengths);
  std::uint64_t bits = 0;
  for (int s = 0; s < 256; ++s) bits += std::uint64_t{hist[s]} * lengths[s];
  return header_size(sp.count) + static_cast<std::size_t>(bits / 8) + k_streams;
}

std::optional<std::size_t> encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out,
                                  const std::array<std::uint8_t, 256>* lengths) {
  const std::size_t n = in.size();
  std::byte* const o0 = out.data();
  const std::byte* const end = out.data() + out.size();
  if (n == 0) {
    if (out.size() < 1) return std::nullopt;
    o0[0] = static_cast<std::byte>(k_version << 4 | 0);
    return 1;
  }
  const auto len = lengths ? *lengths : code_lengths(hist);
  const Span sp = present_span(len);
  if (sp.count == 0) {  // one symbol
    if (out.size() < 2) return std::nullopt;
    o0[0] = static_cast<std::byte>(k_version << 4 | 1);
    o0[1] = in[0];
    return 2;
  }
  const std::size_t head = header_size(sp.count);
  if (out.size() < head) return std::nullopt;
  std::memset(o0, 0, head);
  o0[0] = static_cast<std::byte>(k_version << 4 | 2);
  o0[1] = static_cast<std::byte>(sp.lo);
  o0[2] = static_cast<std::byte>(sp.count - 1);
  for (unsigned i = 0; i < sp.count; ++i)
    o0[3 + i / 2] |= static_cast<std::byte>(len[sp.lo + i] << (4 * (i & 1)));

  const Codes c = canonical(len);
  std::uint32_t* const pair = pair_table();
  std::vector<unsigned> present;
  for (unsigned s = 0; s < 256; ++s)
    if (len[s]) present.push_back(s);
  for (unsigned a : present)
    for (unsigned b : present)
      pair[a | (b << 8)] = ((c.rev[a] | (c.rev[b] << len[a])) << 5) | (len[a] + len[b]);

  const auto* src = reinterpret_cast<const std::uint8_t*>(in.data());
  std::byte* o = o0 + head;
  for (unsigned k = 0; k < k_streams; ++k) {
    std::byte* const stream_start = o;
    std::uint64_t acc = 0;
    unsigned nb = 0;  // bits in acc, < 8 between steps
    for (std::size_t r = 0; r < n; r += k_round) {
      const std::size_t m = std::min(k_round, n - r);
      const Slice sl = slice_of(m, k);
      // Room for the slice's worst case (every code k_max_len bits) and one
      // 8-byte store past it.
      if (static_cast<std::size_t>(end - o) < (sl.size * k_max_len + 7) / 8 + 16) return std::nullopt;
      const std::uint8_t* p = src + r + sl.at;
      const std::uint8_t* const pe = p + sl.size;
      for (; pe - p >= 4; p += 4) {
        const std::uint32_t x = pair[p[0] | (p[1] << 8)];
        const std::uint32_t y = pair[p[2] | (p[3] << 8)];
        acc |= std::uint64_t{x >> 5} << nb;
        nb += x & 31;
        acc |= std::uint64_t{y >> 5} << nb;
        nb += y & 31;
        store64(o, acc);
        o += nb >> 3;
        acc >>= nb & ~7u;
        nb &= 7;
      }
      for (; p < pe; ++p) {
        acc |= std::uint64_t{c.rev[*p]} << nb;
        nb += len[*p];
        store64(o, acc);
        o += nb >> 3;
        acc >>= nb & ~7u;
        nb &= 7;
      }
    }
    if (nb) ++o;  // the last partial byte, already stored
    util::store_le<std::uint32_t>(o0 + head - 4 * k_streams + 4 * k, static_cast<std::uint32_t>(o - stream_start));
  }
  return static_cast<std::size_t>(o - o0);
}

// ---- decoding -----------------------------------------------------------------

struct PieceDecoder::State {
  Tables tables;
  const std::byte* base = nullptr;  // the streams
  std::size_t total = 0;            // their bytes, all together
  std::array<std::uint64_t, k_streams> bit{};  // each stream's next bit, from base
  std::array<std::size_t, k_streams> end{};    // each stream's end (bytes from base)
  std::size_t n = 0, done = 0;
  int kind = 0;
  std::byte constant{};
  std::vector<std::byte> round;  // a round decoded ahead of a piece that splits it
  std::size_t round_at = 0, round_len = 0;

  // 8 bytes of the streams from bit q on, shifted so that bit q is bit 0.
  template <bool Safe>
  std::uint64_t peek(std::uint64_t q) const noexcept {
    const std::size_t at = q >> 3;
    if constexpr (Safe) {
      if (at + 8 > total) {
        std::uint64_t v = 0;
        for (std::size_t i = at; i < total && i < at + 8; ++i)
          v |= std::uint64_t{std::to_integer<std::uint8_t>(base[i])} << (8 * (i - at));
        return v >> (q & 7);
      }
    }
    return load64(base + at) >> (q & 7);
  }

  // Decodes size symbols of stream k into out, the slow way: a table entry
  // at a time while 8 bytes fit, then a symbol at a time.
  template <bool Safe>
  void tail(unsigned k, std::byte* out, std::size_t size) {
    std::uint64_t q = bit[k];
    std::byte* const e = out + size;
    while (e - out >= 8) {
      const std::uint64_t t = tables.multi[peek<Safe>(q) & (k_table - 1)];
      store64(out, t >> 8);
      out += t >> 56;
      q += t & 0xff;
    }
    while (out < e) {
      const std::uint16_t s = tables.single[peek<Safe>(q) & (k_table - 1)];
      *out++ = static_cast<std::byte>(s & 0xff);
      q += s >> 8;
    }
    bit[k] = q;
  }

  // Decodes the round of m bytes that starts at done into out.
  void decode_round_at(std::byte* out, std::size_t m) {
    std::array<std::byte*, k_streams> o{}, e{};
    for (unsigned k = 0; k < k_streams; ++k) {
      const Slice sl = slice_of(m, k);
      o[k] = out + sl.at;
      e[k] = o[k] + sl.size;
    }
    // Six chains, in batches of iterations none of which can write past any
    // slice's end (an entry gives at most 6 symbols and is stored as 8
    // bytes) or read past the block's end. Each iteration loads 8 bytes of
    // each stream once (at least 57 bits) and takes 4 entries from them (at
    // most 44 bits): the chain from one lookup to the next is a mask, a
    // load and a shift.
    const std::uint64_t* const multi = tables.multi.data();
    const std::byte* const b = base;
    std::uint64_t q0 = bit[0], q1 = bit[1], q2 = bit[2], q3 = bit[3], q4 = bit[4], q5 = bit[5];
    std::byte *o0 = o[0], *o1 = o[1], *o2 = o[2], *o3 = o[3], *o4 = o[4], *o5 = o[5];
    constexpr unsigned lookups = 4;
    constexpr std::size_t per = lookups * k_max_multi;     // symbols one iteration may give a stream
    constexpr std::uint64_t per_bits = lookups * k_max_len;  // bits it may take
    for (;;) {
      const auto room = static_cast<std::size_t>(std::min({e[0] - o0, e[1] - o1, e[2] - o2, e[3] - o3, e[4] - o4, e[5] - o5}));
      const std::uint64_t far = std::max({q0, q1, q2, q3, q4, q5}) >> 3;
      if (room < per + 8 || far + 16 > total) break;
      const std::size_t it = std::min<std::size_t>((room - 8) / per, (total - 8 - far) * 8 / per_bits - 1);
      if (it == 0) break;
      for (std::size_t i = it; i; --i) {
#define MITHRIL_HUFF_LOAD(k) std::uint64_t w##k = load64(b + (q##k >> 3)) >> (q##k & 7);
#define MITHRIL_HUFF_STEP(k)                                \
  {                                                         \
    const std::uint64_t t = multi[w##k & (k_table - 1)];    \
    w##k >>= t & 63;                                        \
    q##k += t & 0xff;                                       \
    store64(o##k, t >> 8);                                  \
    o##k += t >> 56;                                        \
  }
#define MITHRIL_HUFF_ALL(X) X(0) X(1) X(2) X(3) X(4) X(5)
        MITHRIL_HUFF_ALL(MITHRIL_HUFF_LOAD)
        MITHRIL_HUFF_ALL(MITHRIL_HUFF_STEP)
        MITHRIL_HUFF_ALL(MITHRIL_HUFF_STEP)
        MITHRIL_HUFF_ALL(MITHRIL_HUFF_STEP)
        MITHRIL_HUFF_ALL(MITHRIL_HUFF_STEP)
#undef MITHRIL_HUFF_ALL
#undef MITHRIL_HUFF_STEP
#undef MITHRIL_HUFF_LOAD
      }
    }
    bit = {q0, q1, q2, q3, q4, q5};
    o = {o0, o1, o2, o3, o4, o5};
    // The rest of each slice one stream at a time, with checked reads where
    // the stream is near the block's end.
    for (unsigned k = 0; k < k_streams; ++k) {
      const auto left = static_cast<std::size_t>(e[k] - o[k]);
      if ((bit[k] >> 3) + (left * k_max_len + 7) / 8 + 8 <= total)
        tail<false>(k, o[k], left);
      else
        tail<true>(k, o[k], left);
    }
    done += m;
  }
};

PieceDecoder::PieceDecoder() : m_state(std::make_unique<State>()) {}
PieceDecoder::~PieceDecoder() = default;
PieceDecoder::PieceDecoder(PieceDecoder&&) noexcept = default;
PieceDecoder& PieceDecoder::operator=(PieceDecoder&&) noexcept = default;

void PieceDecoder::start(util::ByteSpan block, std::size_t n) {
  State& s = *m_state;
  s.n = n;
  s.done = 0;
  s.round_at = s.round_len = 0;
  if (block.empty()) corrupt("empty");
  const unsigned tag = std::to_integer<unsigned>(block[0]);
  if ((tag >> 4) != k_version) corrupt(("unknown version " + std::to_string(tag >> 4)).c_str());
  s.kind = static_cast<int>(tag & 15);
  switch (s.kind) {
    case 0:
      if (block.size() != 1) corrupt("empty block with trailing bytes");
      if (n != 0) corrupt("empty block for a non-empty plane");
      return;
    case 1:
      if (block.size() != 2) corrupt("constant block of the wrong size");
      s.constant = block[1];
      return;
    case 2:
      break;
    default:
      corrupt("unknown kind");
  }
  if (block.size() < 3) corrupt("truncated header");
  const unsigned lo = std::to_integer<unsigned>(block[1]);
  const unsigned count = std::to_integer<unsigned>(block[2]) + 1;
  if (lo + count > 256) corrupt("symbol range past 255");
  const std::size_t head = header_size(count);
  if (block.size() < head) corrupt("truncated header");
  std::array<std::uint8_t, 256> len{};
  std::uint32_t kraft = 0;
  unsigned present = 0;
  for (unsigned i = 0; i < count; ++i) {
    const unsigned l = (std::to_integer<unsigned>(block[3 + i / 2]) >> (4 * (i & 1))) & 15;
    if (l > k_max_len) corrupt("code length over 11");
    len[lo + i] = static_cast<std::uint8_t>(l);
    if (l) {
      kraft += 1u << (k_max_len - l);
      ++present;
    }
  }
  if (present < 2 || kraft != k_table) corrupt("code lengths do not form a complete code");
  std::size_t at = 0;
  for (unsigned k = 0; k < k_streams; ++k) {
    at += util::load_le<std::uint32_t>(block.data() + head - 4 * k_streams + 4 * k);
    s.end[k] = at;
    s.bit[k] = 8 * (k ? s.end[k - 1] : 0);
  }
  if (at != block.size() - head) corrupt("stream sizes do not add up to the block");
  if (n == 0) corrupt("huffman block for an empty plane");
  s.base = block.data() + head;
  s.total = at;
  build_tables(len, s.tables);
}

void PieceDecoder::next(util::MutableByteSpan out) {
  State& s = *m_state;
  if (out.size() > s.n - (s.done - (s.round_len - s.round_at)))
    throw Error(Errc::internal, "huffman: decoding past the end of the block");
  if (s.kind == 1) {
    std::memset(out.data(), std::to_integer<int>(s.constant), out.size());
    s.done += out.size();
    return;
  }
  std::byte* o = out.data();
  std::size_t want = out.size();
  while (want) {
    if (s.round_at < s.round_len) {
      const std::size_t c = std::min(want, s.round_len - s.round_at);
      std::memcpy(o, s.round.data() + s.round_at, c);
      s.round_at += c;
      o += c;
      want -= c;
      continue;
    }
    const std::size_t m = std::min(k_round, s.n - s.done);
    if (want >= m) {
      s.decode_round_at(o, m);
      o += m;
      want -= m;
    } else {
      if (s.round.size() < k_round) s.round.resize(k_round);
      s.decode_round_at(s.round.data(), m);
      s.round_at = 0;
      s.round_len = m;
    }
  }
}

void PieceDecoder::finish() {
  State& s = *m_state;
  if (s.kind != 2) {
    if (s.kind == 1) s.done = s.n;
    return;
  }
  if (s.done != s.n || s.round_at != s.round_len) throw Error(Errc::internal, "huffman: finish() before the end");
  for (unsigned k = 0; k < k_streams; ++k)
    if ((s.bit[k] + 7) / 8 != s.end[k]) corrupt("a stream does not end where its size says");
}

std::size_t PieceDecoder::position() const noexcept {
  const State& s = *m_state;
  return s.kind == 2 ? s.done - (s.round_len - s.round_at) : s.done;
}

void decode(util::ByteSpan block, util::MutableByteSpan out) {
  PieceDecoder d;
  d.start(block, out.size());
  d.next(out);
  d.finish();
}

}  // namespace mithril::codec::huff
