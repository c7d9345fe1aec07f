// checkpoint/tensor_reader.cpp — CheckpointReader, read_tensor(): one
// tensor of a local or remote .mcp, reading only that tensor's chunks.
#include <tbb/enumerable_thread_specific.h>

#include <mutex>

#include <fmt/format.h>

#include "checkpoint/parallel.hpp"
#include "checkpoint/source.hpp"
#include "codec/chunk_codec.hpp"
#include "container/reader.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"

namespace mithril {

struct CheckpointReader::Impl {
  ReadOptions options;
  std::shared_ptr<const util::ByteSource> source;
  std::unique_ptr<container::Reader> reader;
  FileInfo info;
  // The base of a delta, opened on first need (it is read whole).
  mutable std::once_flag base_once;
  mutable std::unique_ptr<checkpoint::BaseSource> base;
};

CheckpointReader::CheckpointReader(const std::filesystem::path& path_or_url, const ReadOptions& options)
    : m_impl(std::make_unique<Impl>()) {
  m_impl->options = options;
  m_impl->source = checkpoint::open_container_source(path_or_url, options.remote);
  m_impl->reader = std::make_unique<container::Reader>(m_impl->source);
  m_impl->info = checkpoint::describe_container(*m_impl->reader, path_or_url.string());
}

CheckpointReader::~CheckpointReader() = default;
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;

const FileInfo& CheckpointReader::info() const noexcept { return m_impl->info; }

std::uint64_t CheckpointReader::bytes_read() const noexcept { return m_impl->source->bytes_read(); }

TensorData CheckpointReader::tensor(std::string_view name) const {
  const auto& reader = *m_impl->reader;
  const auto& index = reader.index();
  const container::Segment* seg = nullptr;
  for (const auto& s : index.segments)
    if (s.kind == container::SegmentKind::tensor && s.name == name) {
      seg = &s;
      break;
    }
  if (!seg) throw Error(Errc::not_found, fmt::format("{}: no tensor '{}'", reader.name(), name));

  const checkpoint::BaseSource* base = nullptr;
  for (std::uint32_t c = seg->first_chunk; c < seg->first_chunk + seg->chunk_count; ++c) {
    if (index.chunks[c].residual == container::Residual::none) continue;
    std::call_once(m_impl->base_once, [&] {
      m_impl->base = checkpoint::open_base_for(reader, m_impl->options.base, m_impl->options.threads,
                                               m_impl->options.remote);
    });
    base = m_impl->base.get();
    break;
  }

  TensorData out;
  out.name = seg->name;
  out.dtype = seg->dtype;
  out.shape = seg->shape;
  out.data.resize(static_cast<std::size_t>(seg->size));
  const std::size_t n = seg->chunk_count;
  const unsigned threads = checkpoint::resolve_threads(m_impl->options.threads);
  const std::size_t in_flight = std::max<std::size_t>(2, 2 * static_cast<std::size_t>(threads));
  std::vector<util::ByteVector> scratch(in_flight);
  tbb::enumerable_thread_specific<codec::ChunkDecoder> decoders;
  // Chunks decode straight into their place in the tensor; the in-order
  // stage has nothing left to do.
  checkpoint::ordered_pipeline(
      n, threads, in_flight,
      [&](std::size_t i, std::size_t slot) {
        const std::size_t c = seg->first_chunk + i;
        const auto& r = index.chunks[c];
        const std::string what = reader.name() + ": " + container::describe_chunk(index, c);
        const std::uint64_t at = r.source_offset - seg->offset;
        if (at > out.data.size() || r.raw_size > out.data.size() - at)
          throw Error(Errc::corrupt, what + ": lies outside its tensor");
        util::ByteSpan base_bytes;
        if (r.residual != container::Residual::none) {
          if (!base) throw Error(Errc::invalid_argument, what + ": delta chunk but no base given");
          base_bytes = base->chunk_base(*seg, r);
        }
        decoders.local().decode(reader.payload(c, scratch[slot]), r,
                                util::MutableByteSpan(out.data.data() + at, r.raw_size), base_bytes, what);
      },
      [](std::size_t, std::size_t) {});
  return out;
}

TensorData read_tensor(const std::filesystem::path& path_or_url, std::string_view name, const ReadOptions& options) {
  return CheckpointReader(path_or_url, options).tensor(name);
}

}  // namespace mithril
