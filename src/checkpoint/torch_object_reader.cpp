// checkpoint/torch_object_reader.cpp — TorchObjectReader: the pickled object
// of a torch.save file (plain, or inside an .mcp) as a value tree read by the
// restricted unpickler, and its storages decoded straight into caller memory.
//
// For an .mcp only the raw segments (zip structure, data.pkl, small records)
// are decoded at open, into a sparse buffer of the source's size, which the
// same reader that reads plain files then parses; storage bytes are decoded
// only by read_storages().

#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "checkpoint/parallel.hpp"
#include "checkpoint/source.hpp"
#include "codec/chunk_codec.hpp"
#include "container/reader.hpp"
#include "formats/torch_checkpoint.hpp"
#include "mithril/error.hpp"
#include "mithril/torch_object.hpp"
#include "storage/url.hpp"
#include "util/fresh_memory.hpp"
#include "util/mapped_file.hpp"
#include "util/sparse_buffer.hpp"

namespace mithril {
namespace {

constexpr std::int64_t k_no_segment = -1;

// The names ObjectNode::kind documents (PickleKind's own, unlike pickle_kind_name's Python spellings).
std::string node_kind(formats::PickleKind kind) {
  using K = formats::PickleKind;
  switch (kind) {
    case K::none: return "none";
    case K::boolean: return "boolean";
    case K::integer: return "integer";
    case K::big_integer: return "big_integer";
    case K::floating: return "floating";
    case K::complex: return "complex";
    case K::string: return "string";
    case K::bytes: return "bytes";
    case K::list: return "list";
    case K::tuple: return "tuple";
    case K::set: return "set";
    case K::dict: return "dict";
    case K::ordered_dict: return "ordered_dict";
    case K::global: return "global";
    case K::dtype: return "dtype";
    case K::size: return "size";
    case K::device: return "device";
    case K::storage: return "storage";
    case K::tensor: return "tensor";
  }
  return "unknown";
}

}  // namespace

struct TorchObjectReader::Impl {
  std::filesystem::path path;
  unsigned threads = 0;
  std::optional<container::Reader> mcp;
  std::unique_ptr<checkpoint::BaseSource> base;
  std::optional<util::MappedFile> plain;
  std::unique_ptr<util::SparseBuffer> sparse;  // .mcp: the source with only its raw segments decoded
  util::ByteSpan file;                          // the (sparse) source bytes
  std::uint32_t root = 0xFFFFFFFF;
  std::vector<ObjectNode> nodes;
  std::vector<ObjectStorage> storages;
  std::vector<ObjectTensor> tensors;
  std::vector<std::uint64_t> offsets;  // storage i: its data's offset in the source
  std::vector<std::int64_t> segment;   // storage i: its .mcp segment, or k_no_segment (bytes in `file`)
  std::vector<std::uint64_t> file_offsets;

  void open_mcp(const ReaderOptions& options);
  void read_object();
  // Throws Error(io) when a file read shrank under its mapping (the bytes
  // read were zeros, not the file's): util::MappedFile::check_intact().
  void check_intact() const {
    checkpoint::check_read_intact(plain ? &*plain : nullptr, mcp ? &*mcp : nullptr, base.get());
  }
  // fresh: out lies in a destination never touched yet (a storage just
  // allocated), whose pages are mapped a piece at a time just before they
  // are written (util/fresh_memory.hpp).
  void decode_chunk(codec::ChunkDecoder& decoder, std::size_t chunk, util::MutableByteSpan out,
                    util::FreshMemory* fresh = nullptr) const;
};

void TorchObjectReader::Impl::decode_chunk(codec::ChunkDecoder& decoder, std::size_t chunk, util::MutableByteSpan out,
                                           util::FreshMemory* fresh) const {
  const auto& index = mcp->index();
  const auto& r = index.chunks[chunk];
  util::ByteSpan base_bytes;
  if (r.residual != container::Residual::none) {
    if (!base) throw Error(Errc::corrupt, fmt::format("{}: {}: delta chunk in a file that names no base", path.string(),
                                                      container::describe_chunk(index, chunk)));
    base_bytes = base->chunk_base(index.segments[r.segment], r);
  }
  util::ByteVector scratch;
  codec::ChunkDecoder::Hooks hooks;
  if (fresh) hooks.prepare = [fresh](util::MutableByteSpan piece) { fresh->prefault(piece.data(), piece.size()); };
  decoder.decode(mcp->payload(chunk, scratch), r, out, base_bytes,
                 path.string() + ": " + container::describe_chunk(index, chunk), &hooks);
}

void TorchObjectReader::Impl::open_mcp(const ReaderOptions& options) {
  mcp.emplace(checkpoint::open_container_source(path, options.remote));
  const auto& index = mcp->index();
  if (index.source_kind != "torch")
    throw Error(Errc::unsupported, fmt::format("{}: holds a {} file ('{}'), not a torch.save checkpoint", path.string(),
                                               index.source_kind, index.source.name));
  base = checkpoint::open_base_for(*mcp, options.base, options.threads, options.remote);
  sparse = std::make_unique<util::SparseBuffer>(static_cast<std::size_t>(index.source.size));
  codec::ChunkDecoder decoder;
  for (const auto& seg : index.segments) {
    if (seg.kind != container::SegmentKind::raw) continue;
    for (std::uint32_t c = seg.first_chunk; c < seg.first_chunk + seg.chunk_count; ++c) {
      const auto& r = index.chunks[c];
      if (r.source_offset + r.raw_size > sparse->size())
        throw Error(Errc::corrupt, fmt::format("{}: chunk {} lies outside the source", path.string(), c));
      decode_chunk(decoder, c, sparse->mutable_bytes().subspan(r.source_offset, r.raw_size));
    }
  }
  file = sparse->bytes();
}

void TorchObjectReader::Impl::read_object() {
  const std::string name = mcp ? fmt::format("{} ({})", path.string(), mcp->index().source.name) : path.string();
  const auto ck = formats::read_torch_checkpoint(file, name);
  if (ck.byteorder == "big")
    throw Error(Errc::unsupported, fmt::format("{}: big-endian torch.save archive; load it with torch.load", name));
  const auto& tree = ck.pickle;
  root = tree.root();
  nodes.reserve(tree.node_count());
  for (std::size_t i = 0; i < tree.node_count(); ++i) {
    const auto& n = tree.node(static_cast<formats::PickleId>(i));
    nodes.push_back({node_kind(n.kind), n.integer, n.real, n.imag, n.text, n.items,
                     n.state, n.index});
  }
  std::unordered_map<std::string_view, const formats::TorchStorage*> by_key;
  for (const auto& s : ck.storages) by_key.emplace(s.key, &s);
  std::unordered_map<std::uint64_t, std::int64_t> segment_at;
  if (mcp) {
    const auto& segs = mcp->index().segments;
    for (std::size_t s = 0; s < segs.size(); ++s)
      if (segs[s].kind == container::SegmentKind::tensor) segment_at.emplace(segs[s].offset, static_cast<std::int64_t>(s));
  }
  for (const auto& p : tree.storages()) {
    const auto* s = by_key.at(p.key);
    if (!s->stored)
      throw Error(Errc::unsupported, fmt::format("{}: storage record {} is compressed inside the zip; only STORED "
                                                 "records (what torch.save writes) are read",
                                                 name, s->record));
    storages.push_back({p.key, p.location, s->data_size});
    offsets.push_back(s->data_offset);
    const auto it = segment_at.find(s->data_offset);
    segment.push_back(it != segment_at.end() && s->data_size > 0 ? it->second : k_no_segment);
    if (!mcp) file_offsets.push_back(s->data_offset);
    if (mcp && segment.back() == k_no_segment && s->data_size > 0) {
      // Not coded as a tensor: its bytes must lie in a raw (decoded) segment.
      const auto& segs = mcp->index().segments;
      bool raw = false;
      for (const auto& seg : segs)
        raw |= seg.kind == container::SegmentKind::raw && seg.offset <= s->data_offset &&
               s->data_offset + s->data_size <= seg.offset + seg.size;
      if (!raw) throw Error(Errc::corrupt, fmt::format("{}: storage '{}' matches no segment", name, p.key));
    }
  }
  for (const auto& t : tree.tensors())
    tensors.push_back({t.storage, t.dtype, t.storage_offset, t.shape, t.stride, t.requires_grad, t.is_parameter, t.conj,
                       t.neg});
}

TorchObjectReader::TorchObjectReader(const std::filesystem::path& path, const ReaderOptions& options)
    : m_impl(std::make_unique<Impl>()) {
  auto& im = *m_impl;
  im.path = path;
  im.threads = checkpoint::resolve_threads(options.threads);
  util::read_then_check(
      [&] {
        if (storage::is_url(path.string()) || is_mcp_file(path)) {
          im.open_mcp(options);
        } else {
          im.plain.emplace(path);
          im.file = im.plain->bytes();
        }
        im.read_object();
      },
      [&] { im.check_intact(); });
}

TorchObjectReader::~TorchObjectReader() = default;
TorchObjectReader::TorchObjectReader(TorchObjectReader&&) noexcept = default;
TorchObjectReader& TorchObjectReader::operator=(TorchObjectReader&&) noexcept = default;

const std::filesystem::path& TorchObjectReader::path() const noexcept { return m_impl->path; }
bool TorchObjectReader::is_mcp() const noexcept { return m_impl->mcp.has_value(); }
std::uint32_t TorchObjectReader::root() const noexcept { return m_impl->root; }
const std::vector<ObjectNode>& TorchObjectReader::nodes() const noexcept { return m_impl->nodes; }
const std::vector<ObjectStorage>& TorchObjectReader::storages() const noexcept { return m_impl->storages; }
const std::vector<ObjectTensor>& TorchObjectReader::tensors() const noexcept { return m_impl->tensors; }
const std::vector<std::uint64_t>& TorchObjectReader::file_offsets() const noexcept { return m_impl->file_offsets; }

void TorchObjectReader::read_storages(std::span<const Target> targets, const ProgressCallback& progress) const {
  const auto& im = *m_impl;
  // Work items: a chunk of a coded storage, or a piece to copy from the file.
  struct Job {
    bool chunk;
    std::uint64_t source;  // chunk number, or source offset
    util::MutableByteSpan out;
    util::FreshMemory* fresh = nullptr;  // out lies in a destination never touched yet
  };
  std::vector<Job> jobs;
  // Storages just allocated (the torch.load drop-in's): mapped a piece at a
  // time before they are written, not one page fault per 4 KiB.
  std::vector<std::unique_ptr<util::FreshMemory>> fresh;
  std::uint64_t total = 0;
  for (const auto& t : targets) {
    if (t.storage >= im.storages.size())
      throw Error(Errc::invalid_argument, fmt::format("{}: storage index {} out of range ({} storages)",
                                                      im.path.string(), t.storage, im.storages.size()));
    const auto& s = im.storages[t.storage];
    if (t.out.size() != s.bytes)
      throw Error(Errc::invalid_argument, fmt::format("{}: storage '{}' is {} bytes but the destination holds {}",
                                                      im.path.string(), s.key, s.bytes, t.out.size()));
    total += s.bytes;
    if (const auto seg_index = im.segment[t.storage]; seg_index != k_no_segment) {
      const auto& index = im.mcp->index();
      const auto& seg = index.segments[static_cast<std::size_t>(seg_index)];
      util::FreshMemory* fm = nullptr;
      if (auto f = util::FreshMemory::if_untouched(t.out.data(), t.out.size(), codec::ChunkDecoder::k_prepare_piece)) {
        fm = f.get();
        fresh.push_back(std::move(f));
      }
      for (std::uint32_t c = seg.first_chunk; c < seg.first_chunk + seg.chunk_count; ++c) {
        const auto& r = index.chunks[c];
        jobs.push_back({true, c, t.out.subspan(r.source_offset - seg.offset, r.raw_size), fm});
      }
    } else {
      for (std::size_t off = 0; off < t.out.size(); off += checkpoint::k_copy_piece)
        jobs.push_back({false, im.offsets[t.storage] + off,
                        t.out.subspan(off, std::min(checkpoint::k_copy_piece, t.out.size() - off))});
    }
  }

  std::mutex progress_mutex;
  std::uint64_t done = 0;
  std::vector<codec::ChunkDecoder> decoders(checkpoint::loop_slots(im.threads));
  const auto run = [&](std::size_t j, std::size_t s) {
    const Job& job = jobs[j];
    if (job.chunk) im.decode_chunk(decoders[s], job.source, job.out, job.fresh);
    else std::memcpy(job.out.data(), im.file.data() + job.source, job.out.size());
    if (progress) {
      const std::lock_guard lock(progress_mutex);
      done += job.out.size();
      progress(done, total);
    }
  };
  util::read_then_check([&] { checkpoint::parallel_for_index(jobs.size(), im.threads, run); },
                        [&] { im.check_intact(); });
  if (progress && jobs.empty()) progress(total, total);
}

}  // namespace mithril
