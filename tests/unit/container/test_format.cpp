#include "container/format.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mithril/error.hpp"
#include "util/bytes.hpp"
#include "util/json_text.hpp"

using namespace mithril;
using namespace mithril::container;

namespace {

Index sample_index() {
  Index idx;
  idx.source = {"model.safetensors", 300, {}};
  idx.source.blake3.fill(0xab);
  idx.source_kind = "safetensors";
  idx.metadata = {{"step", "100"}};
  idx.created_by = "test";
  Segment header{SegmentKind::raw, 0, 100, 0, 1, "", "", {}, std::nullopt};
  Segment t{SegmentKind::tensor, 100, 200, 1, 2, "w", "BF16", {10, 10}, std::nullopt};
  idx.segments = {header, t};
  std::uint64_t off = k_header_size;
  const std::uint32_t stored[] = {40, 90, 80};
  const std::uint64_t src[] = {0, 100, 200};
  const std::uint32_t raw[] = {100, 100, 100};
  for (int i = 0; i < 3; ++i) {
    ChunkRecord r;
    r.file_offset = off;
    r.source_offset = src[i];
    r.raw_size = raw[i];
    r.stored_size = stored[i];
    r.raw_xxh3 = 1000 + i;
    r.segment = i == 0 ? 0 : 1;
    r.layout = i == 0 ? Layout::raw : Layout::planes;
    r.width = i == 0 ? 1 : 2;
    r.group_mode = i == 2 ? 1 : 0;
    off += stored[i];
    idx.chunks.push_back(r);
  }
  return idx;
}

std::uint64_t payload_end(const Index& idx) {
  return idx.chunks.back().file_offset + idx.chunks.back().stored_size;
}

}  // namespace

TEST(ContainerFormat, IndexRoundTrip) {
  const Index idx = sample_index();
  const auto raw = encode_index(idx);
  const Index back = decode_index(raw, payload_end(idx), "f.mcp");
  EXPECT_EQ(back.source.name, "model.safetensors");
  EXPECT_EQ(back.source.blake3, idx.source.blake3);
  EXPECT_EQ(back.metadata.at("step"), "100");
  ASSERT_EQ(back.segments.size(), 2u);
  EXPECT_EQ(back.segments[1].name, "w");
  EXPECT_EQ(back.segments[1].shape, (std::vector<std::uint64_t>{10, 10}));
  ASSERT_EQ(back.chunks.size(), 3u);
  EXPECT_EQ(back.chunks[2].group_mode, 1);
  EXPECT_EQ(back.chunks[2].raw_xxh3, 1002u);
  EXPECT_EQ(encode_index(back), raw);  // deterministic
}

TEST(ContainerFormat, RejectsSegmentsThatDoNotCoverTheSource) {
  Index idx = sample_index();
  idx.source.size = 301;
  EXPECT_THROW(decode_index(encode_index(idx), payload_end(idx), "f.mcp"), Error);
}

TEST(ContainerFormat, RejectsPayloadsOutOfPlace) {
  Index idx = sample_index();
  idx.chunks[1].file_offset += 1;
  EXPECT_THROW(decode_index(encode_index(idx), payload_end(idx), "f.mcp"), Error);
  Index idx2 = sample_index();
  EXPECT_THROW(decode_index(encode_index(idx2), payload_end(idx2) + 1, "f.mcp"), Error);
}

TEST(ContainerFormat, RejectsBadRecordFields) {
  for (int field = 0; field < 4; ++field) {
    Index idx = sample_index();
    auto raw = encode_index(idx);
    const std::size_t json_size = util::load_le<std::uint32_t>(raw.data());
    std::byte* rec = raw.data() + 4 + json_size + k_chunk_record_size;  // chunk 1
    rec[36 + field] = std::byte{0x7f};  // layout, width, group mode, residual
    EXPECT_THROW(decode_index(raw, payload_end(idx), "f.mcp"), Error) << field;
  }
}

TEST(ContainerFormat, ResidualChunksNeedABase) {
  Index idx = sample_index();
  idx.chunks[1].residual = Residual::xor_;
  EXPECT_THROW(decode_index(encode_index(idx), payload_end(idx), "f.mcp"), Error);
  idx.base = SourceIdentity{"old", 300, {}};
  idx.segments[1].base_offset = 100;
  EXPECT_NO_THROW(decode_index(encode_index(idx), payload_end(idx), "f.mcp"));
}

TEST(ContainerFormat, HeaderAndFooter) {
  const auto h = encode_header();
  EXPECT_NO_THROW(check_header(h, "f"));
  auto bad = h;
  bad[0] = std::byte{0};
  EXPECT_THROW(check_header(bad, "f"), Error);
  auto future = h;
  future[8] = std::byte{2};
  try {
    check_header(future, "f.mcp");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::unsupported);
    EXPECT_NE(std::string(e.what()).find("2.0"), std::string::npos);
  }
  Footer f;
  f.index_offset = 123;
  f.index_stored_size = 45;
  f.index_raw_size = 67;
  f.index_xxh3 = 89;
  const auto fb = encode_footer(f);
  const Footer g = decode_footer(fb, "f");
  EXPECT_EQ(g.index_offset, 123u);
  EXPECT_EQ(g.index_stored_size, 45u);
  EXPECT_EQ(g.index_raw_size, 67u);
  EXPECT_EQ(g.index_xxh3, 89u);
  EXPECT_EQ(g.reserved, 0u);
  auto fbad = fb;
  fbad[47] = std::byte{0};
  EXPECT_THROW(decode_footer(fbad, "f"), Error);
}

TEST(ContainerFormat, MalformedJsonIsCorruptNotCrash) {
  const Index idx = sample_index();
  auto raw = encode_index(idx);
  for (std::size_t i = 4; i < 60; ++i) {
    auto copy = raw;
    copy[i] = std::byte{'}'};
    try {
      decode_index(copy, payload_end(idx), "f.mcp");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::corrupt);
    }
  }
}

// A writer prepares the index's JSON before the coding, when neither the
// source's BLAKE3 nor the chunk records are known (encode.cpp): filled in
// afterwards, it decodes to the finished index, whatever the metadata holds
// (text that looks like the digest's place included) and with a base whose
// digest comes first in the JSON.
TEST(ContainerFormat, PreparedIndexFilledInLaterDecodesToTheFinishedIndex) {
  Index early = sample_index();
  early.source.blake3 = {};
  for (auto& c : early.chunks) c = ChunkRecord{};
  early.metadata = {{"note", R"("source":{"blake3":"00", a "quoted" \ value)"}, {"zz", "\"source\":{\"blake3\":\""}};
  early.base = SourceIdentity{"base.safetensors", 300, {}};
  early.base->blake3.fill(0x5c);
  const PreparedIndex prepared = prepare_index(early);

  Index done = sample_index();
  done.metadata = early.metadata;
  done.base = early.base;
  done.source.blake3.fill(0x3e);
  const auto raw = encode_index(done, prepared);
  EXPECT_EQ(raw.size(), encoded_index_size(prepared));
  EXPECT_EQ(raw, encode_index(done));
  const Index back = decode_index(raw, payload_end(done), "f.mcp");
  EXPECT_EQ(back.source.blake3, done.source.blake3);
  ASSERT_TRUE(back.base.has_value());
  EXPECT_EQ(back.base->blake3, done.base->blake3);
  EXPECT_EQ(back.metadata, done.metadata);
  ASSERT_EQ(back.chunks.size(), 3u);
  EXPECT_EQ(back.chunks[2].raw_xxh3, 1002u);
  EXPECT_EQ(back.chunks[2].stored_size, 80u);

  // Prepared for another chunk count: refused, never a wrong index.
  Index more = done;
  more.chunks.push_back(done.chunks.back());
  EXPECT_THROW(encode_index(more, prepared), Error);
}

namespace {

// sample_index()'s encoded index with its JSON text edited by `edit` (the
// length prefix fixed up, the chunk records kept).
util::ByteVector with_json(const std::function<std::string(std::string)>& edit) {
  const auto raw = encode_index(sample_index());
  const std::size_t n = util::load_le<std::uint32_t>(raw.data());
  std::string text(reinterpret_cast<const char*>(raw.data()) + 4, n);
  text = edit(std::move(text));
  util::ByteVector out;
  util::append_le<std::uint32_t>(out, static_cast<std::uint32_t>(text.size()));
  util::append_bytes(out, util::as_bytes(text));
  util::append_bytes(out, util::ByteSpan(raw).subspan(4 + n));
  return out;
}

// `from` replaced by `to` in the JSON text (exactly once: the test's own check).
util::ByteVector replaced(std::string_view from, std::string_view to) {
  return with_json([&](std::string t) {
    const auto at = t.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    EXPECT_EQ(t.find(from, at + 1), std::string::npos) << from;
    if (at != std::string::npos) t.replace(at, from.size(), to);
    return t;
  });
}

// decode_index's message for `raw`, which must be refused as corrupt.
std::string refusal(const util::ByteVector& raw) {
  try {
    decode_index(raw, payload_end(sample_index()), "f.mcp");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "accepted";
  return {};
}

}  // namespace

TEST(ContainerFormat, IndexJsonOfTheWrongShapeIsRefusedByName) {
  // The edits below apply to what the writer makes.
  const std::string text = [] {
    std::string t;
    with_json([&](std::string s) { return t = s; });
    return t;
  }();
  ASSERT_NE(text.find(R"("size":300)"), std::string::npos) << text;

  const std::vector<std::pair<util::ByteVector, std::string>> cases = {
      {with_json([](std::string) { return std::string("{"); }), "index: invalid JSON"},
      {with_json([](std::string t) { return t + "x"; }), "index: invalid JSON"},
      {with_json([](std::string) { return std::string("[1,2]"); }), "not an .mcp index"},
      {replaced(R"("format":"mcp")", R"("format":"zip")"), "not an .mcp index"},
      {replaced(R"("format":"mcp")", R"("format":7)"), "not an .mcp index"},
      {replaced(R"("format":"mcp",)", ""), "not an .mcp index"},
      {replaced(R"("source":{)", R"("origin":{)"), "'source' missing"},
      {replaced(R"("size":300)", R"("size":300.0)"), "'source.size' missing or not an unsigned integer"},
      {replaced(R"("size":300)", R"("size":3e2)"), "'source.size' missing or not an unsigned integer"},
      {replaced(R"("size":300)", R"("size":-300)"), "'source.size' missing or not an unsigned integer"},
      {replaced(R"("size":300)", R"("size":"300")"), "'source.size' missing or not an unsigned integer"},
      {replaced(R"("name":"model.safetensors")", R"("name":5)"), "'source.name' is not a string"},
      {replaced(R"("kind":"safetensors")", R"("kind":null)"), "'source.kind' is not a string"},
      {replaced(R"("metadata":{"step":"100"})", R"("metadata":["step"])"), "'metadata' is not an object"},
      {replaced(R"("metadata":{"step":"100"})", R"("metadata":{"step":100})"), "metadata 'step' is not a string"},
      {replaced(R"("created_by":"test")", R"("created_by":{})"), "'created_by' is not a string"},
      {replaced(R"("chunk_count":3)", R"("chunk_count":3.5)"), "'chunk_count' missing"},
      {replaced(R"("chunk_count":3)", R"("chunk_count":2)"), "2 chunk records announced"},
      {replaced(R"("segments":[)", R"("segs":[)"), "'segments' missing"},
      {replaced(R"("chunk_count":3)", R"("base":"old","chunk_count":3)"), "'base' is not an object"},
      {replaced(R"("kind":"raw")", R"("kind":"tensr")"), "segment 0: unknown kind 'tensr'"},
      {replaced(R"("chunks":[0,1])", R"("chunks":[0])"), "segment 0: 'chunks' is not [first, count]"},
      {replaced(R"("chunks":[0,1])", R"("chunks":[0,"1"])"), "segment 0: 'chunks' is not [first, count]"},
      {replaced(R"("chunks":[0,1])", R"("chunks":[0,1.0])"), "segment 0: 'chunks' is not [first, count]"},
      {replaced(R"("chunks":[0,1])", R"("chunks":{"0":1})"), "segment 0: 'chunks' is not [first, count]"},
      {replaced(R"("chunks":[1,2])", R"("chunks":[2,1])"), "segment 1: chunk range [2, +1) out of order"},
      {replaced(R"("shape":[10,10])", R"("shape":[10,"10"])"), "segment 1: bad shape"},
      {replaced(R"("shape":[10,10])", R"("shape":10)"), "segment 1: bad shape"},
      {replaced(R"("dtype":"BF16")", R"("dtype":16)"), "segment 1: dtype' is not a string"},
      {replaced(R"("offset":100)", R"("offset":101)"), "segment 1 does not continue the source at offset 100"},
      {replaced(R"("offset":100)", R"("offset":99999999999999999999999)"), "index: invalid JSON"},
  };
  for (const auto& [raw, want] : cases) {
    const std::string got = refusal(raw);
    EXPECT_NE(got.find(want), std::string::npos) << "want '" << want << "' in: " << got;
    EXPECT_EQ(got.rfind("f.mcp: ", 0), 0u) << got;
  }
}

TEST(ContainerFormat, IndexJsonMayLeaveOutOptionalFields) {
  // A null base is no base; missing kind, metadata, created_by, name, dtype,
  // shape take their defaults; members in any order, with spaces.
  auto raw = replaced(R"("chunk_count":3)", R"("base":null,"chunk_count":3)");
  Index back = decode_index(raw, payload_end(sample_index()), "f.mcp");
  EXPECT_FALSE(back.base.has_value());
  raw = with_json([](std::string t) {
    for (std::string_view cut : {R"("kind":"safetensors",)", R"("metadata":{"step":"100"},)", R"("created_by":"test",)",
                                 R"("dtype":"BF16",)", R"("name":"w",)", R"("shape":[10,10],)"}) {
      const auto at = t.find(cut);
      EXPECT_NE(at, std::string::npos) << cut;
      if (at != std::string::npos) t.erase(at, cut.size());
    }
    return " " + t + "\n";
  });
  back = decode_index(raw, payload_end(sample_index()), "f.mcp");
  EXPECT_EQ(back.source_kind, "raw");
  EXPECT_TRUE(back.metadata.empty());
  EXPECT_EQ(back.created_by, "");
  ASSERT_EQ(back.segments.size(), 2u);
  EXPECT_EQ(back.segments[1].name, "");
  EXPECT_EQ(back.segments[1].dtype, "");
  EXPECT_TRUE(back.segments[1].shape.empty());
  EXPECT_EQ(back.source.size, 300u);
  EXPECT_EQ(back.chunks.size(), 3u);
}

namespace {

// What the index's JSON was before it was written by hand: nlohmann::json's
// dump() of the same object (sorted keys). The writer must still give it.
std::string nlohmann_index_json(const Index& index) {
  using json = nlohmann::json;
  const auto identity = [](const SourceIdentity& id) {
    return json{{"name", id.name}, {"size", id.size}, {"blake3", util::to_hex(id.blake3)}};
  };
  json j;
  j["format"] = "mcp";
  SourceIdentity source = index.source;
  source.blake3 = {};
  j["source"] = identity(source);
  j["source"]["kind"] = index.source_kind;
  if (index.base) j["base"] = identity(*index.base);
  j["metadata"] = index.metadata;
  j["chunk_count"] = index.chunks.size();
  j["created_by"] = index.created_by;
  json segs = json::array();
  for (const auto& s : index.segments) {
    json js{{"kind", s.kind == SegmentKind::tensor ? "tensor" : "raw"},
            {"offset", s.offset},
            {"size", s.size},
            {"chunks", {s.first_chunk, s.chunk_count}}};
    if (s.kind == SegmentKind::tensor) {
      js["name"] = s.name;
      js["dtype"] = s.dtype;
      js["shape"] = s.shape;
    }
    if (s.base_offset) js["base_offset"] = *s.base_offset;
    segs.push_back(std::move(js));
  }
  j["segments"] = std::move(segs);
  return j.dump();
}

}  // namespace

TEST(ContainerFormat, IndexJsonIsWhatNlohmannJsonWrites) {
  // Every character class the escaping treats apart, in every kind of string.
  const std::string odd = std::string("q\"b\\s/ c\x01\x1f\b\f\n\r\t del\x7f") + "é中😀" + std::string(1, '\0') + "end";
  std::vector<Index> cases;
  cases.push_back(sample_index());
  Index empty_meta = sample_index();
  empty_meta.metadata.clear();
  empty_meta.segments[1].shape = {};
  cases.push_back(empty_meta);
  Index odd_all = sample_index();
  odd_all.source.name = odd;
  odd_all.source_kind = "torch";
  odd_all.created_by = odd;
  odd_all.metadata = {{odd, odd}, {"", ""}, {"a", "b"}};
  odd_all.segments[1].name = odd;
  odd_all.segments[1].dtype = odd;
  odd_all.segments[1].shape = {0, 1, std::numeric_limits<std::uint64_t>::max()};
  odd_all.segments[1].base_offset = 12345678901234ULL;
  odd_all.base = SourceIdentity{odd, std::numeric_limits<std::uint64_t>::max(), {}};
  odd_all.base->blake3.fill(0x7e);
  cases.push_back(odd_all);
  for (const auto& index : cases) {
    const PreparedIndex p = prepare_index(index);
    EXPECT_EQ(p.json, nlohmann_index_json(index));
    EXPECT_EQ(p.json.substr(p.blake3_at, 64), std::string(64, '0'));
    EXPECT_EQ(p.json.substr(p.blake3_at - 20, 20), R"("source":{"blake3":")");
    // And it reads back.
    Index done = index;
    done.source.blake3.fill(0x42);
    const Index back = decode_index(encode_index(done, p), payload_end(done), "f.mcp");
    EXPECT_EQ(back.source.name, index.source.name);
    EXPECT_EQ(back.source.blake3, done.source.blake3);
    EXPECT_EQ(back.metadata, index.metadata);
    EXPECT_EQ(back.created_by, index.created_by);
    EXPECT_EQ(back.segments[1].name, index.segments[1].name);
    EXPECT_EQ(back.segments[1].shape, index.segments[1].shape);
    EXPECT_EQ(back.segments[1].base_offset, index.segments[1].base_offset);
  }
}

TEST(ContainerFormat, InvalidUtf8InAFileNameIsShownReplacedElsewhereRefused) {
  // A Linux file name is any bytes: the source's and base's names are for
  // people, written with U+FFFD for each byte that is not UTF-8.
  Index index = sample_index();
  index.source.name = "bad\xff\xfe.bin";
  index.base = SourceIdentity{"base\xc3.bin", 300, {}};
  const Index back = decode_index(encode_index(index), payload_end(index), "f.mcp");
  EXPECT_EQ(back.source.name, "bad\xef\xbf\xbd\xef\xbf\xbd.bin");
  EXPECT_EQ(back.base->name, "base\xef\xbf\xbd.bin");
  // A tensor's name or metadata is recorded exactly, or not at all.
  const auto refused = [](const Index& bad, std::string_view what) {
    try {
      prepare_index(bad);
      ADD_FAILURE() << "accepted " << what;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos) << e.what();
    }
  };
  Index bad_tensor = sample_index();
  bad_tensor.segments[1].name = "w\x80";
  refused(bad_tensor, "segment 1's name");
  Index bad_key = sample_index();
  bad_key.metadata = {{"k\xed\xa0\x80", "v"}};  // a UTF-16 surrogate
  refused(bad_key, "metadata key");
  Index bad_value = sample_index();
  bad_value.metadata = {{"step", "\xc0\xaf"}};  // an overlong '/'
  refused(bad_value, "metadata \"step\"");
}

TEST(JsonText, Utf8CheckAndReplacement) {
  EXPECT_TRUE(util::valid_utf8(""));
  EXPECT_TRUE(util::valid_utf8("a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80"));
  EXPECT_EQ(util::invalid_utf8_at("ab\xf5"), 2u);        // past U+10FFFF
  EXPECT_EQ(util::invalid_utf8_at("\xe0\x80\x80"), 0u);  // overlong
  EXPECT_EQ(util::invalid_utf8_at("x\xe4\xb8"), 1u);     // cut short
  EXPECT_EQ(util::utf8_or_replacement("a\xff" "b\xe4\xb8"), "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(util::utf8_or_replacement("ok"), "ok");
  std::string out;
  util::append_json_number(out, 0);
  out += ',';
  util::append_json_number(out, std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(out, "0,18446744073709551615");
}

namespace {

// A safetensors index whose tensors "a", "b" and "c" (segments 1-3, 40 bytes
// each) share chunk 1, and "d" (segment 4) has chunk 2 of its own.
Index shared_index() {
  Index idx;
  idx.source = {"m.safetensors", 200, {}};
  idx.source_kind = "safetensors";
  idx.segments.push_back({SegmentKind::raw, 0, 40, 0, 1, "", "", {}, std::nullopt});
  const char* names[] = {"a", "b", "c"};
  for (std::uint64_t k = 0; k < 3; ++k)
    idx.segments.push_back({SegmentKind::tensor, 40 + 40 * k, 40, 1, 1, names[k], "F32", {10}, std::nullopt});
  idx.segments.push_back({SegmentKind::tensor, 160, 40, 2, 1, "d", "F32", {10}, std::nullopt});
  const std::uint64_t src[] = {0, 40, 160};
  const std::uint32_t raw[] = {40, 120, 40};
  const std::uint32_t seg[] = {0, 1, 4};
  std::uint64_t off = k_header_size;
  for (int i = 0; i < 3; ++i) {
    ChunkRecord r;
    r.file_offset = off;
    r.source_offset = src[i];
    r.raw_size = raw[i];
    r.stored_size = 30;
    r.segment = seg[i];
    r.layout = Layout::raw;
    off += r.stored_size;
    idx.chunks.push_back(r);
  }
  return idx;
}

}  // namespace

TEST(ContainerFormat, SmallTensorsMayShareAChunk) {
  const Index idx = shared_index();
  const Index back = decode_index(encode_index(idx), payload_end(idx), "f.mcp");
  ASSERT_EQ(back.chunks.size(), 3u);
  EXPECT_FALSE(back.chunks[0].shared());
  EXPECT_TRUE(back.chunks[1].shared());
  EXPECT_EQ(back.chunks[1].segment, 1u);
  EXPECT_EQ(back.chunks[1].last_segment, 3u);
  EXPECT_FALSE(back.chunks[2].shared());
  EXPECT_EQ(back.chunks[2].last_segment, 4u);
  for (std::size_t s = 1; s <= 3; ++s) EXPECT_EQ(back.segments[s].first_chunk, 1u);
  // Each tensor's share of the stored bytes; together, the chunk's.
  std::uint64_t sum = 0;
  for (std::size_t s = 1; s <= 3; ++s) sum += stored_bytes(back, back.segments[s]);
  EXPECT_EQ(sum, 30u);
  EXPECT_EQ(stored_bytes(back, back.segments[1]), 10u);
  EXPECT_EQ(stored_bytes(back, back.segments[4]), 30u);
  EXPECT_NE(describe_chunk(back, 1).find("tensors 'a' to 'c'"), std::string::npos) << describe_chunk(back, 1);
}

TEST(ContainerFormat, SharedChunksAreCheckedLikeOthers) {
  const auto refused = [](const Index& idx, std::string_view why) {
    try {
      decode_index(encode_index(idx), payload_end(idx), "f.mcp");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::corrupt);
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
      return;
    }
    ADD_FAILURE() << "accepted; expected: " << why;
  };
  {  // only a safetensors source's tensors share chunks
    Index idx = shared_index();
    idx.source_kind = "torch";
    refused(idx, "out of order");
  }
  {  // a shared chunk does not hold exactly its segments
    Index idx = shared_index();
    idx.chunks[1].raw_size = 119;
    idx.chunks[2].source_offset = 159;
    idx.chunks[2].raw_size = 41;
    refused(idx, "does not hold exactly");
  }
  {  // a shared chunk names a later segment than the first of its own
    Index idx = shared_index();
    idx.chunks[1].segment = 2;
    refused(idx, "names segment 2");
  }
  {  // a shared chunk with a residual: a residual needs one tensor's base bytes
    Index idx = shared_index();
    idx.base = SourceIdentity{"old", 200, {}};
    for (auto& s : idx.segments) s.base_offset = s.offset;
    idx.chunks[1].residual = Residual::xor_;
    refused(idx, "shared chunk with a residual");
  }
  {  // a raw segment does not share
    Index idx = shared_index();
    idx.segments[2].kind = SegmentKind::raw;
    refused(idx, "out of order");
  }
  {  // a segment that would share a chunk with one owning several
    Index idx = shared_index();
    idx.segments[1].chunk_count = 2;
    refused(idx, "out of order");
  }
}
