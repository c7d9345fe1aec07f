// container/format.hpp — the .mcp container, version 1 (docs/format.md).
//
//   file    := header chunk* index footer
//   header  := magic:8 major:u16 minor:u16 flags:u32                  (16 B)
//   index   := stored bytes of index_raw (codec per footer)
//   index_raw := json_size:u32 json chunk_record{chunk_count}
//   chunk_record := file_offset:u64 source_offset:u64 raw_size:u32
//                   stored_size:u32 raw_xxh3:u64 segment:u32 layout:u8
//                   width:u8 group_mode:u8 residual:u8 reserved:u64   (48 B)
//   footer  := index_offset:u64 index_stored_size:u64 index_raw_size:u64
//              index_xxh3:u64 major:u16 minor:u16 index_codec:u8
//              reserved:3 end_magic:8                                 (48 B)
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/blake3.hpp"
#include "util/bytes.hpp"

namespace mithril::container {

inline constexpr std::array<std::uint8_t, 8> k_magic{0x89, 'M', 'C', 'P', '\r', '\n', 0x1a, '\n'};
inline constexpr std::array<std::uint8_t, 8> k_end_magic{'M', 'C', 'P', 'I', 'D', 'X', 0x00, 0x01};
inline constexpr std::uint16_t k_major = 1;
inline constexpr std::uint16_t k_minor = 0;
// Version 1.1 adds shared chunks (ChunkRecord::last_segment): a writer marks
// a file that has any 1.1; a 1.0 file that has one is damaged.
inline constexpr std::uint16_t k_minor_shared_chunks = 1;
// The minor version a file with this index is written as.
std::uint16_t minor_version_for(const struct Index& index);
inline constexpr std::size_t k_header_size = 16;
inline constexpr std::size_t k_footer_size = 48;
inline constexpr std::size_t k_chunk_record_size = 48;
inline constexpr std::uint32_t k_max_chunk_size = 1u << 31;
// Limits on the decoded index a footer may declare (reader.cpp).
inline constexpr std::uint64_t k_max_index_raw_size = std::uint64_t{1} << 30;
inline constexpr std::uint64_t k_max_index_ratio = 1024;

enum class Layout : std::uint8_t { raw = 0, planes = 1 };
enum class Residual : std::uint8_t { none = 0, xor_ = 1, sub = 2 };
enum class IndexCodec : std::uint8_t { stored = 0, zstd = 1 };

struct ChunkRecord {
  std::uint64_t file_offset = 0;
  std::uint64_t source_offset = 0;
  std::uint32_t raw_size = 0;
  std::uint32_t stored_size = 0;
  std::uint64_t raw_xxh3 = 0;
  std::uint32_t segment = 0;
  Layout layout = Layout::raw;
  std::uint8_t width = 1;
  std::uint8_t group_mode = 0;
  Residual residual = Residual::none;
  // Not stored: the last segment whose bytes this chunk holds. Equal to
  // `segment` except for a chunk that holds several whole small tensors of
  // a safetensors source, coded together (format 1.0 files written since
  // session 41; docs/format.md "Shared chunks"): their segments, `segment`
  // to `last_segment`, each list this one chunk.
  std::uint32_t last_segment = 0;

  bool shared() const noexcept { return last_segment != segment; }
};

enum class SegmentKind { raw, tensor };

struct Segment {
  SegmentKind kind = SegmentKind::raw;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  std::uint32_t first_chunk = 0;
  std::uint32_t chunk_count = 0;
  // tensor segments
  std::string name;
  std::string dtype;
  std::vector<std::uint64_t> shape;
  std::optional<std::uint64_t> base_offset;  // delta: matching bytes in the base
};

struct SourceIdentity {
  std::string name;
  std::uint64_t size = 0;
  util::Digest blake3{};
};

struct Index {
  SourceIdentity source;
  std::string source_kind = "raw";  // "safetensors", "torch", "raw"
  std::optional<SourceIdentity> base;
  std::map<std::string, std::string> metadata;
  std::vector<Segment> segments;
  std::vector<ChunkRecord> chunks;
  std::string created_by;
};

struct Footer {
  std::uint64_t index_offset = 0;
  std::uint64_t index_stored_size = 0;
  std::uint64_t index_raw_size = 0;
  std::uint64_t index_xxh3 = 0;
  std::uint16_t major = k_major;
  std::uint16_t minor = k_minor;
  IndexCodec index_codec = IndexCodec::zstd;
  std::uint32_t reserved = 0;  // the 3 reserved bytes, read back for checking
};

std::array<std::byte, k_header_size> encode_header(std::uint16_t minor = k_minor);
// Throws Error(corrupt) for a wrong magic, Error(unsupported) for an unknown
// major version. `file` names the file in messages.
void check_header(util::ByteSpan header, std::string_view file);

std::array<std::byte, k_footer_size> encode_footer(const Footer& f);
Footer decode_footer(util::ByteSpan footer, std::string_view file);

// Serializes the index (JSON + chunk records), uncompressed.
util::ByteVector encode_index(const Index& index);

// The index's JSON with the source's BLAKE3 as zeros. Everything else in it
// is known once the chunks are planned, so a writer makes it before the
// coding and the finished container's serial tail only fills in the digest
// and the chunk records. Written by hand, keys sorted: the text
// nlohmann::json::dump() gives for the same object (building that object took
// 0.22 ms for a 102-tensor bf16 file, 0.9% of its compression on 2 threads;
// the whole start of that compression, this included, now takes 0.06 ms).
// Names of files (source, base) are for people: invalid UTF-8 in
// them is written as U+FFFD. Any other string that is not valid UTF-8 (a
// tensor's name, metadata) is Error(invalid_argument).
struct PreparedIndex {
  std::string json;
  std::size_t blake3_at = 0;  // where the source's 64 hex digits start in json
  std::size_t chunks = 0;
};
PreparedIndex prepare_index(const Index& index);
// encode_index(index)'s bytes from `prepared`, made from the same index
// before its source BLAKE3 and chunk records were known (Error(internal)
// when the chunk count differs).
util::ByteVector encode_index(const Index& index, const PreparedIndex& prepared);
// The size encode_index() gives (the digest's length never varies).
std::size_t encoded_index_size(const PreparedIndex& prepared);
// Parses and validates an index against the container it came from:
// segments cover the source exactly, chunk ranges and records are consistent,
// payloads lie in [k_header_size, index_offset) in order without gaps.
Index decode_index(util::ByteSpan raw, std::uint64_t index_offset, std::string_view file);

// The stored bytes of segment `s`: its chunks' stored sizes, a shared
// chunk's split among its segments by their raw sizes (the parts add up to
// the chunk's stored size exactly).
std::uint64_t stored_bytes(const Index& index, const Segment& s);

// "chunk 12 (tensor 'model.w', source offset 4096)" — for error messages.
std::string describe_chunk(const Index& index, std::size_t chunk);

}  // namespace mithril::container
