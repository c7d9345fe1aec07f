// checkpoint/tensor_reader.cpp — CheckpointReader: random access to the
// tensors of an .mcp (safetensors source) or of a safetensors file, decoded
// straight into caller memory.

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <simdjson.h>

#include "checkpoint/parallel.hpp"
#include "checkpoint/source.hpp"
#include "codec/chunk_codec.hpp"
#include "container/reader.hpp"
#include "formats/safetensors.hpp"
#include "mithril/error.hpp"
#include "mithril/tensors.hpp"
#include "storage/url.hpp"
#include "util/blake3.hpp"
#include "util/byte_io.hpp"
#include "util/fresh_memory.hpp"
#include "util/mapped_file.hpp"

namespace mithril {
namespace {


// The __metadata__ strings of a safetensors header held in an .mcp (checked
// by the safetensors parser when it was compressed; read here on every open,
// with simdjson's DOM, ~10 times faster than nlohmann::json's: the header of
// a model with thousands of tensors is hundreds of KB).
std::map<std::string, std::string> parse_header_metadata(util::ByteSpan header, const std::string& file) {
  std::map<std::string, std::string> out;
  if (header.size() < 8) throw Error(Errc::corrupt, file + ": safetensors header is shorter than 8 bytes");
  const auto n = util::load_le<std::uint64_t>(header.data());
  if (n > header.size() - 8) throw Error(Errc::corrupt, file + ": safetensors header length exceeds its segment");
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (const auto err = parser.parse(util::as_chars(header.subspan(8, n))).get(doc); err != simdjson::SUCCESS)
    throw Error(Errc::corrupt, file + ": safetensors header is not JSON: " + simdjson::error_message(err));
  simdjson::dom::object top;
  if (doc.get_object().get(top) != simdjson::SUCCESS)
    throw Error(Errc::corrupt, file + ": safetensors header is not a JSON object");
  simdjson::dom::object metadata;
  if (top.at_key("__metadata__").get_object().get(metadata) == simdjson::SUCCESS) {
    for (const auto [key, value] : metadata) {
      std::string_view text;
      if (value.get_string().get(text) == simdjson::SUCCESS) out[std::string(key)] = std::string(text);
    }
  }
  return out;
}

}  // namespace

struct CheckpointReader::Impl {
  std::filesystem::path path;
  unsigned threads = 0;
  std::optional<container::Reader> mcp;
  std::unique_ptr<checkpoint::BaseSource> base;
  std::optional<util::MappedFile> plain;
  std::vector<TensorEntry> tensors;
  // .mcp: the tensor's segment; safetensors: its absolute file offset.
  std::vector<std::uint64_t> where;
  std::unordered_map<std::string, std::size_t> by_name;
  std::map<std::string, std::string> header_metadata;
  std::map<std::string, std::string> metadata;
  util::ByteVector header_bytes;  // .mcp: the decoded safetensors header

  void open_mcp(const ReaderOptions& options);
  void open_safetensors();
  // Throws Error(io) when a file read shrank under its mapping (the bytes
  // read were zeros, not the file's): util::MappedFile::check_intact().
  void check_intact() const {
    checkpoint::check_read_intact(plain ? &*plain : nullptr, mcp ? &*mcp : nullptr, base.get());
  }
  // payload: the chunk's stored bytes when the caller holds them already.
  // caller_memory: out is the caller's destination (it may hold old
  // contents: written with non-temporal stores where that pays), not a
  // buffer of ours that is read right after. fresh: out lies in the
  // caller's memory that has never been touched (a tensor just allocated),
  // whose pages are mapped a piece at a time just before they are written.
  void decode_chunk(codec::ChunkDecoder& decoder, std::size_t chunk, util::MutableByteSpan out,
                    std::optional<util::ByteSpan> payload = std::nullopt, bool caller_memory = false,
                    util::FreshMemory* fresh = nullptr) const;

  // A shared chunk's bytes (format 1.1: small tensors coded together),
  // decoded and checked. The last one decoded is kept for the next read:
  // reading a file's tensors one at a time (as `safe_open` users do) then
  // decodes each shared chunk once, not once per tensor (100 tensors of a
  // 1 MB chunk: 100 MB of decoding).
  std::shared_ptr<const util::ByteVector> shared_chunk(codec::ChunkDecoder& decoder, std::size_t chunk) const;
  mutable std::mutex shared_mutex;
  mutable std::size_t shared_held = SIZE_MAX;
  mutable std::shared_ptr<const util::ByteVector> shared_bytes;
};

std::shared_ptr<const util::ByteVector> CheckpointReader::Impl::shared_chunk(codec::ChunkDecoder& decoder,
                                                                             std::size_t chunk) const {
  {
    const std::lock_guard lock(shared_mutex);
    if (shared_held == chunk && shared_bytes) return shared_bytes;
  }
  auto bytes = std::make_shared<util::ByteVector>(mcp->index().chunks[chunk].raw_size);
  decode_chunk(decoder, chunk, *bytes);
  const std::lock_guard lock(shared_mutex);
  shared_held = chunk;
  shared_bytes = bytes;
  return bytes;
}

void CheckpointReader::Impl::open_mcp(const ReaderOptions& options) {
  mcp.emplace(checkpoint::open_container_source(path, options.remote));
  const auto& index = mcp->index();
  if (index.source_kind != "safetensors")
    throw Error(Errc::unsupported,
                fmt::format("{}: holds a {} file ('{}'), not a safetensors checkpoint; restore it with "
                            "decompress_file() instead",
                            path.string(), index.source_kind, index.source.name));
  // A safetensors plan is one raw segment (the header) then tensor segments.
  if (index.segments.empty() || index.segments[0].kind != container::SegmentKind::raw)
    throw Error(Errc::corrupt, path.string() + ": safetensors source without a header segment");
  for (std::size_t s = 1; s < index.segments.size(); ++s)
    if (index.segments[s].kind != container::SegmentKind::tensor)
      throw Error(Errc::corrupt, fmt::format("{}: segment {} of a safetensors source is not a tensor", path.string(), s));
  base = checkpoint::open_base_for(*mcp, options.base, options.threads, options.remote);
  metadata = index.metadata;

  const auto& head = index.segments[0];
  // Nothing is sized from the index before its chunks are known to be able
  // to hold it: the header by the safetensors limit, every chunk of a local
  // file (a mapped, cheap look at its plane directory) by the format's.
  if (head.size > formats::k_safetensors_max_header + 8)
    throw Error(Errc::corrupt, fmt::format("{}: header segment of {} bytes exceeds the safetensors limit", path.string(), head.size));
  const auto check = [&](std::uint32_t c, util::ByteSpan payload) {
    codec::ChunkDecoder::check_payload(payload, index.chunks[c], path.string() + ": " + container::describe_chunk(index, c));
  };
  // The header's payloads, fetched once (a remote source) or mapped.
  std::vector<util::ByteVector> fetched(head.chunk_count);
  std::vector<util::ByteSpan> head_payloads;
  if (const auto* local = dynamic_cast<const util::MappedSource*>(&mcp->source())) {
    // Straight from the mapping: only the plane directories are touched (and
    // nothing counts as read).
    for (std::uint32_t c = 0; c < index.chunks.size(); ++c)
      check(c, local->bytes().subspan(index.chunks[c].file_offset, index.chunks[c].stored_size));
  }
  for (std::uint32_t i = 0; i < head.chunk_count; ++i) {
    const auto payload = mcp->payload(head.first_chunk + i, fetched[i]);  // mapped: no copy
    check(head.first_chunk + i, payload);
    head_payloads.push_back(payload);
  }
  header_bytes.resize(head.size);
  codec::ChunkDecoder decoder;
  for (std::uint32_t i = 0; i < head.chunk_count; ++i) {
    const auto c = head.first_chunk + i;
    const auto& r = index.chunks[c];
    decode_chunk(decoder, c, util::MutableByteSpan(header_bytes).subspan(r.source_offset - head.offset, r.raw_size),
                 head_payloads[i]);
  }
  header_metadata = parse_header_metadata(header_bytes, path.string());

  for (std::size_t s = 1; s < index.segments.size(); ++s) {
    const auto& seg = index.segments[s];
    const std::uint64_t stored = container::stored_bytes(index, seg);
    tensors.push_back({seg.name, seg.dtype, seg.shape, seg.size, stored});
    where.push_back(s);
  }
}

void CheckpointReader::Impl::open_safetensors() {
  plain.emplace(path);
  const auto bytes = plain->bytes();
  if (!formats::looks_like_safetensors(bytes))
    throw Error(Errc::unsupported, fmt::format("{}: not an .mcp or safetensors file", path.string()));
  const auto header = formats::parse_safetensors(bytes, path.string());
  header_metadata = header.metadata;
  for (const auto& t : header.tensors) {
    tensors.push_back({t.name, std::string(formats::dtype_info(t.dtype).name), t.shape, t.size(), t.size()});
    where.push_back(header.data_offset + t.begin);
  }
}

void CheckpointReader::Impl::decode_chunk(codec::ChunkDecoder& decoder, std::size_t chunk, util::MutableByteSpan out,
                                          std::optional<util::ByteSpan> payload, bool caller_memory,
                                          util::FreshMemory* fresh) const {
  const auto& index = mcp->index();
  const auto& r = index.chunks[chunk];
  util::ByteSpan base_bytes;
  if (r.residual != container::Residual::none) {
    if (!base) throw Error(Errc::corrupt, fmt::format("{}: {}: delta chunk in a file that names no base", path.string(),
                                                      container::describe_chunk(index, chunk)));
    base_bytes = base->chunk_base(index.segments[r.segment], r);
  }
  util::ByteVector scratch;  // a remote chunk's fetched bytes (a local one is mapped)
  codec::ChunkDecoder::Hooks hooks;
  if (fresh)
    hooks.prepare = [fresh](util::MutableByteSpan piece) { fresh->prefault(piece.data(), piece.size()); };
  else
    hooks.cold_output = caller_memory && codec::ChunkDecoder::cold_output_pays(out);
  decoder.decode(payload ? *payload : mcp->payload(chunk, scratch), r, out, base_bytes,
                 path.string() + ": " + container::describe_chunk(index, chunk), &hooks);
}

CheckpointReader::CheckpointReader(const std::filesystem::path& path, const ReaderOptions& options)
    : m_impl(std::make_unique<Impl>()) {
  auto& im = *m_impl;
  im.path = path;
  im.threads = checkpoint::resolve_threads(options.threads);
  util::read_then_check(
      [&] {
        if (storage::is_url(path.string()) || is_mcp_file(path)) im.open_mcp(options);  // a URL: .mcp only
        else im.open_safetensors();
      },
      [&] { im.check_intact(); });
  im.by_name.reserve(im.tensors.size());
  for (std::size_t i = 0; i < im.tensors.size(); ++i) im.by_name.emplace(im.tensors[i].name, i);
}

CheckpointReader::~CheckpointReader() = default;
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;

const std::filesystem::path& CheckpointReader::path() const noexcept { return m_impl->path; }
bool CheckpointReader::is_mcp() const noexcept { return m_impl->mcp.has_value(); }
const std::vector<TensorEntry>& CheckpointReader::tensors() const noexcept { return m_impl->tensors; }
const std::map<std::string, std::string>& CheckpointReader::header_metadata() const noexcept {
  return m_impl->header_metadata;
}
const std::map<std::string, std::string>& CheckpointReader::metadata() const noexcept { return m_impl->metadata; }

std::uint64_t CheckpointReader::bytes_read() const noexcept {
  return m_impl->mcp ? m_impl->mcp->source().bytes_read() : 0;
}

std::vector<std::byte> read_tensor(const std::filesystem::path& path_or_url, std::string_view name,
                                   const ReaderOptions& options) {
  const CheckpointReader reader(path_or_url, options);
  const auto i = reader.find(name);
  if (!i) throw Error(Errc::not_found, fmt::format("{}: no tensor '{}'", storage::redact_url(path_or_url.string()), name));
  std::vector<std::byte> out(static_cast<std::size_t>(reader.tensors()[*i].bytes));
  reader.read_tensor(*i, out);
  return out;
}

std::optional<std::size_t> CheckpointReader::find(std::string_view name) const noexcept {
  const auto it = m_impl->by_name.find(std::string(name));
  if (it == m_impl->by_name.end()) return std::nullopt;
  return it->second;
}

void CheckpointReader::read_tensor(std::size_t index, std::span<std::byte> out) const {
  const Target t{index, out};
  read_tensors(std::span<const Target>(&t, 1));
}

void CheckpointReader::read_tensor_range(std::size_t index, std::uint64_t offset, std::span<std::byte> out) const {
  const auto& im = *m_impl;
  if (index >= im.tensors.size())
    throw Error(Errc::invalid_argument,
                fmt::format("{}: tensor index {} out of range ({} tensors)", im.path.string(), index, im.tensors.size()));
  const auto& e = im.tensors[index];
  if (offset > e.bytes || out.size() > e.bytes - offset)
    throw Error(Errc::invalid_argument, fmt::format("{}: tensor '{}' is {} bytes; cannot read {} bytes at offset {}",
                                                    im.path.string(), e.name, e.bytes, out.size(), offset));
  if (out.empty()) return;
  if (!im.mcp) {
    std::memcpy(out.data(), im.plain->bytes().data() + im.where[index] + offset, out.size());
    im.check_intact();
    return;
  }
  const auto& index_ = im.mcp->index();
  const auto& seg = index_.segments[im.where[index]];
  // In source offsets: [from, to) wanted; a chunk shared with other small
  // tensors starts before the segment and ends after it.
  const std::uint64_t from = seg.offset + offset, to = from + out.size();
  std::vector<std::uint32_t> chunks;  // those overlapping [from, to)
  for (std::uint32_t c = seg.first_chunk; c < seg.first_chunk + seg.chunk_count; ++c) {
    const auto& r = index_.chunks[c];
    if (r.source_offset < to && r.source_offset + r.raw_size > from) chunks.push_back(c);
  }
  std::vector<codec::ChunkDecoder> decoders(checkpoint::loop_slots(im.threads));
  const auto run = [&](std::size_t j, std::size_t s) {
    const auto c = chunks[j];
    const auto& r = index_.chunks[c];
    const std::uint64_t lo = r.source_offset, hi = lo + r.raw_size;
    if (lo >= from && hi <= to) {
      im.decode_chunk(decoders[s], c, out.subspan(lo - from, r.raw_size), std::nullopt, true);
      return;
    }
    // A chunk cut by the range: decoded whole, its checksum checked.
    std::shared_ptr<const util::ByteVector> shared;
    util::ByteVector own;
    if (r.shared()) {
      shared = im.shared_chunk(decoders[s], c);
    } else {
      own.resize(r.raw_size);
      im.decode_chunk(decoders[s], c, own);
    }
    const util::ByteVector& whole = shared ? *shared : own;
    const std::uint64_t a = std::max(lo, from), b = std::min(hi, to);
    std::memcpy(out.data() + (a - from), whole.data() + (a - lo), b - a);
  };
  util::read_then_check([&] { checkpoint::parallel_for_index(chunks.size(), im.threads, run); },
                        [&] { im.check_intact(); });
}

void CheckpointReader::read_tensors(std::span<const Target> targets, bool verify_digest) const {
  const auto& im = *m_impl;
  for (const auto& t : targets) {
    if (t.tensor >= im.tensors.size())
      throw Error(Errc::invalid_argument,
                  fmt::format("{}: tensor index {} out of range ({} tensors)", im.path.string(), t.tensor, im.tensors.size()));
    const auto& e = im.tensors[t.tensor];
    if (t.out.size() != e.bytes)
      throw Error(Errc::invalid_argument, fmt::format("{}: tensor '{}' is {} bytes but the destination holds {}",
                                                      im.path.string(), e.name, e.bytes, t.out.size()));
  }

  // Work items: a chunk (.mcp) or a piece of a tensor (safetensors), each
  // with its destination; they write disjoint ranges, in any order.
  // A chunk that several small tensors share is one job, decoded once into a
  // buffer of the worker's, each wanted tensor copied out of it.
  struct Part {
    std::uint64_t at;  // in the chunk
    util::MutableByteSpan out;
  };
  struct Job {
    std::size_t source;  // chunk number, or file offset
    util::MutableByteSpan out;
    std::vector<Part> parts;  // a shared chunk: the tensors wanted from it (out unused)
    util::FreshMemory* fresh = nullptr;  // out lies in a destination never touched yet
  };
  std::vector<Job> jobs;
  // Destinations never touched (tensors just allocated, as mithril.load's):
  // their pages are mapped a piece at a time just before they are written,
  // as huge pages where that pays (util/fresh_memory.hpp), rather than one
  // page fault per 4 KiB as the decoder first writes them. One each, alive
  // until every chunk is decoded (its destructor reports the timings).
  std::vector<std::unique_ptr<util::FreshMemory>> fresh;
  if (im.mcp) {
    const auto& index = im.mcp->index();
    std::unordered_map<std::uint32_t, std::size_t> shared_job;  // chunk -> its job
    for (const auto& t : targets) {
      const auto& seg = index.segments[im.where[t.tensor]];
      util::FreshMemory* fm = nullptr;
      if (auto f = util::FreshMemory::if_untouched(t.out.data(), t.out.size(), codec::ChunkDecoder::k_prepare_piece)) {
        fm = f.get();
        fresh.push_back(std::move(f));
      }
      for (std::uint32_t c = seg.first_chunk; c < seg.first_chunk + seg.chunk_count; ++c) {
        const auto& r = index.chunks[c];
        if (r.shared()) {
          const auto [it, added] = shared_job.try_emplace(c, jobs.size());
          if (added) jobs.push_back({c, {}, {}});
          jobs[it->second].parts.push_back({seg.offset - r.source_offset, t.out});
          continue;
        }
        jobs.push_back({c, t.out.subspan(r.source_offset - seg.offset, r.raw_size), {}, fm});
      }
    }
  } else {
    for (const auto& t : targets) {
      for (std::size_t off = 0; off < t.out.size(); off += checkpoint::k_copy_piece) {
        const std::size_t n = std::min(checkpoint::k_copy_piece, t.out.size() - off);
        jobs.push_back({im.where[t.tensor] + off, t.out.subspan(off, n), {}});
      }
    }
  }

  std::vector<codec::ChunkDecoder> decoders(checkpoint::loop_slots(im.threads));
  const auto run = [&](std::size_t j, std::size_t s) {
    const Job& job = jobs[j];
    if (!job.parts.empty()) {
      const auto whole = im.shared_chunk(decoders[s], job.source);
      for (const auto& p : job.parts)
        if (!p.out.empty()) std::memcpy(p.out.data(), whole->data() + p.at, p.out.size());
      return;
    }
    if (im.mcp) im.decode_chunk(decoders[s], job.source, job.out, std::nullopt, true, job.fresh);
    else std::memcpy(job.out.data(), im.plain->bytes().data() + job.source, job.out.size());
  };
  util::read_then_check([&] { checkpoint::parallel_for_index(jobs.size(), im.threads, run); },
                        [&] { im.check_intact(); });

  if (!verify_digest || !im.mcp) return;
  std::vector<const Target*> by_tensor(im.tensors.size(), nullptr);
  for (const auto& t : targets) {
    if (by_tensor[t.tensor])
      throw Error(Errc::invalid_argument, fmt::format("{}: tensor '{}' is read twice", im.path.string(), im.tensors[t.tensor].name));
    by_tensor[t.tensor] = &t;
  }
  util::Blake3 hasher;
  hasher.update(im.header_bytes);
  for (std::size_t i = 0; i < by_tensor.size(); ++i) {
    if (!by_tensor[i])
      throw Error(Errc::invalid_argument, fmt::format("{}: verifying the digest needs every tensor; '{}' was not read",
                                                      im.path.string(), im.tensors[i].name));
    hasher.update(by_tensor[i]->out);
  }
  const auto& want = im.mcp->index().source.blake3;
  if (hasher.digest() != want)
    throw Error(Errc::corrupt, fmt::format("{}: whole-file BLAKE3 mismatch: read {} but the original was {}",
                                           im.path.string(), util::to_hex(hasher.digest()), util::to_hex(want)));
}

}  // namespace mithril
