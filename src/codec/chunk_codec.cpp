#include "codec/chunk_codec.hpp"

#include <zstd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>

#include "codec/rans.hpp"
#include "codec/rans_blocks.hpp"
#include "mithril/error.hpp"
#include "util/cold_memory.hpp"
#include "util/fresh_memory.hpp"
#include "util/xxh3.hpp"

namespace mithril::codec {
namespace {

using container::Layout;
using container::Residual;

// A float plane whose order-0 bound on the chunk's sample saves less than
// this fraction is stored.
constexpr double k_min_saving = 0.01;

// Bytes a plane of n bytes with this order-0 bound is expected to take: the
// bound plus a small allowance for the rANS table, never more than n.
double estimate_plane(double bits, std::size_t n) {
  if (n == 0) return 0;
  return std::min(bits / 8.0 + 48.0, static_cast<double>(n));
}

using PlaneBits = std::array<double, 8>;

struct PlaneGeometry {
  std::size_t m;     // elements
  std::size_t tail;  // n % width
  std::size_t plane_size(unsigned k, unsigned width) const { return k + 1 == width ? m + tail : m; }
};

// Histograms of each plane of group(in), the tail counted in the last plane.
void grouped_histograms(util::ByteSpan in, unsigned width, GroupMode mode, std::span<Histogram> hists) {
  for (unsigned k = 0; k < width; ++k) hists[k].fill(0);
  if (width == 1) {
    histogram(in, hists[0]);
    return;
  }
  plane_histograms(in, width, mode, hists);
  const std::size_t tail = in.size() % width;
  for (std::size_t i = in.size() - tail; i < in.size(); ++i) ++hists[width - 1][static_cast<std::uint8_t>(in[i])];
}

// Inputs up to this size are estimated from all their bytes (exactly).
constexpr std::size_t k_exact_estimate = 128 * 1024;

template <unsigned W>
void count_both_modes(std::span<const util::ByteSpan> pieces, std::array<Histogram, 8>& plain,
                      std::array<Histogram, 8>& rotl1) {
  // Byte k of each element is counted with 9 bits: the byte and, below it,
  // bit 0 of its rotated self (the top bit of the byte below it in the
  // element, or of the element for byte 0). A block of elements' indices is
  // computed first, a plain loop over whole elements that the compiler
  // vectorizes, then counted by 16-bit loads, two tables a plane: 3.0 GB/s
  // on bf16 (1.75 for fp32) against 1.8 when each index was shifted out of a
  // 64-bit word as it was counted (AMD Zen 4, LoRA tensors of 32 KiB).
  using E = std::conditional_t<W == 2, std::uint16_t, std::conditional_t<W == 4, std::uint32_t, std::uint64_t>>;
  constexpr unsigned k_bits = 8 * W;
  constexpr unsigned k_per_plane = W == 8 ? 1 : 2;  // tables
  constexpr std::size_t k_block = 256;             // elements
  std::array<std::array<std::uint32_t, 512>, W * k_per_plane> joint{};
  alignas(64) std::uint16_t index[W][k_block];
  for (const util::ByteSpan in : pieces) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(in.data());
    const std::size_t m = in.size() / W;
    for (std::size_t first = 0; first < m; first += k_block) {
      const std::size_t n = std::min(k_block, m - first);
      const std::uint8_t* q = p + first * W;
      for (std::size_t e = 0; e < n; ++e) {
        const E v = util::load_le<E>(reinterpret_cast<const std::byte*>(q + e * W));
        index[0][e] = static_cast<std::uint16_t>(((v << 1) | (v >> (k_bits - 1))) & 0x1ff);
        for (unsigned k = 1; k < W; ++k) index[k][e] = static_cast<std::uint16_t>((v >> (8 * k - 1)) & 0x1ff);
      }
      std::size_t e = 0;
      for (; e + k_per_plane <= n; e += k_per_plane)
        for (unsigned r = 0; r < k_per_plane; ++r)
          for (unsigned k = 0; k < W; ++k) ++joint[k * k_per_plane + r][index[k][e + r]];
      for (; e < n; ++e)
        for (unsigned k = 0; k < W; ++k) ++joint[k * k_per_plane][index[k][e]];
    }
  }
  for (unsigned k = 0; k < W; ++k) {
    plain[k].fill(0);
    rotl1[k].fill(0);
    auto& sum = joint[k * k_per_plane];
    for (unsigned r = 1; r < k_per_plane; ++r)
      for (unsigned v = 0; v < 512; ++v) sum[v] += joint[k * k_per_plane + r][v];
    for (unsigned v = 0; v < 512; ++v) {
      plain[k][v >> 1] += sum[v];
      rotl1[k][v & 0xff] += sum[v];  // ((byte << 1) | bit) & 0xff
    }
  }
  for (const util::ByteSpan in : pieces) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(in.data());
    for (std::size_t i = in.size() / W * W; i < in.size(); ++i) {
      ++plain[W - 1][p[i]];
      ++rotl1[W - 1][p[i]];
    }
  }
}

}  // namespace

void detail::both_modes_histograms(std::span<const util::ByteSpan> pieces, unsigned width,
                                   std::array<Histogram, 8>& plain, std::array<Histogram, 8>& rotl1) {
  switch (width) {
    case 2: return count_both_modes<2>(pieces, plain, rotl1);
    case 4: return count_both_modes<4>(pieces, plain, rotl1);
    case 8: return count_both_modes<8>(pieces, plain, rotl1);
    default: throw Error(Errc::internal, "both_modes_histograms: width must be 2, 4 or 8");
  }
}

void detail::both_modes_histograms(util::ByteSpan in, unsigned width, std::array<Histogram, 8>& plain,
                                   std::array<Histogram, 8>& rotl1) {
  both_modes_histograms(std::span<const util::ByteSpan>(&in, 1), width, plain, rotl1);
}

namespace {

// Estimated cost of coding `in` grouped with `mode`, from evenly spaced
// slices when the input is large: choosing among candidates on a sample
// saves a full histogram pass per rejected candidate, and the choice is
// insensitive to it (weights are statistically uniform along a tensor).
// plane_bpb receives each plane's order-0 bits per byte on the sample, and
// hists the planes' histograms, which are exact (the whole input counted)
// when it returns with exact set.
// `counted`: the histograms of `in` in `mode` when the caller has them
// (both_modes_histograms): of all of it for an input of up to
// k_exact_estimate bytes, else of its sample_slices().
double estimate_sampled(util::ByteSpan in, unsigned width, GroupMode mode, PlaneBits& plane_bpb,
                        std::array<Histogram, 8>& hists, bool& exact, const std::array<Histogram, 8>* counted);

constexpr std::size_t k_slices = 8;
constexpr std::size_t k_slice = 8 * 1024;  // a multiple of every width
static_assert(k_exact_estimate == 2 * k_slices * k_slice);

// The evenly spaced slices an input of more than k_exact_estimate bytes is
// estimated from: whole elements of every width, no tails.
std::array<util::ByteSpan, k_slices> sample_slices(util::ByteSpan in) {
  const std::size_t stride = (in.size() / k_slices) / k_slice * k_slice;
  std::array<util::ByteSpan, k_slices> slices;
  for (std::size_t s = 0; s < k_slices; ++s) slices[s] = in.subspan(s * stride, k_slice);
  return slices;
}

double estimate_sampled(util::ByteSpan in, unsigned width, GroupMode mode, PlaneBits& plane_bpb,
                        std::array<Histogram, 8>& hists, bool& exact, const std::array<Histogram, 8>* counted) {
  exact = in.size() <= k_exact_estimate;
  // Each plane's bits per byte into plane_bpb; returns the planes' estimated
  // bytes in all (n bytes counted).
  auto estimate_counted = [&](std::size_t n) {
    const PlaneGeometry g{n / width, n % width};
    double total = 0;
    for (unsigned k = 0; k < width; ++k) {
      const std::size_t len = g.plane_size(k, width);
      const double bits = len ? order0_bits(hists[k]) : 0.0;
      plane_bpb[k] = len ? bits / static_cast<double>(len) : 0.0;
      total += estimate_plane(bits, len);
    }
    return total;
  };
  if (exact) {
    if (counted)
      std::copy_n(counted->begin(), width, hists.begin());
    else
      grouped_histograms(in, width, mode, hists);
    return estimate_counted(in.size());
  }
  if (counted) {
    std::copy_n(counted->begin(), width, hists.begin());
  } else {
    plane_histograms(sample_slices(in), width, mode, std::span<Histogram>(hists.data(), width));
  }
  const std::size_t sampled = k_slices * k_slice;
  return estimate_counted(sampled) * (static_cast<double>(in.size()) / static_cast<double>(sampled));
}

// Output bytes ungrouped per step before they are checksummed: small enough
// to still be in L1/L2 when XXH3 reads them (a 4 MiB chunk is not).
constexpr std::size_t k_hash_piece = 32 * 1024;
// The same, staged (cold output): the stage, the pieces of the decoded
// planes and the stored planes' prefetched bytes then fit in L1 together
// (48 KiB on this Xeon, 32 KiB on AMD Zen 3 and 4) instead of spilling to
// L2. Measured (Intel Xeon with AMX, one thread, bench_pipeline,
// decompression into a reused buffer, 32 -> 16 KiB, medians of 3-4
// alternations): fp16 17.1 -> 15.8 ms (AVX-512 kernels) and 19.8 -> 18.9
// (MITHRIL_ISA=avx2), bf16 15.0 -> 14.0 and 16.8 -> 16.1, fp32 21.6 ->
// 20.6 and 22.9 -> 22.4, MiniLM 24.1 -> 22.6 and 25.8 -> 25.2, AdamW state
// 59.1 -> 57.0; two threads fp16 9.0 -> 8.6. 8 KiB lost to 16 (fp16 under
// the AVX2 cap 20.3 -> 21.1, fp32 24.4 -> 26.5). Unstaged (new memory,
// output in cache) 16 KiB measured level to 1.5% slower: it keeps
// k_hash_piece.
constexpr std::size_t k_staged_piece = 16 * 1024;

// ungroup_planes() in pieces, each hashed into `sum` right after it is
// written. Same bytes and digest as ungrouping whole, then hashing. Each
// piece's planes come from plane(k, e, n): bytes [e, e + n) of plane k,
// asked for in order (e grows from 0 to the plane's end, the tail of the
// last plane last), so a plane can be decoded a piece at a time. Each
// k_prepare_piece of out is handed to hooks->prepare just before it is
// written (the last one reaching to the end of out). With a `stage` of
// k_staged_piece bytes (cold output) each piece is ungrouped and hashed there
// and then streamed to out. A residual chunk's pieces are folded into `base`
// before they are hashed.
template <class Plane>
void ungroup_and_hash(Plane&& plane, util::MutableByteSpan out, unsigned width, GroupMode mode, Residual residual,
                      util::ByteSpan base, util::Xxh3Stream& sum, const ChunkDecoder::Hooks* hooks,
                      std::byte* stage) {
  // A residual chunk's piece, once ungrouped, is folded into the base's
  // bytes at the same offset, in place.
  auto fold = [&](util::MutableByteSpan piece, std::size_t at) {
    if (residual == Residual::none) return;
    const util::ByteSpan b = base.subspan(at, piece.size());
    if (residual == Residual::xor_)
      xor_residual(piece, b, piece);
    else
      add_residual(piece, b, piece, width);
  };
  constexpr std::size_t prepare_piece = ChunkDecoder::k_prepare_piece;
  static_assert(prepare_piece % k_hash_piece == 0 && k_hash_piece % k_staged_piece == 0);
  const bool prepare = hooks && hooks->prepare;
  const bool written = hooks && hooks->written;
  const std::size_t m = out.size() / width;
  const std::size_t step = (stage ? k_staged_piece : k_hash_piece) / width;  // elements per piece
  std::array<util::ByteSpan, 8> part{};
  if (prepare && m == 0) hooks->prepare(out);
  for (std::size_t e = 0; e < m; e += step) {
    const std::size_t n = std::min(step, m - e);
    const std::size_t at = e * width;
    if (prepare && at % prepare_piece == 0)
      hooks->prepare(out.subspan(at, at + prepare_piece < m * width ? prepare_piece : out.size() - at));
    for (unsigned k = 0; k < width; ++k) part[k] = plane(k, e, n);
    const util::MutableByteSpan piece = out.subspan(at, n * width);
    if (stage) {
      const util::MutableByteSpan staged(stage, piece.size());
      ungroup_planes(std::span<const util::ByteSpan>(part.data(), width), staged, width, mode);
      fold(staged, at);
      sum.update(staged);
      util::copy_streaming(piece.data(), staged.data(), staged.size());
    } else {
      ungroup_planes(std::span<const util::ByteSpan>(part.data(), width), piece, width, mode);
      fold(piece, at);
      sum.update(piece);
    }
    if (written) hooks->written(at + n * width);
  }
  const util::MutableByteSpan tail = out.subspan(m * width);
  if (!tail.empty()) {
    std::memcpy(tail.data(), plane(width - 1, m, tail.size()).data(), tail.size());
    fold(tail, m * width);
    sum.update(tail);
  }
  if (written) hooks->written(out.size());
}

}  // namespace

ChunkEncoder::ChunkEncoder(int level) : m_level(level), m_zstd(level) {}

ChunkEncoder::CodedPlane ChunkEncoder::encode_plane(util::ByteSpan plane, const Histogram& hist,
                                                   const ChunkKind& kind, unsigned log2_block, double split_bytes,
                                                   std::span<const Histogram> block_hists) {
  const std::size_t n = plane.size();
  std::size_t best = n;
  CodedPlane coded{PlaneCodec::stored, plane};
  if (n == 0) return coded;
  util::grow_populated(m_scratch, n);
  util::MutableByteSpan scratch(m_scratch.data(), n);

  const double bits = order0_bits(hist);
  const double bits_per_byte = bits / static_cast<double>(n);

  // rANS: worth a pass (here and at every decode) only when the order-0
  // bound promises at least 1% (near-uniform mantissa planes do not).
  if (log2_block != 0 && split_bytes + 64.0 < 0.99 * static_cast<double>(n)) {
    if (auto size = rans_blocks::encode(plane, log2_block, scratch.first(best - 1), block_hists)) {
      best = *size;
      coded = {PlaneCodec::rans0_blocks, scratch.first(best)};
    }
  } else if (bits / 8.0 + 64.0 < 0.99 * static_cast<double>(n)) {
    // Two bytes a symbol where the plane has few values (an exponent plane):
    // the decoder's cost is per symbol. Levels 10 and up keep it only where
    // it codes smaller than one symbol a byte (below).
    // (The pair encoder itself refuses, before any pass, planes under 64 KiB
    // or with too many values: rans_pairs::worth_trying.)
    const bool pairs = kind.is_tensor && kind.is_float;
    if (pairs && m_level < 10) {
      const double bar = (1.0 + k_pairs_slack) * (bits / 8.0 + 64.0);
      const auto size = m_pairs.encode(plane, hist, scratch.first(best - 1), bar);
      if (size && static_cast<double>(*size) <= bar) {
        best = *size;
        coded = {PlaneCodec::rans_pairs, scratch.first(best)};
      }
    }
    // Asked for speed, where pairs refuse the plane as it is (an fp16 high
    // byte): its high bits in pairs, its low bits as they are.
    if (pairs && m_level <= k_huff_max_level && coded.codec == PlaneCodec::stored) {
      const double bar = (1.0 + k_split_slack) * (bits / 8.0 + 64.0);
      const auto size = m_split.encode(plane, hist, scratch.first(best - 1), bar);
      if (size && static_cast<double>(*size) <= bar) {
        best = *size;
        coded = {PlaneCodec::rans_split, scratch.first(best)};
      }
    }
    // Asked for speed, where pairs did not take the plane (under 64 KiB, or
    // too many values): Huffman where a table lookup gives several codes
    // (few bits a byte) and its whole-bit lengths cost little over rANS. (Its
    // encoder wants room for the worst case of each slice: a small plane
    // may not fit where rANS does.)
    if (coded.codec == PlaneCodec::stored && m_level <= k_huff_max_level && kind.is_tensor && kind.is_float &&
        n >= k_huff_min_plane && bits_per_byte <= k_huff_max_bits) {
      const auto lengths = huff::code_lengths(hist);
      if (static_cast<double>(huff::coded_size(hist, lengths)) <= (1.0 + k_huff_slack) * (bits / 8.0 + 64.0)) {
        if (auto size = huff::encode(plane, hist, scratch.first(best - 1), &lengths)) {
          best = *size;
          coded = {PlaneCodec::huff0, scratch.first(best)};
        }
      }
    }
    if (coded.codec == PlaneCodec::stored) {
      if (auto size = rans::encode(plane, hist, scratch.first(best - 1))) {
        best = *size;
        coded = {PlaneCodec::rans0, scratch.first(best)};
      }
    }
    if (pairs && m_level >= 10 && best > 1) {
      util::grow_populated(m_alt, best - 1);
      // (Not coded at all where the pairs' order-0 estimate is clearly over.)
      if (auto size = m_pairs.encode(plane, hist, util::MutableByteSpan(m_alt.data(), best - 1),
                                     1.002 * static_cast<double>(best))) {
        best = *size;
        coded = {PlaneCodec::rans_pairs, util::ByteSpan(m_alt.data(), best)};
      }
    }
    if (pairs && m_level >= 10 && best > 1 && coded.codec != PlaneCodec::rans_pairs) {
      util::grow_populated(m_alt, best - 1);
      if (auto size = m_split.encode(plane, hist, util::MutableByteSpan(m_alt.data(), best - 1),
                                     static_cast<double>(best))) {
        if (*size < best) {
          best = *size;
          coded = {PlaneCodec::rans_split, util::ByteSpan(m_alt.data(), best)};
        }
      }
    }
  }
  // zstd: for bytes that are not tensors, for integer tensors (runs, repeated
  // patterns), for near-constant planes where matches beat order-0, and
  // everywhere at high levels.
  const bool try_zstd = !kind.is_tensor || !kind.is_float || m_level >= 10 || bits_per_byte < 1.0;
  if (try_zstd && best > 1) {
    util::grow_populated(m_coded, best - 1);
    if (auto size = m_zstd.compress(plane, util::MutableByteSpan(m_coded.data(), best - 1)))
      coded = {PlaneCodec::zstd, util::ByteSpan(m_coded.data(), *size)};
  }
  return coded;
}

namespace {

// Calls `read` from `at` until it has read `to` bytes or more; returns where it got.
std::size_t read_until(const ChunkEncoder::Reader& read, std::size_t at, std::size_t to) {
  while (at < to) {
    const std::size_t next = read(at);
    if (next <= at) throw Error(Errc::internal, "chunk encoder: reader did not advance");
    at = next;
  }
  return at;
}

}  // namespace

EncodedChunk ChunkEncoder::encode_grouped(util::ByteSpan input, const ChunkKind& kind, unsigned width,
                                          GroupMode mode, const Reader* read, bool apart) {
  EncodedChunk out;
  out.layout = Layout::planes;
  out.width = static_cast<std::uint8_t>(width);
  out.group_mode = static_cast<std::uint8_t>(mode);

  // The planes are grouped straight into the payload after the directory,
  // where a stored plane stays (no copy) as long as every plane before it
  // is stored too: the coded planes of floats are their last ones (the
  // exponent's byte), so the mantissa planes are written once.
  const std::size_t dir_size = 1 + 5 * width;
  util::grow_populated(m_payload, dir_size + input.size());
  std::byte* const payload = m_payload.data();
  const util::MutableByteSpan grouped(payload + dir_size, input.size());
  if (read) {
    // A piece at a time, each right after `read` took it (still in cache).
    const std::size_t m = input.size() / width;
    std::size_t at = 0;
    std::size_t done = 0;  // elements grouped
    while (at < input.size()) {
      at = read_until(*read, at, at + 1);
      const std::size_t upto = std::min(at / width, m);
      group_elements(input.subspan(done * width, (upto - done) * width), grouped, done, m, width, mode);
      done = upto;
    }
    if (input.size() > m * width)
      std::memcpy(grouped.data() + m * width, input.data() + m * width, input.size() - m * width);
  } else {
    group_bytes(input, grouped, width, mode);
  }
  std::memset(payload, 0, dir_size);
  payload[0] = static_cast<std::byte>(width);
  const PlaneGeometry g{input.size() / width, input.size() % width};
  std::size_t src = dir_size;  // where plane k was grouped
  std::size_t dst = dir_size;  // where its coding goes (dst <= src)
  for (unsigned k = 0; k < width; ++k) {
    const std::size_t len = g.plane_size(k, width);
    const util::ByteSpan plane(payload + src, len);
    CodedPlane coded{PlaneCodec::stored, plane};
    if (kind.is_tensor && kind.is_float && m_level < 10 && m_sample_bpb[k] >= 8.0 * (1.0 - k_min_saving)) {
      // The sample (estimate_sampled) says near-uniform, a low mantissa
      // plane: coding would save less than 1% and cost a pass here and at
      // every decode, so store it without even a histogram (memcpy speed).
    } else if (len >= 2 * (std::size_t{1} << rans_blocks::k_min_log2_block)) {
      // One pass over the plane, in 64 KiB pieces: also says whether tables
      // per block would pay.
      const rans_blocks::Split split = rans_blocks::choose(plane);
      coded = encode_plane(plane, split.whole, kind, split.log2_block, split.estimate_bytes, split.blocks);
    } else {
      // A small chunk's planes were counted whole when its grouping was
      // chosen (encode()): not again.
      if (m_sample_exact)
        m_hist = m_sample_hists[k];
      else
        histogram(plane, m_hist);
      coded = encode_plane(plane, m_hist, kind);
    }
    // A coding never overlaps the planes after this one: dst <= src and it
    // is no longer than the plane (memmove: a stored plane may move down).
    // The last plane's coding (a float's exponents) may instead stay where
    // it was coded, as the payload's tail.
    const bool tail = apart && k + 1 == width && !coded.bytes.empty() && coded.bytes.data() != payload + src;
    if (tail)
      out.tail = coded.bytes;
    else if (!coded.bytes.empty() && coded.bytes.data() != payload + dst)
      std::memmove(payload + dst, coded.bytes.data(), coded.bytes.size());
    payload[1 + 5 * k] = static_cast<std::byte>(coded.codec);
    util::store_le<std::uint32_t>(payload + 2 + 5 * k, static_cast<std::uint32_t>(coded.bytes.size()));
    src += len;
    if (!tail) dst += coded.bytes.size();
  }
  out.payload = util::ByteSpan(payload, dst);
  return out;
}

EncodedChunk ChunkEncoder::encode(util::ByteSpan raw, const ChunkKind& kind, util::ByteSpan base,
                                  const Reader* read, bool apart) {
  if (raw.size() > container::k_max_chunk_size) throw Error(Errc::internal, "chunk larger than 2 GiB");
  const unsigned width = kind.width;

  // Candidates: residual (none, or xor/sub against the base) x grouping mode.
  struct Candidate {
    Residual residual;
    GroupMode mode;
    double cost;
  };
  Candidate best{Residual::none, GroupMode::plain, 0};
  bool have_best = false;
  util::ByteSpan best_input = raw;

  int n_candidates = 0;
  const bool try_rotl1 = kind.is_float && width > 1;
  // counted: the input's exact histograms in `mode`, when already counted.
  auto consider = [&](util::ByteSpan input, Residual residual, GroupMode mode,
                      const std::array<Histogram, 8>* counted = nullptr) {
    // A lone candidate needs no estimate.
    const bool alone = n_candidates == 0 && base.empty() && !try_rotl1;
    PlaneBits bpb{};
    bool exact = false;
    const double cost = alone ? 0.0 : estimate_sampled(input, width, mode, bpb, m_candidate_hists, exact, counted);
    ++n_candidates;
    if (!have_best || cost < best.cost) {
      best = {residual, mode, cost};
      m_sample_bpb = bpb;
      m_sample_exact = exact;
      if (exact) std::copy_n(m_candidate_hists.begin(), width, m_sample_hists.begin());
      best_input = input;
      have_best = true;
    }
  };
  // A float input in both grouping modes, its bytes (a small one) or its
  // sample's counted once for the two (detail::both_modes_histograms: on a
  // bf16 checkpoint, 4 MiB chunks, compression 1-2% faster than counting
  // the sample once a mode).
  auto consider_modes = [&](util::ByteSpan input, Residual residual) {
    if (!try_rotl1) return consider(input, residual, GroupMode::plain);
    if (input.size() <= k_exact_estimate)
      detail::both_modes_histograms(input, width, m_mode_hists[0], m_mode_hists[1]);
    else
      detail::both_modes_histograms(sample_slices(input), width, m_mode_hists[0], m_mode_hists[1]);
    consider(input, residual, GroupMode::plain, &m_mode_hists[0]);
    consider(input, residual, GroupMode::rotl1, &m_mode_hists[1]);
  };

  consider_modes(raw, Residual::none);

  util::ByteVector sub_buf;
  if (!base.empty()) {
    if (base.size() != raw.size()) throw Error(Errc::internal, "base chunk size mismatch");
    util::grow_populated(m_residual, raw.size());
    util::MutableByteSpan xr(m_residual.data(), raw.size());
    xor_residual(raw, base, xr);
    consider_modes(xr, Residual::xor_);
    if (width > 1) {
      sub_buf.resize(raw.size());
      sub_residual(raw, base, sub_buf, width);
      consider(sub_buf, Residual::sub, GroupMode::plain);
    }
  }

  if (raw.empty()) return EncodedChunk{};
  // The reader takes each piece as it is grouped when the chunk itself is
  // (not a residual, which was read whole already), else all of it first.
  const bool read_while_grouping = read && best.residual == Residual::none;
  if (read && !read_while_grouping) read_until(*read, 0, raw.size());
  EncodedChunk e =
      encode_grouped(best_input, kind, width, best.mode, read_while_grouping ? read : nullptr, apart);
  e.residual = best.residual;
  if (e.size() >= raw.size() && best.residual == Residual::none) {
    // Nothing pays: store the chunk raw.
    EncodedChunk r;
    r.layout = Layout::raw;
    r.payload = raw;
    return r;
  }
  return e;
}

void ChunkDecoder::check_payload(util::ByteSpan payload, const container::ChunkRecord& rec, std::string_view what) {
  auto fail = [&](const std::string& why) { throw Error(Errc::corrupt, fmt::format("{}: {}", what, why)); };
  if (rec.raw_size > container::k_max_chunk_size) fail("raw size too large");
  if (rec.layout == Layout::raw) {
    if (payload.size() != rec.raw_size) fail("raw chunk has the wrong stored size");
    return;
  }
  const unsigned width = rec.width;
  const std::size_t dir_size = 1 + 5 * width;
  if (payload.size() < dir_size || static_cast<unsigned>(payload[0]) != width) fail("bad plane directory");
  const PlaneGeometry g{rec.raw_size / width, rec.raw_size % width};
  std::size_t src = dir_size;
  for (unsigned k = 0; k < width; ++k) {
    const auto codec = static_cast<PlaneCodec>(payload[1 + 5 * k]);
    const std::uint64_t size = util::load_le<std::uint32_t>(payload.data() + 2 + 5 * k);
    const std::uint64_t len = g.plane_size(k, width);
    if (size > payload.size() - src) fail(fmt::format("plane {} runs past the payload", k));
    const util::ByteSpan in = payload.subspan(src, static_cast<std::size_t>(size));
    switch (codec) {
      case PlaneCodec::stored:
        if (size != len) fail(fmt::format("stored plane {} has the wrong size", k));
        break;
      case PlaneCodec::zstd: {
        // A zstd block holds at most 128 KiB and costs at least 4 bytes.
        if (len > (size / 4 + 1) * (std::uint64_t{128} << 10)) fail(fmt::format("zstd plane {} cannot hold {} bytes", k, len));
        if (ZSTD_getFrameContentSize(in.data(), in.size()) != len) fail(fmt::format("zstd plane {}: wrong content size", k));
        break;
      }
      case PlaneCodec::rans0:
      case PlaneCodec::rans0_blocks:  // rANS codes any size from a few bytes: only emptiness is impossible
      case PlaneCodec::huff0:         // so does Huffman (a constant block is 2 bytes)
      case PlaneCodec::rans_pairs:    // and pairs (27 bytes and up)
      case PlaneCodec::rans_split:    // and a split (a pair block and more)
        if (size == 0) fail(fmt::format("plane {}: empty rANS or Huffman block", k));
        break;
      default: fail(fmt::format("plane {}: unknown codec {}", k, static_cast<unsigned>(codec)));
    }
    src += static_cast<std::size_t>(size);
  }
  if (src != payload.size()) fail("payload has trailing bytes");
}

namespace {

// An entropy-coded plane decoded whole, straight into out.
void decode_whole(PlaneCodec codec, util::ByteSpan in, util::MutableByteSpan out) {
  switch (codec) {
    case PlaneCodec::rans0: return rans::decode(in, out);
    case PlaneCodec::rans0_blocks: return rans_blocks::decode(in, out);
    case PlaneCodec::huff0: return huff::decode(in, out);
    case PlaneCodec::rans_pairs: return rans_pairs::decode(in, out);
    case PlaneCodec::rans_split: return rans_split::decode(in, out);
    default: throw Error(Errc::internal, "decode_whole: not an entropy coder");
  }
}

}  // namespace

void ChunkDecoder::PieceDecoders::reserve(unsigned planes) {
  if (rans.size() < planes) rans.resize(planes);
  if (blocks.size() < planes) blocks.resize(planes);
  if (huff.size() < planes) huff.resize(planes);
  if (pairs.size() < planes) pairs.resize(planes);
  if (split.size() < planes) split.resize(planes);
}

void ChunkDecoder::PieceDecoders::start(PlaneCodec codec, unsigned k, util::ByteSpan in, std::size_t len) {
  switch (codec) {
    case PlaneCodec::rans0: return rans[k].start(in, len);
    case PlaneCodec::rans0_blocks: return blocks[k].start(in, len);
    case PlaneCodec::huff0: return huff[k].start(in, len);
    case PlaneCodec::rans_pairs: return pairs[k].start(in, len);
    case PlaneCodec::rans_split: return split[k].start(in, len);
    default: throw Error(Errc::internal, "PieceDecoders: not an entropy coder");
  }
}

void ChunkDecoder::PieceDecoders::next(PlaneCodec codec, unsigned k, util::MutableByteSpan out) {
  switch (codec) {
    case PlaneCodec::rans0: return rans[k].next(out);
    case PlaneCodec::rans0_blocks: return blocks[k].next(out);
    case PlaneCodec::huff0: return huff[k].next(out);
    case PlaneCodec::rans_pairs: return pairs[k].next(out);
    case PlaneCodec::rans_split: return split[k].next(out);
    default: throw Error(Errc::internal, "PieceDecoders: not an entropy coder");
  }
}

void ChunkDecoder::PieceDecoders::finish(PlaneCodec codec, unsigned k) {
  switch (codec) {
    case PlaneCodec::rans0: return rans[k].finish();
    case PlaneCodec::rans0_blocks: return blocks[k].finish();
    case PlaneCodec::huff0: return huff[k].finish();
    case PlaneCodec::rans_pairs: return pairs[k].finish();
    case PlaneCodec::rans_split: return split[k].finish();
    default: throw Error(Errc::internal, "PieceDecoders: not an entropy coder");
  }
}

bool ChunkDecoder::cold_output_pays(util::MutableByteSpan out) noexcept {
  return out.size() >= k_prepare_piece && util::mapped_and_resident(out.data(), out.size());
}

void ChunkDecoder::decode(util::ByteSpan payload, const container::ChunkRecord& rec, util::MutableByteSpan out,
                          util::ByteSpan base, std::string_view what, const Hooks* hooks) {
  auto fail = [&](const std::string& why) { throw Error(Errc::corrupt, fmt::format("{}: {}", what, why)); };
  if (out.size() != rec.raw_size) throw Error(Errc::internal, "decode: output size mismatch");
  if (rec.residual != Residual::none && base.size() != out.size()) fail("residual chunk without its base bytes");
  const bool cold = hooks && hooks->cold_output && !hooks->prepare && !hooks->written;

  if (rec.layout == Layout::raw) {
    if (payload.size() != rec.raw_size) fail("raw chunk has the wrong stored size");
    if (rec.residual != Residual::none) fail("raw chunk with a residual");
    if (cold) {
      // The stored bytes are the chunk's bytes: checked before they are
      // streamed out, so out is never read back.
      if (util::xxh3_64(payload) != rec.raw_xxh3) fail("checksum mismatch (data is corrupt)");
      util::copy_streaming(out.data(), payload.data(), out.size());
      util::stream_fence();
      return;
    }
    if (hooks && hooks->prepare) hooks->prepare(out);
    if (!out.empty()) std::memcpy(out.data(), payload.data(), out.size());
  } else {
    const unsigned width = rec.width;
    const std::size_t dir_size = 1 + 5 * width;
    if (payload.size() < dir_size || static_cast<unsigned>(payload[0]) != width) fail("bad plane directory");
    const PlaneGeometry g{rec.raw_size / width, rec.raw_size % width};
    const bool direct = width == 1 && rec.residual == Residual::none;
    // Anything but a direct chunk is ungrouped a piece at a time (below),
    // and its rANS planes are decoded a piece at a time too, into a buffer
    // that stays in L1, instead of whole into m_grouped and read back from
    // L2 or memory (measured on an Intel Xeon, one thread, 4 MiB chunks into
    // a reused buffer: fp32 AdamW state decoded 1.12-1.18x as fast with
    // 1 MiB chunks, whose planes stay in L2, which this gets without smaller
    // chunks). Only zstd planes are decoded whole, into m_grouped.
    if (direct && hooks && hooks->prepare) hooks->prepare(out);
    std::array<util::ByteSpan, 8> planes{};  // stored and zstd planes, whole
    std::array<PlaneCodec, 8> piecewise{};   // the entropy coders' planes: a piece at a time
    if (!direct) {
      m_coders.reserve(width);
    }
    // Runs f, naming plane k in a corrupt data error from it.
    auto in_plane = [&](unsigned k, auto&& f) {
      try {
        f();
      } catch (const Error& e) {
        if (e.code() != Errc::corrupt) throw;
        fail(fmt::format("plane {}: {}", k, e.what()));
      }
    };
    std::size_t src = dir_size;
    std::size_t dst = 0;  // where plane k lies in the grouped chunk
    for (unsigned k = 0; k < width; ++k) {
      const auto codec = static_cast<PlaneCodec>(payload[1 + 5 * k]);
      const auto size = util::load_le<std::uint32_t>(payload.data() + 2 + 5 * k);
      const std::size_t len = g.plane_size(k, width);
      if (size > payload.size() - src) fail(fmt::format("plane {} runs past the payload", k));
      const util::ByteSpan in = payload.subspan(src, size);
      in_plane(k, [&] {
        switch (codec) {
          case PlaneCodec::stored:
            if (size != len) fail(fmt::format("stored plane {} has the wrong size", k));
            if (direct) {
              if (len) std::memcpy(out.data(), in.data(), len);
            } else {
              planes[k] = in;  // read in place
            }
            break;
          case PlaneCodec::zstd:
            if (direct) {
              m_zstd.decompress(in, out);
            } else {
              if (m_grouped.size() < out.size()) m_grouped.resize(out.size());
              const util::MutableByteSpan plane(m_grouped.data() + dst, len);
              m_zstd.decompress(in, plane);
              planes[k] = plane;
            }
            break;
          case PlaneCodec::rans0:
          case PlaneCodec::rans0_blocks:
          case PlaneCodec::huff0:
          case PlaneCodec::rans_pairs:
          case PlaneCodec::rans_split:
            if (direct) {
              decode_whole(codec, in, out);
            } else {
              m_coders.start(codec, k, in, len);
              piecewise[k] = codec;
            }
            break;
          default: fail(fmt::format("plane {}: unknown codec {}", k, static_cast<unsigned>(codec)));
        }
      });
      src += size;
      dst += len;
    }
    if (src != payload.size()) fail("payload has trailing bytes");
    if (!direct) {
      // Each piecewise plane's next bytes go to its own part of m_pieces.
      const std::size_t room = k_hash_piece / width + 8;  // a piece's bytes of one plane, or the tail
      if (m_pieces.size() < width * room) m_pieces.resize(width * room);
      // Staged for elements of 2 bytes or more: measured (one thread,
      // Intel AVX-512, 4 MiB chunks into a reused buffer) fp32 AdamW state
      // +24-30%, fp32 weights +6-27%, and later bf16 +8-13% and fp16
      // +9-11% (bench_pipeline; +6-10% through Python's decompress(out=)),
      // level under MITHRIL_ISA=avx2 (+0-3%). (A first measurement of the
      // 2-byte case had it 4-10% slower; it did not repeat.)
      std::byte* stage = nullptr;
      if (cold && width >= 2) {
        if (m_stage.size() < k_staged_piece) m_stage.resize(k_staged_piece);
        stage = m_stage.data();
      }
      // The first coded plane's decoding of a piece is cut in parts, and
      // before each the same part of the next piece's stored (and zstd)
      // planes is prefetched: those are then in cache when the next piece is
      // ungrouped, instead of read from memory in one burst of misses, while
      // the decoder's arithmetic hides the memory's latency. Measured (AMD
      // Zen 4, one thread, bench_pipeline): decompression 4-10% faster for
      // fp16, bf16, fp32 and AdamW state, into a reused buffer or new memory,
      // and under MITHRIL_ISA=avx2; the whole piece prefetched at once gained
      // half of that (the prefetches queued behind each other), and fp32 lost
      // with prefetcht0 (util::prefetch). Unless staged, the same part of the
      // next piece's output is prefetched too: the ungrouping's stores then
      // find their lines in L2 instead of each waiting on memory for its
      // line. The parts are eighths where the output is staged (not
      // fetched); with the output, eighths made bursts of ~100 lines that
      // stalled on the core's miss buffers (util::prefetch 17% of a bf16
      // profile), so there 32 parts keep each burst to ~25 (32 parts in the
      // staged case: 0-5% slower on AdamW state and MiniLM under
      // MITHRIL_ISA=avx2). Measured against neither (Intel Xeon
      // with AMX, one thread, bench_pipeline, medians of 3, two alternations):
      // into a reused buffer with the whole-file digest 12-16% faster on
      // bf16, fp16, fp32, AdamW state and MiniLM (10-15% under
      // MITHRIL_ISA=avx2, MiniLM 1-10%), two threads 9-16%, into new memory
      // 2-16%; staged (no digest) level. 64 parts were level with 32, 128
      // (64-element parts) 2.6x slower on fp32; prefetchw slower than this
      // read hint (docs/benchmarks.md, session 50).
      // The plane cut in parts: the first coded one, or none (width) where
      // nothing is to be fetched.
      const std::span<const PlaneCodec> codecs(piecewise.data(), width);
      const auto first_coded = std::ranges::find_if(codecs, [](PlaneCodec c) { return c != PlaneCodec::stored; });
      const bool fetch_planes = std::ranges::find(codecs, PlaneCodec::stored) != codecs.end();
      const auto fetching = fetch_planes || !stage ? static_cast<unsigned>(first_coded - codecs.begin()) : width;
      auto plane = [&](unsigned k, std::size_t e, std::size_t n) -> util::ByteSpan {
        if (piecewise[k] == PlaneCodec::stored) return planes[k].subspan(e, n);
        const util::MutableByteSpan buf(m_pieces.data() + k * room, n);
        in_plane(k, [&] {
          if (k != fetching) return m_coders.next(piecewise[k], k, buf);
          const std::size_t parts = stage ? 8 : 32;
          const std::size_t part = std::max<std::size_t>(64, (n / parts + 63) / 64 * 64);
          for (std::size_t a = 0; a < n; a += part) {
            const std::size_t len = std::min(part, n - a);
            for (unsigned s = 0; s < width; ++s) {
              if (piecewise[s] != PlaneCodec::stored) continue;
              const std::size_t from = std::min(e + n + a, planes[s].size());
              util::prefetch(planes[s].data() + from, std::min(len, planes[s].size() - from));
            }
            if (!stage) {
              const std::size_t from = std::min((e + n + a) * width, out.size());
              util::prefetch(out.data() + from, std::min(len * width, out.size() - from));
            }
            m_coders.next(piecewise[k], k, buf.subspan(a, len));
          }
        });
        return buf;
      };
      m_checksum.reset();
      ungroup_and_hash(plane, out, width, static_cast<GroupMode>(rec.group_mode), rec.residual, base, m_checksum,
                       hooks, stage);
      if (stage) util::stream_fence();
      for (unsigned k = 0; k < width; ++k)
        if (piecewise[k] != PlaneCodec::stored) in_plane(k, [&] { m_coders.finish(piecewise[k], k); });
      if (m_checksum.digest() != rec.raw_xxh3) fail("checksum mismatch (data is corrupt)");
      return;
    }
  }
  if (hooks && hooks->written) hooks->written(out.size());
  if (util::xxh3_64(out) != rec.raw_xxh3) fail("checksum mismatch (data is corrupt)");
}

}  // namespace mithril::codec
