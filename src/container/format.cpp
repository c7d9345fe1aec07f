#include "container/format.hpp"

#include <cstring>
#include <unordered_map>

#include <fmt/format.h>
#include <simdjson.h>

#include "mithril/error.hpp"
#include "util/json_text.hpp"

namespace mithril::container {
namespace {

using util::load_le;
using util::store_le;

[[noreturn]] void corrupt(std::string_view file, const std::string& what) {
  throw Error(Errc::corrupt, fmt::format("{}: {}", file, what));
}

// Reading the index's JSON (simdjson's DOM: the index is parsed on every
// open, decompress and tensor lookup, ~10 times faster than a DOM of
// nlohmann::json; prepare_index() below writes it). Every accessor checks the
// JSON type; integers are JSON integers only, non-negative and in range (as
// util/json_number.hpp for nlohmann::json).
using JsonElement = simdjson::dom::element;
using JsonObject = simdjson::dom::object;
using JsonType = simdjson::dom::element_type;

std::optional<JsonElement> member(const JsonObject& o, std::string_view key) {
  JsonElement e;
  if (o.at_key(key).get(e) != simdjson::SUCCESS) return std::nullopt;
  return e;
}

std::optional<std::uint64_t> as_u64(const JsonElement& e) {
  if (e.type() != JsonType::INT64 && e.type() != JsonType::UINT64) return std::nullopt;
  std::uint64_t v = 0;
  if (e.get_uint64().get(v) != simdjson::SUCCESS) return std::nullopt;  // negative
  return v;
}

// The member `key` of `o` as a non-negative integer, or nothing.
std::optional<std::uint64_t> u64_member(const JsonObject& o, std::string_view key) {
  const auto e = member(o, key);
  return e ? as_u64(*e) : std::nullopt;
}

std::optional<JsonObject> as_object(const JsonElement& e) {
  JsonObject o;
  if (e.get_object().get(o) != simdjson::SUCCESS) return std::nullopt;
  return o;
}

// The string member `key` of `o`; `fallback` when it is missing.
std::string string_member(const JsonObject& o, std::string_view key, std::string_view fallback,
                          std::string_view file, std::string_view what) {
  const auto e = member(o, key);
  if (!e) return std::string(fallback);
  std::string_view v;
  if (e->get_string().get(v) != simdjson::SUCCESS)
    corrupt(file, fmt::format("index: '{}{}' is not a string", what, key));
  return std::string(v);
}

// The member `key` of `o`, an object; nothing when it is missing (or null,
// where `null_ok`).
std::optional<JsonObject> object_member(const JsonObject& o, std::string_view key, std::string_view file,
                                        bool null_ok = false) {
  const auto e = member(o, key);
  if (!e || (null_ok && e->is_null())) return std::nullopt;
  const auto object = as_object(*e);
  if (!object) corrupt(file, fmt::format("index: '{}' is not an object", key));
  return object;
}

SourceIdentity identity_from_json(const JsonObject& o, std::string_view file, std::string_view what) {
  SourceIdentity id;
  const std::string prefix = fmt::format("{}.", what);
  id.name = string_member(o, "name", "", file, prefix);
  const auto size = u64_member(o, "size");
  if (!size) corrupt(file, fmt::format("index: '{}.size' missing or not an unsigned integer", what));
  id.size = *size;
  const auto hex = string_member(o, "blake3", "", file, prefix);
  if (!util::parse_hex_digest(hex, id.blake3))
    corrupt(file, fmt::format("index: '{}.blake3' is not a 64-digit hex digest", what));
  return id;
}

std::uint64_t get_u64(const JsonObject& j, std::string_view key, std::string_view file, std::size_t seg) {
  const auto v = u64_member(j, key);
  if (!v) corrupt(file, fmt::format("index: segment {}: '{}' missing or not an unsigned integer", seg, key));
  return *v;
}

}  // namespace

std::uint16_t minor_version_for(const Index& index) {
  for (const auto& r : index.chunks)
    if (r.shared()) return k_minor_shared_chunks;
  return k_minor;
}

std::array<std::byte, k_header_size> encode_header(std::uint16_t minor) {
  std::array<std::byte, k_header_size> h{};
  std::memcpy(h.data(), k_magic.data(), 8);
  store_le<std::uint16_t>(h.data() + 8, k_major);
  store_le<std::uint16_t>(h.data() + 10, minor);
  store_le<std::uint32_t>(h.data() + 12, 0);
  return h;
}

void check_header(util::ByteSpan header, std::string_view file) {
  if (header.size() < k_header_size || std::memcmp(header.data(), k_magic.data(), 8) != 0)
    corrupt(file, "not a Mithril .mcp file (wrong magic)");
  const auto major = load_le<std::uint16_t>(header.data() + 8);
  const auto minor = load_le<std::uint16_t>(header.data() + 10);
  if (major != k_major)
    throw Error(Errc::unsupported,
                fmt::format("{}: .mcp format version {}.{} is not supported by this mithril (reads {}.x); "
                            "upgrade mithril",
                            file, major, minor, k_major));
}

std::array<std::byte, k_footer_size> encode_footer(const Footer& f) {
  std::array<std::byte, k_footer_size> b{};
  store_le(b.data() + 0, f.index_offset);
  store_le(b.data() + 8, f.index_stored_size);
  store_le(b.data() + 16, f.index_raw_size);
  store_le(b.data() + 24, f.index_xxh3);
  store_le(b.data() + 32, f.major);
  store_le(b.data() + 34, f.minor);
  b[36] = static_cast<std::byte>(f.index_codec);
  std::memcpy(b.data() + 40, k_end_magic.data(), 8);
  return b;
}

Footer decode_footer(util::ByteSpan b, std::string_view file) {
  if (b.size() != k_footer_size || std::memcmp(b.data() + 40, k_end_magic.data(), 8) != 0)
    corrupt(file, "no .mcp footer at the end of the file (truncated, or not an .mcp file)");
  Footer f;
  f.index_offset = load_le<std::uint64_t>(b.data() + 0);
  f.index_stored_size = load_le<std::uint64_t>(b.data() + 8);
  f.index_raw_size = load_le<std::uint64_t>(b.data() + 16);
  f.index_xxh3 = load_le<std::uint64_t>(b.data() + 24);
  f.major = load_le<std::uint16_t>(b.data() + 32);
  f.minor = load_le<std::uint16_t>(b.data() + 34);
  const auto codec = static_cast<std::uint8_t>(b[36]);
  if (f.major != k_major)
    throw Error(Errc::unsupported,
                fmt::format("{}: .mcp format version {}.{} is not supported by this mithril (reads {}.x); "
                            "upgrade mithril",
                            file, f.major, f.minor, k_major));
  if (codec > 1) corrupt(file, fmt::format("footer: unknown index codec {}", codec));
  f.index_codec = static_cast<IndexCodec>(codec);
  f.reserved = static_cast<std::uint32_t>(b[37]) | static_cast<std::uint32_t>(b[38]) << 8 |
               static_cast<std::uint32_t>(b[39]) << 16;
  return f;
}

namespace {

// The index's JSON is written by hand, keys in sorted order (the text
// nlohmann::json::dump() of the same object gave, byte for byte), every
// string checked as UTF-8 first.
class IndexJson {
 public:
  explicit IndexJson(const Index& index) : m_index(index) {}

  void key(std::string_view k) {
    comma();
    util::append_json_string(m_out, k);
    m_out += ':';
  }
  void comma() {
    if (!m_first) m_out += ',';
    m_first = false;
  }
  // A string the index records exactly (a tensor's name, metadata).
  void exact(std::string_view what, std::string_view v) {
    if (!util::valid_utf8(v))
      throw Error(Errc::invalid_argument,
                  fmt::format("{}: {} is not valid UTF-8", m_index.source.name, what));
    util::append_json_string(m_out, v);
  }
  void number(std::uint64_t v) { util::append_json_number(m_out, v); }
  void open(char c) {
    m_out += c;
    m_first = true;
  }
  void close(char c) {
    m_out += c;
    m_first = false;
  }
  // A file's identity; its name is for people (any bytes on Linux), invalid
  // UTF-8 shown as U+FFFD. Returns where the digest's hex digits start.
  std::size_t identity(const SourceIdentity& id, const std::string* kind) {
    open('{');
    key("blake3");
    const std::size_t at = m_out.size() + 1;
    util::append_json_string(m_out, util::to_hex(id.blake3));
    if (kind) {
      key("kind");
      exact("the source kind", *kind);
    }
    key("name");
    util::append_json_string(m_out, util::utf8_or_replacement(id.name));
    key("size");
    number(id.size);
    close('}');
    return at;
  }
  std::string& text() { return m_out; }

 private:
  const Index& m_index;
  std::string m_out;
  bool m_first = true;
};

}  // namespace

PreparedIndex prepare_index(const Index& index) {
  IndexJson w(index);
  w.text().reserve(256 + index.segments.size() * 160);
  w.open('{');
  if (index.base) {
    w.key("base");
    w.identity(*index.base, nullptr);
  }
  w.key("chunk_count");
  w.number(index.chunks.size());
  w.key("created_by");
  w.exact("created_by", index.created_by);
  w.key("format");
  w.text() += R"("mcp")";
  w.key("metadata");
  w.open('{');
  for (const auto& [k, v] : index.metadata) {
    w.comma();
    w.exact(fmt::format("metadata key {:?}", k), k);
    w.text() += ':';
    w.exact(fmt::format("metadata {:?}", k), v);
  }
  w.close('}');
  w.key("segments");
  w.open('[');
  for (std::size_t i = 0; i < index.segments.size(); ++i) {
    const auto& seg = index.segments[i];
    w.comma();
    w.open('{');
    if (seg.base_offset) {
      w.key("base_offset");
      w.number(*seg.base_offset);
    }
    w.key("chunks");
    w.text() += '[';
    w.number(seg.first_chunk);
    w.text() += ',';
    w.number(seg.chunk_count);
    w.text() += ']';
    const bool tensor = seg.kind == SegmentKind::tensor;
    if (tensor) {
      w.key("dtype");
      w.exact(fmt::format("segment {}'s dtype", i), seg.dtype);
    }
    w.key("kind");
    w.text() += tensor ? R"("tensor")" : R"("raw")";
    if (tensor) {
      w.key("name");
      w.exact(fmt::format("segment {}'s name", i), seg.name);
    }
    w.key("offset");
    w.number(seg.offset);
    if (tensor) {
      w.key("shape");
      w.text() += '[';
      for (std::size_t d = 0; d < seg.shape.size(); ++d) {
        if (d) w.text() += ',';
        w.number(seg.shape[d]);
      }
      w.text() += ']';
    }
    w.key("size");
    w.number(seg.size);
    w.close('}');
  }
  w.close(']');
  w.key("source");
  SourceIdentity source = index.source;
  source.blake3 = {};  // zeros: filled in by encode_index
  const std::size_t at = w.identity(source, &index.source_kind);
  w.close('}');
  PreparedIndex p;
  p.json = std::move(w.text());
  p.blake3_at = at;
  p.chunks = index.chunks.size();
  return p;
}

std::size_t encoded_index_size(const PreparedIndex& prepared) {
  return 4 + prepared.json.size() + prepared.chunks * k_chunk_record_size;
}

util::ByteVector encode_index(const Index& index, const PreparedIndex& prepared) {
  if (index.chunks.size() != prepared.chunks)
    throw Error(Errc::internal, "index: chunk count changed after the index was prepared");
  const std::string digest = util::to_hex(index.source.blake3);
  util::ByteVector out;
  out.reserve(encoded_index_size(prepared));
  util::append_le<std::uint32_t>(out, static_cast<std::uint32_t>(prepared.json.size()));
  const auto text = util::as_bytes(prepared.json);
  util::append_bytes(out, text.first(prepared.blake3_at));
  util::append_bytes(out, util::as_bytes(digest));
  util::append_bytes(out, text.subspan(prepared.blake3_at + digest.size()));
  for (const auto& c : index.chunks) {
    util::append_le(out, c.file_offset);
    util::append_le(out, c.source_offset);
    util::append_le(out, c.raw_size);
    util::append_le(out, c.stored_size);
    util::append_le(out, c.raw_xxh3);
    util::append_le(out, c.segment);
    util::append_le(out, static_cast<std::uint8_t>(c.layout));
    util::append_le(out, c.width);
    util::append_le(out, c.group_mode);
    util::append_le(out, static_cast<std::uint8_t>(c.residual));
    util::append_le<std::uint64_t>(out, 0);
  }
  if (out.size() != encoded_index_size(prepared)) throw Error(Errc::internal, "index: size mismatch");
  return out;
}

util::ByteVector encode_index(const Index& index) { return encode_index(index, prepare_index(index)); }

Index decode_index(util::ByteSpan raw, std::uint64_t index_offset, std::string_view file) {
  if (raw.size() < 4) corrupt(file, "index: too short");
  const std::uint32_t json_size = load_le<std::uint32_t>(raw.data());
  if (json_size > raw.size() - 4) corrupt(file, "index: JSON size exceeds the index");
  simdjson::dom::parser parser;
  JsonElement doc;
  if (const auto err = parser.parse(util::as_chars(raw.subspan(4, json_size))).get(doc); err != simdjson::SUCCESS)
    corrupt(file, fmt::format("index: invalid JSON: {}", simdjson::error_message(err)));
  const auto j = as_object(doc);
  std::string_view format;
  if (const auto f = j ? member(*j, "format") : std::nullopt;
      !f || f->get_string().get(format) != simdjson::SUCCESS || format != "mcp")
    corrupt(file, "index: not an .mcp index");

  Index index;
  const auto source = object_member(*j, "source", file);
  if (!source) corrupt(file, "index: 'source' missing");
  index.source = identity_from_json(*source, file, "source");
  index.source_kind = string_member(*source, "kind", "raw", file, "source.");
  if (const auto base = object_member(*j, "base", file, /*null_ok=*/true))
    index.base = identity_from_json(*base, file, "base");
  if (const auto metadata = object_member(*j, "metadata", file)) {
    for (const auto [k, v] : *metadata) {
      std::string_view text;
      if (v.get_string().get(text) != simdjson::SUCCESS)
        corrupt(file, fmt::format("index: metadata '{}' is not a string", k));
      index.metadata[std::string(k)] = std::string(text);
    }
  }
  index.created_by = string_member(*j, "created_by", "", file, "");
  const auto counted = u64_member(*j, "chunk_count");
  if (!counted) corrupt(file, "index: 'chunk_count' missing");
  const std::uint64_t chunk_count = *counted;
  const std::uint64_t records_bytes = raw.size() - 4 - json_size;
  if (chunk_count > records_bytes / k_chunk_record_size ||
      chunk_count * k_chunk_record_size != records_bytes)
    corrupt(file, fmt::format("index: {} chunk records announced, {} bytes present", chunk_count, records_bytes));

  simdjson::dom::array segments;
  if (const auto e = member(*j, "segments"); !e || e->get_array().get(segments) != simdjson::SUCCESS)
    corrupt(file, "index: 'segments' missing");
  std::uint64_t expect_offset = 0;
  std::uint64_t expect_chunk = 0;
  index.segments.reserve(segments.size());
  // Shared chunks: the first and the last segment inside each.
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, std::uint32_t>> shared_by;
  std::size_t i = 0;
  for (const JsonElement e : segments) {
    const auto js = as_object(e);
    if (!js) corrupt(file, fmt::format("index: segment {} is not an object", i));
    Segment s;
    const auto kind = string_member(*js, "kind", "", file, fmt::format("segment {}: ", i));
    if (kind == "tensor") s.kind = SegmentKind::tensor;
    else if (kind == "raw") s.kind = SegmentKind::raw;
    else corrupt(file, fmt::format("index: segment {}: unknown kind '{}'", i, kind));
    s.offset = get_u64(*js, "offset", file, i);
    s.size = get_u64(*js, "size", file, i);
    simdjson::dom::array ch;
    std::optional<std::uint64_t> first;
    std::optional<std::uint64_t> count;
    if (const auto c = member(*js, "chunks"); c && c->get_array().get(ch) == simdjson::SUCCESS && ch.size() == 2) {
      first = as_u64(ch.at(0).value_unsafe());
      count = as_u64(ch.at(1).value_unsafe());
    }
    if (!first || !count) corrupt(file, fmt::format("index: segment {}: 'chunks' is not [first, count]", i));
    if (s.offset != expect_offset || s.size > index.source.size - s.offset)
      corrupt(file, fmt::format("index: segment {} does not continue the source at offset {}", i, expect_offset));
    // A segment owns the chunks that tile it, or, for a safetensors source,
    // lies inside one chunk it shares with the segments before and after it
    // (small tensors coded together): then it lists that one chunk, as they
    // do, and all of them are tensors.
    const bool joins = *first + 1 == expect_chunk && *count == 1 && index.source_kind == "safetensors" &&
                       s.kind == SegmentKind::tensor && !index.segments.empty() &&
                       index.segments.back().kind == SegmentKind::tensor && index.segments.back().chunk_count == 1 &&
                       index.segments.back().first_chunk == *first;
    if (!joins && (*first != expect_chunk || *count > chunk_count - *first))
      corrupt(file, fmt::format("index: segment {}: chunk range [{}, +{}) out of order", i, *first, *count));
    if (joins) {
      auto& [from, to] = shared_by.try_emplace(*first, static_cast<std::uint32_t>(i - 1), 0).first->second;
      to = static_cast<std::uint32_t>(i);
    }
    s.first_chunk = static_cast<std::uint32_t>(*first);
    s.chunk_count = static_cast<std::uint32_t>(*count);
    if (s.kind == SegmentKind::tensor) {
      const std::string where = fmt::format("segment {}: ", i);
      s.name = string_member(*js, "name", "", file, where);
      s.dtype = string_member(*js, "dtype", "", file, where);
      if (const auto shape = member(*js, "shape")) {
        simdjson::dom::array dims;
        if (shape->get_array().get(dims) != simdjson::SUCCESS) corrupt(file, fmt::format("index: segment {}: bad shape", i));
        for (const JsonElement d : dims) {
          const auto v = as_u64(d);
          if (!v) corrupt(file, fmt::format("index: segment {}: bad shape", i));
          s.shape.push_back(*v);
        }
      }
    }
    if (member(*js, "base_offset")) s.base_offset = get_u64(*js, "base_offset", file, i);
    expect_offset = s.offset + s.size;
    expect_chunk = *first + *count;
    index.segments.push_back(std::move(s));
    ++i;
  }
  if (expect_offset != index.source.size)
    corrupt(file, fmt::format("index: segments cover {} of {} source bytes", expect_offset, index.source.size));
  if (expect_chunk != chunk_count)
    corrupt(file, fmt::format("index: segments reference {} of {} chunks", expect_chunk, chunk_count));

  // Chunk records.
  const std::byte* p = raw.data() + 4 + json_size;
  index.chunks.resize(chunk_count);
  std::uint64_t expect_file_offset = k_header_size;
  for (std::size_t c = 0; c < chunk_count; ++c, p += k_chunk_record_size) {
    ChunkRecord& r = index.chunks[c];
    r.file_offset = load_le<std::uint64_t>(p + 0);
    r.source_offset = load_le<std::uint64_t>(p + 8);
    r.raw_size = load_le<std::uint32_t>(p + 16);
    r.stored_size = load_le<std::uint32_t>(p + 20);
    r.raw_xxh3 = load_le<std::uint64_t>(p + 24);
    r.segment = load_le<std::uint32_t>(p + 32);
    const auto layout = static_cast<std::uint8_t>(p[36]);
    r.width = static_cast<std::uint8_t>(p[37]);
    r.group_mode = static_cast<std::uint8_t>(p[38]);
    const auto residual = static_cast<std::uint8_t>(p[39]);
    if (layout > 1) corrupt(file, fmt::format("index: chunk {}: unknown layout {}", c, layout));
    if (residual > 2) corrupt(file, fmt::format("index: chunk {}: unknown residual kind {}", c, residual));
    if (r.width != 1 && r.width != 2 && r.width != 4 && r.width != 8)
      corrupt(file, fmt::format("index: chunk {}: invalid width {}", c, r.width));
    if (r.group_mode > 1) corrupt(file, fmt::format("index: chunk {}: unknown group mode {}", c, r.group_mode));
    r.layout = static_cast<Layout>(layout);
    r.residual = static_cast<Residual>(residual);
    if (r.raw_size > k_max_chunk_size) corrupt(file, fmt::format("index: chunk {}: raw size too large", c));
    if (r.file_offset != expect_file_offset || r.stored_size > index_offset - r.file_offset)
      corrupt(file, fmt::format("index: chunk {}: payload at {} (+{}) is out of place", c, r.file_offset,
                                r.stored_size));
    expect_file_offset = r.file_offset + r.stored_size;
    if (r.segment >= index.segments.size())
      corrupt(file, fmt::format("index: chunk {}: segment {} does not exist", c, r.segment));
    const Segment& s = index.segments[r.segment];
    if (c < s.first_chunk || c >= std::uint64_t{s.first_chunk} + s.chunk_count)
      corrupt(file, fmt::format("index: chunk {}: not in its segment's chunk range", c));
    r.last_segment = r.segment;
    if (const auto shared = shared_by.find(c); shared != shared_by.end()) {
      if (r.segment != shared->second.first)
        corrupt(file, fmt::format("index: chunk {}: shared by segments {} to {} but names segment {}", c,
                                  shared->second.first, shared->second.second, r.segment));
      r.last_segment = shared->second.second;
      if (r.residual != Residual::none) corrupt(file, fmt::format("index: chunk {}: shared chunk with a residual", c));
      const Segment& last = index.segments[r.last_segment];
      if (r.source_offset != s.offset || r.source_offset + r.raw_size != last.offset + last.size)
        corrupt(file, fmt::format("index: chunk {}: does not hold exactly segments {} to {}", c, r.segment,
                                  r.last_segment));
    }
    if (r.residual != Residual::none && !(index.base && s.base_offset))
      corrupt(file, fmt::format("index: chunk {}: residual chunk without a base", c));
  }
  if (expect_file_offset != index_offset)
    corrupt(file, "index: chunk payloads do not end where the index begins");
  // Within a segment, chunks tile it in order.
  for (const auto& s : index.segments) {
    if (s.chunk_count == 1 && index.chunks[s.first_chunk].shared()) continue;  // checked above
    std::uint64_t off = s.offset;
    for (std::uint32_t c = s.first_chunk; c < s.first_chunk + s.chunk_count; ++c) {
      const auto& r = index.chunks[c];
      if (r.source_offset != off) corrupt(file, fmt::format("index: chunk {}: source offset out of order", c));
      off += r.raw_size;
    }
    if (off != s.offset + s.size) corrupt(file, fmt::format("index: chunks of segment at {} do not cover it", s.offset));
  }
  return index;
}

std::uint64_t stored_bytes(const Index& index, const Segment& s) {
  std::uint64_t stored = 0;
  for (std::uint32_t c = s.first_chunk; c < s.first_chunk + s.chunk_count; ++c) {
    const auto& r = index.chunks[c];
    if (!r.shared() || r.raw_size == 0) {
      stored += r.stored_size;
      continue;
    }
    // Both products stay below 2^62 (sizes below 2^31).
    const std::uint64_t lo = s.offset - r.source_offset, hi = lo + s.size;
    stored += std::uint64_t{r.stored_size} * hi / r.raw_size - std::uint64_t{r.stored_size} * lo / r.raw_size;
  }
  return stored;
}

std::string describe_chunk(const Index& index, std::size_t chunk) {
  if (chunk >= index.chunks.size()) return fmt::format("chunk {}", chunk);
  const auto& r = index.chunks[chunk];
  const auto& s = index.segments[r.segment];
  if (s.kind == SegmentKind::tensor && r.shared())
    return fmt::format("chunk {} (tensors '{}' to '{}', source offset {})", chunk, s.name,
                       index.segments[r.last_segment].name, r.source_offset);
  if (s.kind == SegmentKind::tensor)
    return fmt::format("chunk {} (tensor '{}', source offset {})", chunk, s.name, r.source_offset);
  return fmt::format("chunk {} (non-tensor bytes, source offset {})", chunk, r.source_offset);
}

}  // namespace mithril::container
