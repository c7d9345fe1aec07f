// checkpoint/compressor.cpp — compress_file(): plan, code chunks in parallel,
// write them in order, then index and footer.
#include <tbb/enumerable_thread_specific.h>

#include <chrono>

#include <fmt/format.h>

#include "checkpoint/parallel.hpp"
#include "checkpoint/plan.hpp"
#include "checkpoint/source.hpp"
#include "container/writer.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "mithril/version.hpp"
#include "storage/remote_io.hpp"
#include "storage/url.hpp"
#include "util/atomic_file.hpp"
#include "util/blake3.hpp"
#include "util/mapped_file.hpp"
#include "util/xxh3.hpp"

namespace mithril {

CompressResult compress_file(const std::filesystem::path& input, const std::filesystem::path& output,
                             const CompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (options.level < k_min_level || options.level > k_max_level)
    throw Error(Errc::invalid_argument,
                fmt::format("compression level {} is out of range ({}..{})", options.level, k_min_level, k_max_level));
  if (storage::is_url(input.string()))
    throw Error(Errc::unsupported, fmt::format("{}: compress reads a local file; download it first", input.string()));
  const bool remote_output = storage::is_url(output.string());
  if (!remote_output && std::filesystem::exists(output) && std::filesystem::equivalent(input, output))
    throw Error(Errc::invalid_argument, fmt::format("{}: input and output are the same file", output.string()));

  util::MappedFile source(input);
  source.advise_sequential();
  const util::ByteSpan bytes = source.bytes();
  const std::string name = input.filename().string();
  checkpoint::SourcePlan plan = checkpoint::plan_source(bytes, input.string(), options.chunk_size);
  if (!plan.note.empty() && options.warn) options.warn(plan.note);

  // Delta: tensors matched against the base (by name, dtype, shape).
  std::optional<checkpoint::BaseSource> base;
  if (options.base) {
    base.emplace(*options.base, options.threads, options.remote);
    checkpoint::match_base(plan, *base);
  }

  // A local AtomicFile or a streaming multipart upload; either appears only
  // at commit(), and is discarded (the upload aborted) on any exception.
  const auto out = storage::open_sink(output.string(), options.force ? util::Overwrite::allow : util::Overwrite::refuse,
                                      checkpoint::storage_options(options.remote),
                                      options.sync ? util::Durability::sync : util::Durability::none);
  container::Writer writer([&](util::ByteSpan b) { out->write(b); });

  container::Index index;
  index.source.name = name;
  index.source.size = bytes.size();
  index.source_kind = plan.kind;
  index.metadata = options.metadata;
  index.created_by = std::string("mithril ") + version();
  index.segments = plan.segments;
  index.chunks.resize(plan.chunks.size());
  if (base) index.base = base->identity();

  const unsigned threads = checkpoint::resolve_threads(options.threads);
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

  checkpoint::ordered_pipeline(
      plan.chunks.size(), threads, in_flight,
      [&](std::size_t i, std::size_t s) {
        const auto& c = plan.chunks[i];
        const util::ByteSpan raw = bytes.subspan(c.source_offset, c.size);
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
        hasher.update(bytes.subspan(c.source_offset, c.size));
        done += c.size;
        if (options.progress) options.progress(done, bytes.size());
      });

  index.source.blake3 = hasher.digest();
  const std::uint64_t total = writer.finish(index);
  out->commit();

  CompressResult result;
  result.source_bytes = bytes.size();
  result.output_bytes = total;
  result.source_kind = plan.kind;
  result.tensors = plan.tensor_count;
  result.chunks = plan.chunks.size();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace mithril
