// tests/fuzz/fuzz_mcp_check.cpp — see fuzz_mcp.hpp.
#include <memory>
#include <vector>

#include "checkpoint/source.hpp"
#include "codec/chunk_codec.hpp"
#include "container/reader.hpp"
#include "fuzz_mcp.hpp"
#include "mithril/error.hpp"

namespace mithril::fuzz {

void exercise_container(util::ByteSpan file, const checkpoint::BaseSource* base) {
  std::unique_ptr<container::Reader> reader;
  try {
    reader = std::make_unique<container::Reader>(std::make_shared<MemorySource>(file, "fuzz.mcp"));
  } catch (const Error& e) {
    check(e.code() == Errc::corrupt || e.code() == Errc::unsupported);
    return;
  }
  const auto& index = reader->index();
  std::uint64_t raw_total = 0;
  for (const auto& c : index.chunks) {
    check(c.file_offset <= file.size() && c.stored_size <= file.size() - c.file_offset);
    check(c.segment < index.segments.size());
    raw_total += c.raw_size;
  }
  check(raw_total == index.source.size);
  for (const auto& s : index.segments)
    check(s.first_chunk <= index.chunks.size() && s.chunk_count <= index.chunks.size() - s.first_chunk);
  // A shared chunk (format 1.1) holds exactly its segments, each listing it
  // alone, and their shares of its stored bytes add up to it.
  for (std::size_t c = 0; c < index.chunks.size(); ++c) {
    const auto& r = index.chunks[c];
    check(r.last_segment >= r.segment && r.last_segment < index.segments.size());
    if (!r.shared()) continue;
    check(reader->footer().minor >= container::k_minor_shared_chunks && index.source_kind == "safetensors");
    std::uint64_t raw = 0, stored = 0;
    for (std::uint32_t s = r.segment; s <= r.last_segment; ++s) {
      const auto& seg = index.segments[s];
      check(seg.first_chunk == c && seg.chunk_count == 1 && seg.kind == container::SegmentKind::tensor);
      raw += seg.size;
      stored += container::stored_bytes(index, seg);
    }
    check(raw == r.raw_size && stored == r.stored_size && index.segments[r.segment].offset == r.source_offset);
  }

  (void)checkpoint::describe_container(*reader, "fuzz.mcp");

  // Chunks arrive from the workers in any order: each once, at its size.
  std::uint64_t total = 0;
  std::vector<bool> seen(index.chunks.size());
  try {
    checkpoint::DecodeTarget target;
    target.consume = [&](std::size_t chunk, util::ByteSpan raw) {
      check(chunk < seen.size() && !seen[chunk] && raw.size() == index.chunks[chunk].raw_size);
      seen[chunk] = true;
      total += raw.size();
    };
    checkpoint::decode_container(*reader, base, 1, target, nullptr);
    check(total == index.source.size);
  } catch (const Error& e) {
    check(e.code() == Errc::corrupt || e.code() == Errc::invalid_argument);
  }

  // The non-temporal output path (ChunkDecoder::Hooks::cold_output, taken
  // for caller memory that is resident) decodes exactly what the ordinary
  // path decodes, and refuses exactly what it refuses.
  codec::ChunkDecoder plain_decoder, cold_decoder;
  codec::ChunkDecoder::Hooks cold;
  cold.cold_output = true;
  util::ByteVector stored, plain_out, cold_out;
  for (std::size_t i = 0; i < index.chunks.size(); ++i) {
    const auto& r = index.chunks[i];
    if (r.residual != container::Residual::none || r.raw_size > (std::uint64_t{16} << 20)) continue;
    bool plain_ok = true, cold_ok = true;
    Errc plain_code{}, cold_code{};
    try {
      const util::ByteSpan payload = reader->payload(i, stored);
      codec::ChunkDecoder::check_payload(payload, r, "fuzz chunk");
      plain_out.assign(r.raw_size, std::byte{0});
      cold_out.assign(r.raw_size, std::byte{0xa5});
      try {
        plain_decoder.decode(payload, r, plain_out, {}, "fuzz chunk");
      } catch (const Error& e) {
        plain_ok = false;
        plain_code = e.code();
      }
      try {
        cold_decoder.decode(payload, r, cold_out, {}, "fuzz chunk", &cold);
      } catch (const Error& e) {
        cold_ok = false;
        cold_code = e.code();
      }
    } catch (const Error& e) {
      check(e.code() == Errc::corrupt);
      continue;
    }
    check(plain_ok == cold_ok);
    if (plain_ok) check(plain_out == cold_out);
    else check(plain_code == cold_code);
  }

  // With damage collected instead of thrown, decoding goes on to the end.
  std::vector<std::string> problems;
  try {
    checkpoint::decode_container(*reader, base, 1, checkpoint::DecodeTarget{}, &problems);
  } catch (const Error& e) {
    check(e.code() == Errc::corrupt || e.code() == Errc::invalid_argument);
  }
}

}  // namespace mithril::fuzz
