// codec/chunk_codec.hpp — encodes one chunk's bytes into an .mcp payload and
// back (docs/format.md, "Chunk payload" and "Transforms").
//
// The encoder decides everything from the chunk's own bytes (determinism):
// plain vs rotl1 grouping for floats from plane histograms, then per plane the
// smallest of stored / rANS / zstd (a float exponent plane two bytes a rANS
// symbol where that is about as small), then raw layout if nothing pays.
//
// Thread-safety: one ChunkEncoder / ChunkDecoder per thread (they own scratch
// buffers and zstd contexts).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "util/xxh3.hpp"
#include "codec/byte_group.hpp"
#include "codec/huff.hpp"
#include "codec/rans.hpp"
#include "codec/rans_blocks.hpp"
#include "codec/rans_pairs.hpp"
#include "codec/rans_split.hpp"
#include "codec/zstd_codec.hpp"
#include "container/format.hpp"
#include "util/bytes.hpp"

namespace mithril::codec {

// rans0_blocks: several rANS blocks, one table each (rans_blocks.hpp);
// huff0: a static Huffman block decoded several symbols a lookup (huff.hpp);
// rans_pairs: two bytes per rANS symbol (rans_pairs.hpp);
// rans_split: the bytes' high bits in pairs, their low bits as they are
// (rans_split.hpp).
enum class PlaneCodec : std::uint8_t {
  stored = 0, zstd = 1, rans0 = 2, rans0_blocks = 3, huff0 = 4, rans_pairs = 5, rans_split = 6
};

// A float tensor's plane that rans_pairs::worth_trying() takes (an exponent
// plane) is coded in pairs at every level where that comes within
// k_pairs_slack of the plane's order-0 bound (plus 64 bytes) — about where
// one symbol a byte lands; levels 10 and up code it both ways and keep the
// smaller.
inline constexpr double k_pairs_slack = 0.004;

// A float tensor's plane that pairs refuse as it is but take once its low
// bits are split off (rans_split::low_bits_for: an fp16 high byte) is coded
// so, for half the rANS symbols, at levels 1-2 (asked for speed) where that
// comes within k_split_slack of the plane's order-0 bound (plus 64 bytes);
// levels 10 and up keep it only where it is smaller. The bound is the whole
// byte's and the split stores its low bits as they are: on the high bytes of
// fp16 weights (a GPT's, near normal, and MiniLM's cast to fp16) the three
// mantissa bits are not uniform given the exponent, and the split lands
// 1.3-1.5% over the bound (where one symbol a byte lands ~0.06% over it): a
// GPT's weights cast to fp16 decoded ~1.2x as fast for 0.6% of the file
// (bench_pipeline, one thread, AMD Zen 4; docs/benchmarks.md, session 43).
// Levels 3-9 do not try it: with a bar of 0.5% it failed on every such
// plane, after the pair passes, and cost fp16 compression 16%.
inline constexpr double k_split_slack = 0.02;

// Levels at or below this one trade a little ratio for decoding speed: a
// float tensor's planes of at least k_huff_min_plane bytes and at most
// k_huff_max_bits bits a byte (exponents, several codes to a table lookup)
// are coded with huff0 where that is within k_huff_slack of the rANS
// estimate (docs/format.md, "Chunk payload").
inline constexpr int k_huff_max_level = 2;
inline constexpr double k_huff_max_bits = 4.0;
inline constexpr double k_huff_slack = 0.03;
// Smaller planes stay rANS: building the decoder's 2048-entry tables costs
// more than decoding a few KiB, and the block's header (~40 bytes) shows.
inline constexpr std::size_t k_huff_min_plane = 16 * 1024;

// How the chunk's bytes should be seen.
struct ChunkKind {
  unsigned width = 1;     // element size in bytes: 1, 2, 4 or 8
  bool is_float = false;  // IEEE-like: try rotl1 grouping
  bool is_tensor = false; // tensor data (entropy coder first) vs other bytes (zstd first)
};

struct EncodedChunk {
  container::Layout layout = container::Layout::raw;
  std::uint8_t width = 1;
  std::uint8_t group_mode = 0;
  container::Residual residual = container::Residual::none;
  util::ByteSpan payload;  // valid until the next encode() on this encoder
  // The payload's last bytes, left where the encoder coded them when
  // encode() was asked to (`apart`): the stored payload is payload + tail.
  util::ByteSpan tail;
  std::size_t size() const { return payload.size() + tail.size(); }
};

class ChunkEncoder {
 public:
  // level: 1..19 (zstd-like). Higher levels try zstd on more planes.
  explicit ChunkEncoder(int level);

  // Reads raw's bytes from `at` on (a caller checksums them) and returns how
  // far it read, > at; called in order until it returns raw.size().
  using Reader = std::function<std::size_t(std::size_t at)>;

  // REQUIRES: raw.size() <= container::k_max_chunk_size. If `base` is not
  // empty (same size as raw) the encoder may code a residual against it.
  // `read`, if given, is called over all of raw: each piece just before the
  // encoder groups it, so that the piece comes from memory once for both.
  // With `apart`, the coding of the last plane may stay in the encoder's
  // buffer as `tail` (one copy less for a writer that can take two pieces).
  EncodedChunk encode(util::ByteSpan raw, const ChunkKind& kind, util::ByteSpan base = {},
                      const Reader* read = nullptr, bool apart = false);

  int level() const noexcept { return m_level; }
  // Bytes held in the encoder's buffers (they only grow), not counting zstd's
  // context.
  std::size_t buffer_bytes() const noexcept {
    return m_residual.capacity() + m_payload.capacity() + m_scratch.capacity() + m_coded.capacity() +
           m_alt.capacity() + m_pairs.buffer_bytes();
  }

 private:
  // The best coding of one plane: its codec, size and bytes (in m_scratch or
  // m_coded, or the plane itself when stored), valid until the next call.
  // log2_block != 0: code it as rANS blocks of that size (rans_blocks::choose),
  // whose estimated size is split_bytes and whose blocks' histograms, when
  // given, are block_hists (Split::blocks: the plane is not counted again).
  struct CodedPlane {
    PlaneCodec codec;
    util::ByteSpan bytes;
  };
  CodedPlane encode_plane(util::ByteSpan plane, const Histogram& hist, const ChunkKind& kind,
                          unsigned log2_block = 0, double split_bytes = 0,
                          std::span<const Histogram> block_hists = {});
  EncodedChunk encode_grouped(util::ByteSpan raw, const ChunkKind& kind, unsigned width, GroupMode mode,
                              const Reader* read, bool apart);

  int m_level;
  ZstdCompressor m_zstd;
  Histogram m_hist{};
  // Order-0 bits per byte of each plane of the chosen candidate, measured on
  // a sample by encode() (0 = unknown).
  std::array<double, 8> m_sample_bpb{};
  // Each plane's histogram of the chosen candidate when encode() counted it
  // whole (small chunks), else m_sample_exact is false; and a candidate's.
  std::array<Histogram, 8> m_sample_hists{};
  std::array<Histogram, 8> m_candidate_hists{};
  // A small float input's plane histograms in plain and rotl1 mode, counted
  // in one pass for its two candidates.
  std::array<std::array<Histogram, 8>, 2> m_mode_hists{};
  bool m_sample_exact = false;
  util::ByteVector m_residual;
  // The payload being built: the chunk is grouped straight into it, after
  // the plane directory, so that stored planes are already in place; it only
  // grows (its size is a capacity, the payload's length is kept apart).
  util::ByteVector m_payload;
  util::ByteVector m_scratch;  // a plane's rANS coding
  util::ByteVector m_coded;    // a plane's zstd coding
  util::ByteVector m_alt;      // levels >= 10: a plane's coding in pairs, beside its rANS coding
  rans_pairs::Encoder m_pairs;
  rans_split::Encoder m_split;
};

class ChunkDecoder {
 public:
  ChunkDecoder() = default;

  // Optional hooks around decode()'s writes into out, which go front to back.
  struct Hooks {
    // Called with each piece of out (k_prepare_piece bytes where the chunk
    // is ungrouped in pieces, else all of out at once) just before it is
    // first written, so that a caller can map fresh pages while they will
    // still be in cache when written (util::FreshMemory::prefault).
    std::function<void(util::MutableByteSpan piece)> prepare;
    // Says that out[0, n) is written (a piece at a time where the chunk is
    // ungrouped in pieces, else once at the end), so a caller can hash each
    // piece while it is in cache. The chunk's XXH3 is checked only after the
    // last call: a later throw means the bytes reported were wrong.
    std::function<void(std::size_t n)> written;
    // out is final memory that is mapped and not in cache (old contents
    // being overwritten, util::mapped_and_resident): a raw chunk is checked
    // and then streamed to out, a grouped one of 2-, 4- or 8-byte elements is
    // ungrouped through a small buffer that stays in L1, checksummed there,
    // and copied to out, with non-temporal stores (util/cold_memory.hpp).
    // Ignored with `prepare` or `written`, which mean fresh pages or a later
    // read of out.
    bool cold_output = false;
  };
  static constexpr std::size_t k_prepare_piece = 256 * 1024;

  // Whether Hooks::cold_output pays for a chunk decoded into `out`, memory
  // that held something before the call: at least 256 KiB, every page mapped
  // and resident (a page the write would fault in is zeroed into the cache
  // first, and then ordinary stores win). One mincore call.
  static bool cold_output_pays(util::MutableByteSpan out) noexcept;

  // Decodes `payload` described by `record` into out (out.size() ==
  // record.raw_size) and checks the chunk's XXH3. `base` holds the base bytes
  // for residual chunks. Throws Error(corrupt) with `what` (e.g. "chunk 3
  // (tensor 'w', ...)") in the message.
  void decode(util::ByteSpan payload, const container::ChunkRecord& record, util::MutableByteSpan out,
              util::ByteSpan base, std::string_view what, const Hooks* hooks = nullptr);

  // Checks, before a buffer of record.raw_size bytes is reserved for it, that
  // `payload` can decode to that size by the format's own limits: raw and
  // stored planes hold exactly their bytes, zstd planes declare their plane's
  // size and can expand at most ~32768:1, the plane directory accounts for
  // every byte. Throws Error(corrupt) like decode(). (An rANS constant block
  // is a legitimate 2 bytes for any size: such a chunk is decoded.)
  static void check_payload(util::ByteSpan payload, const container::ChunkRecord& record, std::string_view what);

 private:
  ZstdDecompressor m_zstd;
  util::ByteVector m_grouped;
  util::ByteVector m_stage;  // cold_output: one piece of out, ungrouped before it is streamed out
  util::ByteVector m_pieces;  // the next piece of each plane decoded a piece at a time
  // The entropy-coded planes' decoders, one per plane and coder, kept from
  // chunk to chunk (their tables' memory is reused); the plane's codec picks
  // one.
  struct PieceDecoders {
    std::vector<rans::PieceDecoder> rans;
    std::vector<rans_blocks::PieceDecoder> blocks;
    std::vector<huff::PieceDecoder> huff;
    std::vector<rans_pairs::PieceDecoder> pairs;
    std::vector<rans_split::PieceDecoder> split;
    void reserve(unsigned planes);
    void start(PlaneCodec codec, unsigned k, util::ByteSpan in, std::size_t len);
    void next(PlaneCodec codec, unsigned k, util::MutableByteSpan out);
    void finish(PlaneCodec codec, unsigned k);
  };
  PieceDecoders m_coders;
  util::Xxh3Stream m_checksum;
};

namespace detail {

// Both grouping modes' exact plane histograms of `in` (width 2, 4 or 8) in
// one pass, as plane_histograms() gives them for plain and for rotl1 (the
// n % width tail bytes counted as they are in the last plane). Byte k of an
// element rotated left by one bit is byte k shifted left by one with the top
// bit of byte k - 1 (of the last byte, for k = 0): each byte counted beside
// its lower neighbour's top bit (512 bins a plane) gives both. A small float
// chunk is estimated in both modes from all its bytes, so this halves its
// counting: a file of 100 bf16 tensors of 64x80 compressed 6% faster on one
// thread (Zen 3, session 40), the same bytes.
void both_modes_histograms(util::ByteSpan in, unsigned width, std::array<Histogram, 8>& plain,
                           std::array<Histogram, 8>& rotl1);
// The same summed over pieces (each one's tail counted as above).
void both_modes_histograms(std::span<const util::ByteSpan> pieces, unsigned width, std::array<Histogram, 8>& plain,
                           std::array<Histogram, 8>& rotl1);

}  // namespace detail

}  // namespace mithril::codec
