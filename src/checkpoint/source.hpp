// checkpoint/source.hpp — the base checkpoint of a delta, and whole-container
// decoding shared by decompress, verify and .mcp bases.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/plan.hpp"
#include "container/reader.hpp"
#include "mithril/checkpoint.hpp"
#include "storage/backend.hpp"
#include "util/mapped_file.hpp"

namespace mithril::checkpoint {

// Storage options for the public RemoteOptions (environment applied).
storage::Options storage_options(const RemoteOptions& remote);

// Opens a container at a local path or an object-store URL.
std::shared_ptr<const util::ByteSource> open_container_source(const std::filesystem::path& path_or_url,
                                                              const RemoteOptions& remote);

class BaseSource;

// Throws Error(io) when a file a reader read from (a plain file, an .mcp, a
// delta's base; any may be null) shrank under its mapping: what it read there
// were zeros, not the file's (util::MappedFile::check_intact()).
void check_read_intact(const util::MappedFile* plain, const container::Reader* mcp, const BaseSource* base);

// The original bytes of a base checkpoint: a safetensors (or any) file mapped
// as is, or an .mcp read chunk by chunk on demand: chunk_base() decodes (and
// checks) only the base chunks under the requested range, so a delta or a
// delta's reader that needs part of the base never decodes the rest. A base
// given by URL is read from the object store (an .mcp by ranged reads of the
// chunks needed, anything else downloaded into an unlinked temporary).
class BaseSource {
 public:
  BaseSource(const std::filesystem::path& path_or_url, unsigned threads, const RemoteOptions& remote = {});
  ~BaseSource();
  BaseSource(const BaseSource&) = delete;
  BaseSource& operator=(const BaseSource&) = delete;

  // Identity of the base's original file (name, size, BLAKE3).
  const container::SourceIdentity& identity() const noexcept { return m_identity; }
  // The segments of the base (tensors by name, dtype, shape and offset).
  const SourcePlan& plan() const noexcept { return m_plan; }
  const std::filesystem::path& path() const noexcept { return m_path; }

  // The base bytes under a chunk of a segment matched by match_base(). For
  // an .mcp base the span is this thread's buffer, valid until the thread's
  // next chunk_base() call; thread-safe otherwise. A damaged base chunk
  // throws Error(corrupt) naming the base.
  util::ByteSpan chunk_base(const container::Segment& seg, const ChunkPlan& chunk) const;
  // Throws Error(io) when a local base file shrank while it was read
  // (util::MappedFile::check_intact()): the bytes chunk_base() gave were not its.
  void check_intact() const;
  util::ByteSpan chunk_base(const container::Segment& seg, const container::ChunkRecord& chunk) const;

 private:
  // Base bytes [offset, offset + size): mapped, or decoded from the .mcp.
  util::ByteSpan range(std::uint64_t offset, std::uint64_t size) const;

  std::filesystem::path m_path;
  std::optional<container::Reader> m_container;  // an .mcp base, decoded on demand
  std::vector<std::pair<std::uint64_t, std::size_t>> m_chunk_starts;  // (source offset, chunk), sorted
  std::uint64_t m_size = 0;                                          // of the original bytes
  std::optional<util::MappedFile> m_file;
  void* m_decoded = nullptr;  // mmap of the decoded or downloaded temporary
  std::size_t m_decoded_size = 0;
  util::ByteSpan m_bytes;
  container::SourceIdentity m_identity;
  SourcePlan m_plan;
  // Told apart from every other BaseSource of the process, even one made
  // later at the same address: range()'s per-thread decoded chunk is this one's.
  std::uint64_t m_serial = 0;
};

// Sets base_offset on every tensor segment of `plan` whose name, dtype and
// shape match a tensor of the base. Unmatched tensors stay standalone.
// Returns the number of matched tensors.
std::size_t match_base(SourcePlan& plan, const BaseSource& base);

// Where decode_container() puts each chunk's restored bytes.
struct DecodeTarget {
  // Memory of exactly raw_size bytes to decode chunk `c` straight into
  // (caller memory, a mapped output); unset: a worker's scratch buffer.
  std::function<util::MutableByteSpan(std::size_t c)> place;
  // With place: called from the worker with each piece of a placed chunk
  // (~256 KiB) just before it is first written (fresh output memory maps
  // its pages there, util::FreshMemory::prefault). Optional.
  std::function<void(util::MutableByteSpan piece)> prepare;
  // With place and no prepare: the placed memory held something before this
  // call (a caller's buffer being overwritten), so a chunk may be written
  // with non-temporal stores where that pays (ChunkDecoder::cold_output_pays).
  bool old_memory = false;
  // Called with chunk `c`'s restored bytes once checked, from the worker
  // threads, several chunks at once and in any order.
  std::function<void(std::size_t c, util::ByteSpan raw)> consume;
  // Called with chunk `c`'s restored bytes once checked, in chunk order, one
  // call at a time (a pipe); the chunks decoded ahead wait in their slots.
  std::function<void(std::size_t c, util::ByteSpan raw)> consume_in_order;
};

// What decode_container() checks besides every chunk's XXH3-64.
enum class DigestCheck { whole_file, chunks_only };

// DecompressOptions::check_digest as a DigestCheck.
inline DigestCheck digest_check(bool check_digest) {
  return check_digest ? DigestCheck::whole_file : DigestCheck::chunks_only;
}

// Decodes every chunk of an .mcp in parallel into `target`, then checks the
// whole-file BLAKE3 (hashed by the workers, util/blake3_tree.hpp) unless
// `digest` is chunks_only. With
// problems == nullptr the first damage throws Error(corrupt); otherwise
// damage is appended to *problems, in chunk order, and decoding goes on
// (consume is not called for a damaged chunk). `progress` is called from one
// thread at a time.
void decode_container(const container::Reader& reader, const BaseSource* base, unsigned threads,
                      const DecodeTarget& target, std::vector<std::string>* problems,
                      const std::function<void(std::uint64_t, std::uint64_t)>& progress = {},
                      DigestCheck digest = DigestCheck::whole_file);

// FileInfo of an opened .mcp (describe_file, CheckpointReader).
FileInfo describe_container(const container::Reader& reader, const std::string& path);

// Opens the base a delta .mcp needs and checks it is exactly that checkpoint.
// Throws Error(invalid_argument) if the file is a delta and no base is given,
// naming the recorded base; Error(invalid_argument) with both digests if the
// given base is another checkpoint.
std::unique_ptr<BaseSource> open_base_for(const container::Reader& reader,
                                          const std::optional<std::filesystem::path>& base, unsigned threads,
                                          const RemoteOptions& remote = {});

}  // namespace mithril::checkpoint
