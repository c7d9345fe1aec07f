// checkpoint/decode.cpp — decode_container(): every chunk decoded, checked
// (XXH3) and hashed into the whole-file BLAKE3 by the workers, and handed to
// the target at its known source offset; nothing runs in order.
#include <atomic>
#include <mutex>
#include <optional>

#include <fmt/format.h>

#include "checkpoint/parallel.hpp"
#include "checkpoint/source.hpp"
#include "codec/chunk_codec.hpp"
#include "mithril/error.hpp"
#include "util/blake3_tree.hpp"
#include "util/fresh_memory.hpp"

namespace mithril::checkpoint {
namespace {

constexpr std::size_t k_read_ahead_window = 32 << 20;
constexpr std::size_t k_read_ahead_windows = 4;  // memory: 128 MiB of fetched windows at most

}  // namespace

void decode_container(const container::Reader& reader, const BaseSource* base, unsigned threads,
                      const DecodeTarget& target, std::vector<std::string>* problems,
                      const std::function<void(std::uint64_t, std::uint64_t)>& progress, DigestCheck digest) {
  const auto& index = reader.index();
  threads = resolve_threads(threads);
  const std::size_t in_flight = std::max<std::size_t>(2, 2 * static_cast<std::size_t>(threads));
  struct Slot {
    util::ByteVector raw;     // decoded bytes, unless the target places them
    util::ByteVector stored;  // fetched payload (remote containers)
    codec::ChunkDecoder decoder;
    util::ByteSpan restored;  // for consume_in_order: the chunk's checked bytes
  };
  std::vector<Slot> slots(in_flight);
  const bool whole = digest == DigestCheck::whole_file;
  // The whole-file BLAKE3 is fed each chunk's pieces as the decoder writes
  // them (still in cache), Blake3Tree::Feeder's 512 KiB pieces.
  const auto first_piece = util::Blake3Tree::first_pieces(whole ? index.chunks.size() : 0, [&](std::size_t i) {
    return std::pair<std::uint64_t, std::uint64_t>{index.chunks[i].source_offset, index.chunks[i].raw_size};
  });
  util::Blake3Tree tree(whole ? index.source.size : 0, first_piece.back());
  // Damage per chunk, reported in chunk order afterwards.
  std::vector<std::string> damage(problems ? index.chunks.size() : 0);
  std::atomic<bool> damaged{false};
  // Every chunk is read, roughly in order: a remote container is fetched in
  // large windows (one ranged request each, several in parallel) rather than
  // chunk by chunk.
  std::optional<util::ReadAheadSource> ahead;
  if (!reader.source().memory_resident()) ahead.emplace(reader.source(), k_read_ahead_window, k_read_ahead_windows);
  std::mutex progress_mutex;
  std::uint64_t done = 0;
  // The ordered stage, for a target written in order (a damaged chunk has
  // thrown before it: problems are only collected without it).
  PipelineStage in_order;
  if (target.consume_in_order)
    in_order = [&](std::size_t i, std::size_t s) { target.consume_in_order(i, slots[s].restored); };

  // A local container or base that shrank while it was read gave zeros
  // (util::install_bus_error_recovery()): said as such, before any damage
  // that the zeros seem to be.
  const auto intact = [&] { check_read_intact(nullptr, &reader, base); };
  const auto decode_one = [&](std::size_t i, std::size_t s) {
    const auto& r = index.chunks[i];
    Slot& slot = slots[s];
    util::MutableByteSpan out = target.place ? target.place(i) : util::MutableByteSpan{};
    if (target.place && out.size() != r.raw_size) throw Error(Errc::internal, "decode: target span of the wrong size");
    const std::string what = reader.name() + ": " + container::describe_chunk(index, i);
    bool ok = true;
    try {
      util::ByteSpan base_bytes;
      if (r.residual != container::Residual::none) {
        if (!base) throw Error(Errc::invalid_argument, what + ": delta chunk but no base given");
        base_bytes = base->chunk_base(index.segments[r.segment], r);
      }
      const util::ByteSpan payload =
          ahead ? ahead->read(r.file_offset, r.stored_size, slot.stored) : reader.payload(i, slot.stored);
      // A buffer is sized from the record only once the payload can fill it.
      codec::ChunkDecoder::check_payload(payload, r, what);
      if (!target.place) {
        util::grow_populated(slot.raw, r.raw_size);
        out = util::MutableByteSpan(slot.raw.data(), r.raw_size);
      }
      codec::ChunkDecoder::Hooks hooks;
      if (target.place) hooks.prepare = target.prepare;
      // The whole-file BLAKE3 reads each piece back from out (in cache).
      hooks.cold_output = target.place && target.old_memory && !target.prepare && !whole &&
                          codec::ChunkDecoder::cold_output_pays(out);
      std::optional<util::Blake3Tree::Feeder> feed;
      if (whole) {
        feed.emplace(tree, first_piece[i], r.source_offset, out);
        hooks.written = [&feed](std::size_t n) { feed->advance(n); };
      }
      slot.decoder.decode(payload, r, out, base_bytes, what, &hooks);
      if (feed) feed->finish();
    } catch (const Error& e) {
      if (!problems || e.code() != Errc::corrupt) throw;
      damage[i] = e.what();
      damaged = true;
      ok = false;
    }
    // Each payload is read once: a mapped container's pages need not stay in
    // this process (peak RSS is the chunks in flight, not the whole input).
    if (!ahead) reader.source().release(r.file_offset, r.stored_size);
    if (ok && target.consume) target.consume(i, out);
    slot.restored = ok ? util::ByteSpan(out) : util::ByteSpan{};
    if (progress) {
      std::lock_guard lock(progress_mutex);
      done += r.raw_size;
      progress(done, index.source.size);
    }
  };
  util::read_then_check([&] { run_pipeline(index.chunks.size(), threads, in_flight, decode_one, in_order); }, intact);

  if (damaged) {
    for (auto& d : damage)
      if (!d.empty()) problems->push_back(std::move(d));
    return;
  }
  if (!whole) return;
  const auto restored = tree.digest();
  if (restored != index.source.blake3) {
    const std::string msg = fmt::format("{}: whole-file BLAKE3 mismatch: restored {} but the original was {}",
                                        reader.name(), util::to_hex(restored), util::to_hex(index.source.blake3));
    if (!problems) throw Error(Errc::corrupt, msg);
    problems->push_back(msg);
  }
}

}  // namespace mithril::checkpoint
