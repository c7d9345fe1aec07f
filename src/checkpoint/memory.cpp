// checkpoint/memory.cpp — the in-memory API (mithril/memory.hpp): the shared
// encode and decode pipelines with caller memory as source and target.
#include "mithril/memory.hpp"

#include <chrono>
#include <optional>

#include <fmt/format.h>

#include "checkpoint/encode.hpp"
#include "checkpoint/plan.hpp"
#include "checkpoint/source.hpp"
#include "container/reader.hpp"
#include "mithril/error.hpp"
#include "util/fresh_memory.hpp"
#include "util/posix.hpp"

namespace mithril {
namespace {

container::Reader open_memory(std::span<const std::byte> mcp, std::string_view name) {
  return container::Reader(std::make_shared<util::SpanSource>(mcp, std::string(name)));
}

std::vector<std::byte> into_vector(const std::function<std::uint64_t(const MemoryAllocator&)>& compress) {
  std::vector<std::byte> out;
  const std::uint64_t size = compress([&](std::uint64_t bound) {
    out.resize(bound);
    return std::span<std::byte>(out);
  });
  out.resize(size);
  out.shrink_to_fit();
  return out;
}

}  // namespace

std::uint64_t compress_to_memory(std::span<const std::byte> data, std::string_view dtype, const CompressOptions& options,
                                 const MemoryAllocator& allocate, std::string_view name) {
  const auto t0 = std::chrono::steady_clock::now();
  checkpoint::check_level(options.level);
  checkpoint::SourcePlan plan;
  try {
    plan = dtype.empty() ? checkpoint::plan_source(data, name, options.chunk_size)
                         : checkpoint::plan_single_tensor(data.size(), dtype, options.chunk_size);
  } catch (const Error& e) {
    if (e.code() != Errc::invalid_argument) throw;
    throw Error(Errc::invalid_argument, fmt::format("{}: {}", name, e.what()));
  }
  if (!plan.note.empty() && options.warn) options.warn(plan.note);
  return checkpoint::write_container_to_memory(
             std::move(plan), std::string(name), data.size(),
             [data](const checkpoint::ChunkPlan& c) { return data.subspan(c.source_offset, c.size); }, options, t0,
             allocate)
      .output_bytes;
}

std::vector<std::byte> compress_buffer(std::span<const std::byte> data, std::string_view dtype,
                                       const CompressOptions& options) {
  return into_vector([&](const MemoryAllocator& a) { return compress_to_memory(data, dtype, options, a); });
}

std::uint64_t decompressed_size(std::span<const std::byte> mcp, std::string_view name) {
  return open_memory(mcp, name).index().source.size;
}

namespace {

// fresh: `out` was just allocated for this call, its pages not yet touched.
void decode_into(const container::Reader& reader, std::span<std::byte> out, const DecompressOptions& options,
                 std::string_view name, bool fresh = false) {
  const auto& index = reader.index();
  if (out.size() != index.source.size)
    throw Error(Errc::invalid_argument, fmt::format("{}: output buffer holds {} bytes, the original has {}", name,
                                                    out.size(), index.source.size));
  auto base = checkpoint::open_base_for(reader, options.base, options.threads, options.remote);
  // A fresh buffer's pages are mapped by the workers a piece at a time just
  // before they write it (the zeroed lines are then still in cache), as huge
  // pages where that pays (util/fresh_memory.hpp).
  std::optional<util::FreshMemory> fresh_memory;
  if (fresh) fresh_memory.emplace(out.data(), out.size());
  checkpoint::DecodeTarget target;
  target.place = [&](std::size_t c) { return out.subspan(index.chunks[c].source_offset, index.chunks[c].raw_size); };
  target.old_memory = !fresh;
  if (fresh_memory)
    target.prepare = [&fm = *fresh_memory](util::MutableByteSpan piece) { fm.prefault(piece.data(), piece.size()); };
  checkpoint::decode_container(
      reader, base.get(), options.threads, target, nullptr, options.progress,
      checkpoint::digest_check(options.check_digest));
}

}  // namespace

void decompress_into(std::span<const std::byte> mcp, std::span<std::byte> out, const DecompressOptions& options,
                     std::string_view name) {
  decode_into(open_memory(mcp, name), out, options, name);
}

std::uint64_t decompress_to_memory(std::span<const std::byte> mcp, const DecompressOptions& options,
                                   const MemoryAllocator& allocate, std::string_view name) {
  const container::Reader reader = open_memory(mcp, name);
  const std::uint64_t size = reader.index().source.size;
  const std::span<std::byte> out = allocate(size);
  if (out.size() < size) throw Error(Errc::internal, "in-memory decompress: output buffer smaller than asked");
  decode_into(reader, out.first(size), options, name, true);
  return size;
}

std::vector<std::byte> decompress_buffer(std::span<const std::byte> mcp, const DecompressOptions& options,
                                         std::string_view name) {
  std::vector<std::byte> out;
  decompress_to_memory(mcp, options, [&](std::uint64_t size) {
    out.resize(size);
    return std::span<std::byte>(out);
  }, name);
  return out;
}

}  // namespace mithril
