// tests/fuzz/fuzz_mcp_check.cpp — see fuzz_mcp.hpp.
#include <memory>
#include <vector>

#include "checkpoint/source.hpp"
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

  // With damage collected instead of thrown, decoding goes on to the end.
  std::vector<std::string> problems;
  try {
    checkpoint::decode_container(*reader, base, 1, checkpoint::DecodeTarget{}, &problems);
  } catch (const Error& e) {
    check(e.code() == Errc::corrupt || e.code() == Errc::invalid_argument);
  }
}

}  // namespace mithril::fuzz
