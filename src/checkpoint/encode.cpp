#include "checkpoint/encode.hpp"

#include <tbb/enumerable_thread_specific.h>

#include <optional>

#include <fmt/format.h>

#include "checkpoint/parallel.hpp"
#include "checkpoint/source.hpp"
#include "container/writer.hpp"
#include "mithril/error.hpp"
#include "mithril/version.hpp"
#include "storage/remote_io.hpp"
#include "util/atomic_file.hpp"
#include "util/blake3.hpp"
#include "util/xxh3.hpp"

namespace mithril::checkpoint {

void check_level(int level) {
  if (level < k_min_level || level > k_max_level)
    throw Error(Errc::invalid_argument,
                fmt::format("compression level {} is out of range ({}..{})", level, k_min_level, k_max_level));
}

CompressResult write_container(const std::filesystem::path& output, SourcePlan plan, const std::string& source_name,
                               std::uint64_t source_size, const ChunkSource& chunk_bytes,
                               const CompressOptions& options, std::chrono::steady_clock::time_point started) {
  // Delta: tensors matched against the base (by name, dtype, shape).
  std::optional<BaseSource> base;
  if (options.base) {
    base.emplace(*options.base, options.threads, options.remote);
    match_base(plan, *base);
  }

  // A local AtomicFile, or a streaming multipart upload when `output` is a
  // URL; either appears only at commit() and is discarded (the upload
  // aborted) on any exception.
  const auto out = storage::open_sink(output.string(), options.force ? util::Overwrite::allow : util::Overwrite::refuse,
                                      storage_options(options.remote),
                                      options.sync ? util::Durability::sync : util::Durability::none);
  container::Writer writer([&](util::ByteSpan b) { out->write(b); });

  container::Index index;
  index.source.name = source_name;
  index.source.size = source_size;
  index.source_kind = plan.kind;
  index.metadata = options.metadata;
  index.created_by = std::string("mithril ") + version();
  index.segments = plan.segments;
  index.chunks.resize(plan.chunks.size());
  if (base) index.base = base->identity();

  const unsigned threads = resolve_threads(options.threads);
  const std::size_t in_flight = std::max<std::size_t>(2, 2 * static_cast<std::size_t>(threads));
  struct Slot {
    codec::EncodedChunk encoded;
    util::ByteVector payload;  // owned copy: the encoder's buffer is reused
    std::uint64_t xxh3 = 0;
  };
  std::vector<Slot> slots(in_flight);
  tbb::enumerable_thread_specific<codec::ChunkEncoder> encoders(options.level);
  util::Blake3 hasher;
  std::uint64_t done = 0;

  ordered_pipeline(
      plan.chunks.size(), threads, in_flight,
      [&](std::size_t i, std::size_t s) {
        const auto& c = plan.chunks[i];
        const util::ByteSpan raw = chunk_bytes(c);
        const util::ByteSpan base_bytes = base ? base->chunk_base(plan.segments[c.segment], c) : util::ByteSpan{};
        Slot& slot = slots[s];
        slot.encoded = encoders.local().encode(raw, c.kind, base_bytes);
        slot.payload.assign(slot.encoded.payload.begin(), slot.encoded.payload.end());
        slot.xxh3 = util::xxh3_64(raw);
      },
      [&](std::size_t i, std::size_t s) {
        const auto& c = plan.chunks[i];
        Slot& slot = slots[s];
        container::ChunkRecord& r = index.chunks[i];
        r.file_offset = writer.append(slot.payload);
        r.source_offset = c.source_offset;
        r.raw_size = c.size;
        r.stored_size = static_cast<std::uint32_t>(slot.payload.size());
        r.raw_xxh3 = slot.xxh3;
        r.segment = c.segment;
        r.layout = slot.encoded.layout;
        r.width = slot.encoded.width;
        r.group_mode = slot.encoded.group_mode;
        r.residual = slot.encoded.residual;
        hasher.update(chunk_bytes(c));
        done += c.size;
        if (options.progress) options.progress(done, source_size);
      });

  index.source.blake3 = hasher.digest();
  const std::uint64_t total = writer.finish(index);
  out->commit();

  CompressResult result;
  result.source_bytes = source_size;
  result.output_bytes = total;
  result.source_kind = plan.kind;
  result.tensors = plan.tensor_count;
  result.chunks = plan.chunks.size();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

}  // namespace mithril::checkpoint
