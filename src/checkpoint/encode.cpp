#include "checkpoint/encode.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>

#include <pthread.h>

#include <fmt/format.h>

#include "checkpoint/parallel.hpp"
#include "checkpoint/source.hpp"
#include "container/writer.hpp"
#include "mithril/error.hpp"
#include "mithril/version.hpp"
#include "storage/remote_io.hpp"
#include "util/atomic_file.hpp"
#include "util/blake3_tree.hpp"
#include "util/clock.hpp"
#include "util/cold_memory.hpp"
#include "util/fresh_memory.hpp"
#include "util/xxh3.hpp"

namespace mithril::checkpoint {
namespace {

// What every output of a compression starts from: the base opened and its
// tensors matched against the plan's (a delta), and the index as far as
// planning knows it — everything but the chunk records' results and the
// digest, whose sizes are fixed, so the index's size is known — serialized
// ahead (container::prepare_index).
struct ContainerStart {
  std::optional<BaseSource> base;
  container::Index index;
  container::PreparedIndex prepared;
  std::uint16_t minor = container::k_minor;  // the file's version: 1.1 with shared chunks

  ContainerStart(SourcePlan& plan, const std::string& source_name, std::uint64_t source_size,
                 const CompressOptions& options, const ChunkSource& chunk_bytes) {
    if (options.base) {
      base.emplace(*options.base, options.threads, options.remote);
      match_base(plan, *base);
    }
    share_small_chunks(plan, options.chunk_size, chunk_bytes);
    index.source.name = source_name;
    index.source.size = source_size;
    index.source_kind = plan.kind;
    index.metadata = options.metadata;
    index.created_by = std::string("mithril ") + version();
    index.segments = plan.segments;
    index.chunks.resize(plan.chunks.size());
    for (std::size_t i = 0; i < plan.chunks.size(); ++i) {  // the rest of each record comes with its coding
      index.chunks[i].segment = plan.chunks[i].segment;
      index.chunks[i].last_segment = plan.chunks[i].last_segment;
    }
    minor = container::minor_version_for(index);
    if (base) index.base = base->identity();
    prepared = container::prepare_index(index);
  }
  ContainerStart(const ContainerStart&) = delete;
  ContainerStart& operator=(const ContainerStart&) = delete;

  const BaseSource* base_source() const noexcept { return base ? &*base : nullptr; }

  // The container's size at most: a payload is never larger than its raw
  // bytes (the coder falls back to the raw layout), and the index's size
  // does not depend on the coding.
  std::uint64_t output_bound(const SourcePlan& plan) const {
    std::uint64_t bound = container::k_header_size + container::Writer::max_tail_size(index, &prepared);
    for (const auto& c : plan.chunks) bound += c.size;
    return bound;
  }
};

}  // namespace

std::size_t detail::pick_encoder(std::span<const WaitingEncoder> waiting, int level, std::size_t chunk_bytes) {
  const std::size_t need = 2 * chunk_bytes;
  std::size_t best = waiting.size();
  for (std::size_t i = 0; i < waiting.size(); ++i) {
    const std::size_t have = waiting[i].buffer_bytes;
    if (waiting[i].level != level || (have >= k_grown_encoder && have / 16 > need)) continue;
    if (best == waiting.size()) {
      best = i;
      continue;
    }
    const std::size_t held = waiting[best].buffer_bytes;
    const bool fits = have >= need, best_fits = held >= need;
    if (fits ? (!best_fits || have < held) : (!best_fits && have > held)) best = i;
  }
  return best;
}

namespace {

// Encoders kept between compressions. A worker grows its encoder's buffers
// (the payload and a plane's coding: about twice a chunk) in that worker's
// malloc arena, and glibc gives a worker arena's free memory back to the
// kernel when the call ends, so every call on 2+ threads faulted its
// encoders' pages in again: 7,500 page faults (30 MiB) per compression of a
// 97 MiB fp32 file from Python on 2 threads, a quarter of its time in the
// kernel. Up to k_kept_bytes of encoder buffers wait here for the next call
// (kept until exit); a call trims the pool back to that when it ends, freeing
// the encoders beyond it as before.
class EncoderPool {
 public:
  static constexpr std::size_t k_kept_bytes = std::size_t{64} << 20;

  // An encoder of `level` for a chunk of `chunk_bytes` (pick_encoder), a
  // new one if none of those waiting will do.
  std::unique_ptr<codec::ChunkEncoder> take(int level, std::size_t chunk_bytes) {
    {
      const std::lock_guard lock(m_mutex);
      m_candidates.clear();
      for (const auto& e : m_free) m_candidates.push_back({e->level(), e->buffer_bytes()});
      const std::size_t best = detail::pick_encoder(m_candidates, level, chunk_bytes);
      if (best != m_free.size()) {
        auto e = std::move(m_free[best]);
        m_free.erase(m_free.begin() + static_cast<std::ptrdiff_t>(best));
        m_bytes -= e->buffer_bytes();
        return e;
      }
    }
    return std::make_unique<codec::ChunkEncoder>(level);
  }

  // Kept whatever the total: a compression gives its encoders back item by
  // item and takes them again (trim() applies the limit after it).
  void give_back(std::unique_ptr<codec::ChunkEncoder>& e) {
    if (!e) return;
    const std::size_t n = e->buffer_bytes();
    const std::lock_guard lock(m_mutex);
    m_bytes += n;
    m_free.push_back(std::move(e));
  }

  // Frees the encoders given back first until at most k_kept_bytes wait.
  void trim() {
    std::vector<std::unique_ptr<codec::ChunkEncoder>> freed;
    {
      const std::lock_guard lock(m_mutex);
      std::size_t drop = 0;
      while (drop < m_free.size() && m_bytes > k_kept_bytes) m_bytes -= m_free[drop++]->buffer_bytes();
      freed.assign(std::make_move_iterator(m_free.begin()), std::make_move_iterator(m_free.begin() + static_cast<std::ptrdiff_t>(drop)));
      m_free.erase(m_free.begin(), m_free.begin() + static_cast<std::ptrdiff_t>(drop));
    }
  }

 private:
  std::mutex m_mutex;
  std::vector<std::unique_ptr<codec::ChunkEncoder>> m_free;
  std::vector<detail::WaitingEncoder> m_candidates;  // m_free's, for pick_encoder
  std::size_t m_bytes = 0;
};

// A forked child (a DataLoader worker forked while an async save compresses
// on another thread) may inherit the pool's mutex locked: it starts with an
// empty pool of its own (the parent's encoders stay the parent's; the
// child's copy is left alone, its pages shared copy-on-write).
EncoderPool* g_encoder_pool = nullptr;

EncoderPool& encoder_pool() {
  static const bool registered = [] {
    g_encoder_pool = new EncoderPool;  // lives until exit, as a function-local static would
    ::pthread_atfork(nullptr, nullptr, [] { g_encoder_pool = new EncoderPool; });
    return true;
  }();
  (void)registered;
  return *g_encoder_pool;
}

// The bytes of shared chunk `c` (share_small_chunks): its tensors' bytes,
// each asked of `chunk_bytes` as the one-tensor chunk it was planned as (a
// ChunkSource is only ever asked for those); where they lie back to back in
// memory (a mapped file, a buffer) the view as it is, else (tensors in
// separate buffers) copied into `buffer`, which outlives the chunk's writing
// (a stored payload may be a view of its bytes).
util::ByteSpan shared_chunk_bytes(const SourcePlan& plan, const ChunkPlan& c, const ChunkSource& chunk_bytes,
                                  util::ByteVector& buffer) {
  const auto member = [&](std::uint32_t s) {
    const auto& seg = plan.segments[s];
    return chunk_bytes(ChunkPlan{seg.offset, static_cast<std::uint32_t>(seg.size), s, c.kind, s});
  };
  const std::byte* start = nullptr;
  std::size_t at = 0;
  bool adjacent = true;
  for (std::uint32_t s = c.segment; s <= c.last_segment; ++s) {
    const util::ByteSpan b = member(s);
    if (s == c.segment) start = b.data();
    else if (b.data() != start + at) adjacent = false;
    at += b.size();
  }
  if (at != c.size) throw Error(Errc::internal, "shared chunk: its tensors' bytes do not add up to it");
  if (adjacent) return util::ByteSpan(start, c.size);
  buffer.resize(c.size);
  at = 0;
  for (std::uint32_t s = c.segment; s <= c.last_segment; ++s) {
    const util::ByteSpan b = member(s);
    if (!b.empty()) std::memcpy(buffer.data() + at, b.data(), b.size());
    at += b.size();
  }
  return util::ByteSpan(buffer.data(), c.size);
}

// The pieces a chunk is read in (util::Blake3Tree::Feeder): each is hashed
// (BLAKE3 prefetching it from memory), checksummed (XXH3) and grouped while
// it is in cache. 128 KiB rather than the tree's 512 KiB (which a
// decompression keeps: its digest is fed from output already in cache, and
// there 128 KiB measured 1-2.5% slower): the piece then stays in L2 beside
// the grouped planes being written. bench_pipeline, one thread, compression
// into a reused buffer, 512 -> 128 KiB, medians of 3-4 alternations (Intel
// Xeon with AMX): fp16 58.3 -> 54.8 ms (MITHRIL_ISA=avx2) and 49.3 -> 46.4
// (AVX-512 kernels), two threads 28.3 -> 27.1; bf16, AdamW state and fp32
// level to 1.6% faster, MiniLM level (84.2 -> 85.3). 64 and 256 KiB were
// slower than 128 on fp16.
constexpr std::uint64_t k_digest_piece = std::uint64_t{128} << 10;

// Codes every chunk into `writer` (payloads, then index and footer).
CompressResult encode_chunks(container::Writer& writer, ContainerStart& start, const SourcePlan& plan,
                             const ChunkSource& chunk_bytes, const CompressOptions& options,
                             std::chrono::steady_clock::time_point started) {
  container::Index& index = start.index;
  const BaseSource* base = start.base_source();
  const std::uint64_t source_size = index.source.size;
  const unsigned threads = resolve_threads(options.threads);
  // Items pass the ordered stage (offsets, index records) in order and hold
  // their slot until written, so while one worker codes a large tensor the
  // others fill slots with the small ones after it and then wait for it.
  // With 2 slots per worker, a bf16 model's norms and biases between its
  // matrices left each of 2 workers idle 0.3-0.4 ms at every large tensor
  // (1 -> 2 threads 1.66x); 2T + 4 slots still left them waiting on a GPT's
  // layers (6-8 small tensors between matrices): 4T + 8 codes its bf16 file
  // on 2 threads 7% faster (fp32 3-5%, MiniLM level; docs/benchmarks.md,
  // session 31). A waiting slot holds one coded payload, mostly a small
  // tensor's: peak RSS did not move. One thread uses one slot.
  const std::size_t in_flight = threads == 1 ? 1 : 4 * static_cast<std::size_t>(threads) + 8;
  // An encoder per item in flight, taken from the pool when the item starts
  // and given back once it is written: its payload stays in the encoder's
  // buffer, untouched, until then (no copy). The pool hands out the waiting
  // encoder whose buffers best fit the chunk, so only as many encoders grow
  // chunk-sized buffers as large chunks are coded or waiting at once, not
  // one per slot: with an encoder per slot (16 on 2 threads) a one-shot
  // `mithril compress` of a 48.7 MiB bf16 file took 8,300-8,500 page faults
  // (buffers zero-filled as they grew) against 2,400 on one thread; now
  // 5,100-5,600 (docs/benchmarks.md, session 43).
  struct Slot {
    std::unique_ptr<codec::ChunkEncoder> encoder;
    codec::EncodedChunk encoded;
    util::Xxh3Stream xxh3_stream;
    std::uint64_t xxh3 = 0;
    util::ByteVector gathered;  // a shared chunk's bytes, when its tensors lie apart
  };
  std::vector<Slot> slots(std::min<std::size_t>(in_flight, std::max<std::size_t>(1, plan.chunks.size())));
  const auto first_piece = util::Blake3Tree::first_pieces(
      plan.chunks.size(),
      [&](std::size_t i) {
        return std::pair<std::uint64_t, std::uint64_t>{plan.chunks[i].source_offset, plan.chunks[i].size};
      },
      k_digest_piece);
  util::Blake3Tree digest(source_size, first_piece.back(), k_digest_piece);
  std::uint64_t done = 0;
  const bool positional = writer.is_positional();
  // The pool back to its limit when the items are done, also after a failure.
  struct Trim {
    ~Trim() { encoder_pool().trim(); }
  } trim_after;

  run_pipeline(
      plan.chunks.size(), threads, slots.size(),
      [&](std::size_t i, std::size_t s) {
        const auto& c = plan.chunks[i];
        Slot& slot = slots[s];
        slot.encoder = encoder_pool().take(options.level, c.size);
        const util::ByteSpan raw =
            c.last_segment == c.segment ? chunk_bytes(c) : shared_chunk_bytes(plan, c, chunk_bytes, slot.gathered);
        const util::ByteSpan base_bytes = base ? base->chunk_base(plan.segments[c.segment], c) : util::ByteSpan{};
        // The chunk's two checksums, its XXH3 for the index and its part of
        // the whole-file BLAKE3, computed together piece by piece
        // (Blake3Tree::Feeder's pieces, k_digest_piece of the file) just before the
        // encoder groups each piece: a piece is read from memory once for the
        // two checksums and the grouping, instead of three passes over a
        // 4 MiB chunk (two workers share the memory bandwidth; cache-resident
        // work scales). BLAKE3 reads each piece first: its kernels prefetch
        // ahead, so the fetch from memory hides behind the hashing, and XXH3
        // then finds the piece in L2 (XXH3 first took 11% of bf16
        // compression under MITHRIL_ISA=avx2 waiting on memory; BLAKE3 first,
        // with the prefetch reaching into the next batch, 49 -> 45 ms;
        // docs/benchmarks.md, session 50).
        util::Blake3Tree::Feeder feed(digest, first_piece[i], c.source_offset, raw);
        slot.xxh3_stream.reset();
        const codec::ChunkEncoder::Reader read = [&](std::size_t at) {
          const std::size_t end = feed.piece_end(at);
          feed.advance(end);
          slot.xxh3_stream.update(raw.subspan(at, end - at));
          return end;
        };
        slot.encoded = slot.encoder->encode(raw, c.kind, base_bytes, &read, /*apart=*/true);
        feed.finish();
        slot.xxh3 = slot.xxh3_stream.digest();
      },
      [&](std::size_t i, std::size_t s) {
        const auto& c = plan.chunks[i];
        const Slot& slot = slots[s];
        container::ChunkRecord& r = index.chunks[i];
        const codec::EncodedChunk& e = slot.encoded;
        if (positional) {
          r.file_offset = writer.reserve(e.size());
        } else {
          r.file_offset = writer.append(e.payload);
          writer.append(e.tail);
        }
        r.source_offset = c.source_offset;
        r.raw_size = c.size;
        r.stored_size = static_cast<std::uint32_t>(e.size());
        r.raw_xxh3 = slot.xxh3;
        r.layout = slot.encoded.layout;
        r.width = slot.encoded.width;
        r.group_mode = slot.encoded.group_mode;
        r.residual = slot.encoded.residual;
        done += c.size;
        if (options.progress) options.progress(done, source_size);
      },
      [&](std::size_t i, std::size_t s) {
        Slot& slot = slots[s];
        if (positional) {
          const codec::EncodedChunk& e = slot.encoded;
          writer.write_at(index.chunks[i].file_offset, e.payload);
          writer.write_at(index.chunks[i].file_offset + e.payload.size(), e.tail);
        }
        // Only once its item is written: an item that failed frees its encoder.
        slot.encoded = {};
        encoder_pool().give_back(slot.encoder);
      });

  // A local base that shrank under its mapping gave zeros: deltas coded
  // against them would not restore (util::install_bus_error_recovery()).
  if (base) base->check_intact();
  index.source.blake3 = digest.digest();
  CompressResult result;
  result.source_bytes = source_size;
  result.output_bytes = writer.finish(index, &start.prepared);
  result.source_kind = plan.kind;
  result.source_blake3 = util::to_hex(index.source.blake3);
  result.tensors = plan.tensor_count;
  result.chunks = plan.chunks.size();
  result.seconds = util::seconds_since(started);
  return result;
}

}  // namespace

void check_level(int level) {
  if (level < k_min_level || level > k_max_level)
    throw Error(Errc::invalid_argument,
                fmt::format("compression level {} is out of range ({}..{})", level, k_min_level, k_max_level));
}

namespace {

// A sink that hands every write to an OrderedWriter (a pipe): nothing to
// publish or discard, and written only in order.
class WriterSink final : public util::ByteSink {
 public:
  explicit WriterSink(const OrderedWriter& write) : m_write(write) {}
  void write(util::ByteSpan data) override {
    m_write(data);
    m_size += data.size();
  }
  void commit() override {}
  std::uint64_t size() const noexcept override { return m_size; }
  const std::string& name() const noexcept override { return m_name; }

 private:
  const OrderedWriter& m_write;
  std::uint64_t m_size = 0;
  std::string m_name = "-";
};

// The container into `sink`: at known offsets by the workers where it can
// (a local file), else in order (an upload, a pipe). The caller publishes it.
CompressResult write_to_sink(util::ByteSink& sink, SourcePlan plan, const std::string& source_name,
                             std::uint64_t source_size, const ChunkSource& chunk_bytes,
                             const CompressOptions& options, std::chrono::steady_clock::time_point started) {
  ContainerStart start(plan, source_name, source_size, options, chunk_bytes);
  // A local file's blocks allocated for the bound up front, cut back at the
  // end: the workers' writes then skip ext4's delayed allocation
  // (AtomicFile::preallocate).
  if (sink.can_write_at()) sink.preallocate(start.output_bound(plan));
  container::Writer writer =
      sink.can_write_at()
          ? container::Writer::positional([&sink](std::uint64_t at, util::ByteSpan b) { sink.write_at(at, b); },
                                          start.minor)
          : container::Writer([&sink](util::ByteSpan b) { sink.write(b); }, start.minor);
  return encode_chunks(writer, start, plan, chunk_bytes, options, started);
}

}  // namespace

CompressResult write_container(const std::filesystem::path& output, SourcePlan plan, const std::string& source_name,
                               std::uint64_t source_size, const ChunkSource& chunk_bytes,
                               const CompressOptions& options, std::chrono::steady_clock::time_point started,
                               const std::function<void()>& before_commit) {
  // A local AtomicFile (written at known offsets by the workers), or a
  // streaming multipart upload when `output` is a URL (written in order);
  // either appears only at commit() and is discarded (the upload aborted) on
  // any exception.
  const auto out = storage::open_sink(output.string(), options.force ? util::Overwrite::allow : util::Overwrite::refuse,
                                      storage_options(options.remote),
                                      options.sync ? util::Durability::sync : util::Durability::none);
  CompressResult result = write_to_sink(*out, std::move(plan), source_name, source_size, chunk_bytes, options, started);
  if (before_commit) before_commit();
  if (options.detach)
    result.upload_token = out->detach();
  else
    out->commit();
  result.seconds = util::seconds_since(started);
  return result;
}

CompressResult write_container(const OrderedWriter& write, SourcePlan plan, const std::string& source_name,
                               std::uint64_t source_size, const ChunkSource& chunk_bytes,
                               const CompressOptions& options, std::chrono::steady_clock::time_point started,
                               const std::function<void()>& before_commit) {
  WriterSink sink(write);
  auto result = write_to_sink(sink, std::move(plan), source_name, source_size, chunk_bytes, options, started);
  if (before_commit) before_commit();
  return result;
}

CompressResult write_container_to_memory(SourcePlan plan, const std::string& source_name, std::uint64_t source_size,
                                         const ChunkSource& chunk_bytes, const CompressOptions& options,
                                         std::chrono::steady_clock::time_point started,
                                         const OutputAllocator& allocate) {
  ContainerStart start(plan, source_name, source_size, options, chunk_bytes);
  const std::uint64_t bound = start.output_bound(plan);
  const util::MutableByteSpan memory = allocate(bound);
  if (memory.size() < bound) throw Error(Errc::internal, "in-memory compress: output buffer smaller than its bound");
  // A new buffer: a payload's pages are mapped a piece at a time just before
  // it is copied there (the zeroed lines still in cache), as huge pages where
  // that pays (util/fresh_memory.hpp). A buffer whose pages are all mapped
  // already (reused: a caller's staging buffer) needs no prefaulting, and its
  // old contents are not in cache: payloads go there with non-temporal
  // stores, which skip reading every overwritten line first
  // (util/cold_memory.hpp) — memory traffic that two workers share.
  const bool resident = util::mapped_and_resident(memory.data(), memory.size());
  util::FreshMemory fresh(memory.data(), resident ? 0 : memory.size());
  container::Writer writer = container::Writer::positional([memory, &fresh, resident](std::uint64_t at,
                                                                                      util::ByteSpan b) {
    if (at > memory.size() || b.size() > memory.size() - at)
      throw Error(Errc::internal, "in-memory compress: container larger than its bound");
    if (resident) {
      util::copy_streaming(memory.data() + at, b.data(), b.size());
      util::stream_fence();
      return;
    }
    constexpr std::size_t k_piece = 256 * 1024;
    for (std::size_t done = 0; done < b.size(); done += k_piece) {
      const std::size_t n = std::min(k_piece, b.size() - done);
      fresh.prefault(memory.data() + at + done, n);
      std::memcpy(memory.data() + at + done, b.data() + done, n);
    }
  }, start.minor);
  return encode_chunks(writer, start, plan, chunk_bytes, options, started);
}

}  // namespace mithril::checkpoint
