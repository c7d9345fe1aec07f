// codec/rans_blocks.cpp — a plane as several rANS blocks (rans_blocks.hpp).
#include "codec/rans_blocks.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "codec/rans.hpp"
#include "mithril/error.hpp"

namespace mithril::codec::rans_blocks {
namespace {

constexpr std::size_t k_piece = std::size_t{1} << k_min_log2_block;

[[noreturn]] void corrupt(const std::string& what) { throw Error(Errc::corrupt, "rans blocks: " + what); }

// Lanes of every block: at least 32 (rans::encode_lanes). The planner alone
// gives a 64 KiB block ~16 (its states ~1/256 of the payload), and 16 lanes
// decode at about half the rate of 64 (two AVX2 registers' dependency chains
// instead of eight): on the AdamW state (its exponent planes in blocks)
// 32 lanes decoded 6% faster for 0.007% more bytes (docs/benchmarks.md,
// session 37).
constexpr unsigned k_block_lanes_log2 = 5;

// Estimated bytes of one rANS block of n bytes with histogram h, head
// included: the order-0 bound, ~1.3 bytes of table per symbol and the lane
// states (rans.cpp gives a block ~1/2048 of its size or 1/256 of its payload
// in states, at most 64 lanes of 4 bytes; here at least 32 lanes).
double block_cost(const Histogram& h, std::size_t n) {
  unsigned nsym = 0;
  for (auto c : h) nsym += c != 0;
  if (nsym <= 1) return 6.0;
  const double payload = order0_bits(h) / 8.0;
  const double min_states = 4.0 * static_cast<double>(std::min<std::size_t>(n, std::size_t{1} << k_block_lanes_log2));
  const double states =
      std::min(256.0, std::max({payload / 256.0, static_cast<double>(n) / 2048.0, min_states}));
  return std::min(payload + 1.3 * nsym + states + 8.0, static_cast<double>(n) + 4.0);
}

}  // namespace

Split choose(util::ByteSpan plane) {
  Split s;
  const std::size_t n = plane.size();
  const std::size_t pieces = (n + k_piece - 1) / k_piece;
  std::vector<Histogram> level(pieces);
  for (std::size_t i = 0; i < pieces; ++i) {
    const util::ByteSpan piece = plane.subspan(i * k_piece, std::min(k_piece, n - i * k_piece));
    if (i == 0) {
      // The first piece is judged from its first 4 KiB, counted on their own.
      Histogram head{};
      histogram(piece.first(std::min<std::size_t>(piece.size(), 4096)), head);
      histogram_estimate(piece, head, level[i]);
    } else {
      histogram_estimate(piece, level[i - 1], level[i]);  // the previous piece picks the symbols to count
    }
  }
  s.whole.fill(0);
  for (const auto& h : level)
    for (unsigned b = 0; b < 256; ++b) s.whole[b] += h[b];
  const double whole = block_cost(s.whole, n);
  s.estimate_bytes = whole;
  if (pieces < 2) return s;
  double best = whole * 0.995;  // splitting must save 0.5%
  // Level L has blocks of 2^(16 + L) bytes, merged pairwise from level L - 1.
  for (unsigned log2b = k_min_log2_block; (std::size_t{1} << log2b) < n; ++log2b) {
    const std::size_t bs = std::size_t{1} << log2b;
    double cost = 1.0;
    for (std::size_t i = 0; i < level.size(); ++i) cost += block_cost(level[i], std::min(bs, n - i * bs));
    if (cost < best) {
      best = cost;
      s.log2_block = log2b;
      s.estimate_bytes = cost;
      s.blocks = level;  // encode() codes with these: no second counting pass
    }
    std::vector<Histogram> next((level.size() + 1) / 2);
    for (std::size_t i = 0; i < level.size(); ++i)
      for (unsigned b = 0; b < 256; ++b) next[i / 2][b] += level[i][b];
    level = std::move(next);
  }
  return s;
}

std::optional<std::size_t> encode(util::ByteSpan plane, unsigned log2_block, util::MutableByteSpan out,
                                  std::span<const Histogram> hists) {
  if (log2_block < k_min_log2_block || log2_block > k_max_log2_block)
    throw Error(Errc::invalid_argument, "rans_blocks::encode: bad block size");
  const std::size_t n = plane.size();
  const std::size_t bs = std::size_t{1} << log2_block;
  if (!hists.empty() && hists.size() != std::max<std::size_t>(1, (n + bs - 1) / bs))
    throw Error(Errc::internal, "rans_blocks::encode: " + std::to_string(hists.size()) + " histograms for " +
                                    std::to_string((n + bs - 1) / bs) + " blocks");
  if (out.empty()) return std::nullopt;
  out[0] = static_cast<std::byte>(log2_block);
  std::size_t pos = 1;
  Histogram counted;
  for (std::size_t off = 0; off < n || (n == 0 && off == 0); off += bs) {
    const util::ByteSpan in = plane.subspan(off, std::min(bs, n - off));
    if (out.size() - pos < 4) return std::nullopt;
    const util::MutableByteSpan room = out.subspan(pos + 4);
    const Histogram* hp = &counted;
    if (hists.empty())
      histogram(in, counted);
    else
      hp = &hists[off / bs];
    const Histogram& h = *hp;
    std::optional<std::size_t> size;
    if (!in.empty()) size = rans::encode_lanes(in, h, room.first(std::min(room.size(), in.size() - 1)), k_block_lanes_log2);
    std::uint32_t head;
    if (size) {
      head = static_cast<std::uint32_t>(*size << 1);
    } else {
      if (room.size() < in.size()) return std::nullopt;
      if (!in.empty()) std::memcpy(room.data(), in.data(), in.size());
      size = in.size();
      head = static_cast<std::uint32_t>(in.size() << 1) | 1u;
    }
    util::store_le<std::uint32_t>(out.data() + pos, head);
    pos += 4 + *size;
    if (n == 0) break;
  }
  return pos;
}

void PieceDecoder::start(util::ByteSpan data, std::size_t n) {
  if (data.empty()) corrupt("empty");
  const unsigned log2_block = static_cast<unsigned>(data[0]);
  if (log2_block < k_min_log2_block || log2_block > k_max_log2_block)
    corrupt("bad block size 2^" + std::to_string(log2_block));
  m_data = data;
  m_n = n;
  m_block = std::size_t{1} << log2_block;
  m_pos = 1;
  m_done = 0;
  m_block_start = 0;
  m_block_end = 0;
  m_stored = nullptr;
  open_block();  // an empty plane has one empty block too
}

void PieceDecoder::open_block() {
  const std::size_t len = std::min(m_block, m_n - m_done);
  if (m_data.size() - m_pos < 4) corrupt("truncated block head");
  const auto head = util::load_le<std::uint32_t>(m_data.data() + m_pos);
  m_pos += 4;
  const std::size_t size = head >> 1;
  if (size > m_data.size() - m_pos) corrupt("block runs past the plane");
  const util::ByteSpan in = m_data.subspan(m_pos, size);
  if (head & 1) {
    if (size != len) corrupt("stored block has the wrong size");
    m_stored = in.data();
  } else {
    m_stored = nullptr;
    m_rans.start(in, len);
    if (len == 0) m_rans.finish();
  }
  m_pos += size;
  m_block_start = m_done;
  m_block_end = m_done + len;
}

void PieceDecoder::next(util::MutableByteSpan out) {
  if (out.size() > m_n - m_done)
    throw Error(Errc::internal, "rans_blocks::PieceDecoder: more bytes asked for than the plane has");
  std::size_t at = 0;
  while (at < out.size()) {
    if (m_done == m_block_end) open_block();
    const std::size_t take = std::min(out.size() - at, m_block_end - m_done);
    const util::MutableByteSpan piece = out.subspan(at, take);
    if (m_stored) {
      std::memcpy(piece.data(), m_stored + (m_done - m_block_start), take);
    } else {
      m_rans.next(piece);
    }
    m_done += take;
    at += take;
    if (m_done == m_block_end && !m_stored) m_rans.finish();
  }
}

void PieceDecoder::finish() {
  if (m_done != m_n) throw Error(Errc::internal, "rans_blocks::PieceDecoder: finished before the end of the plane");
  if (m_pos != m_data.size()) corrupt("trailing bytes after the last block");
}

void decode(util::ByteSpan data, util::MutableByteSpan out) {
  PieceDecoder d;
  d.start(data, out.size());
  d.next(out);
  d.finish();
}

}  // namespace mithril::codec::rans_blocks
