#include "util/blake3_tree.hpp"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "mithril/error.hpp"

namespace mithril::util {
namespace {

constexpr std::uint64_t k_chunk = 1024;

}  // namespace

// Merges complete subtrees in file order, the way the incremental hasher's
// stack does (spec §5.1.2): a node of 2^level chunks is pushed only at a
// position aligned to its size, so the stack top is either larger or exactly
// its sibling.
//
// The chunks that straddle two pieces (one per tensor boundary) are hashed
// here, in batches of k_batch through the SIMD kernel (one at a time they
// cost 16 compressions each, a quarter of a small file's hashing): nodes that
// come after a chunk still waiting are queued behind it and reach the stack
// in order once the batch is hashed.
class Blake3Tree::Merger {
 public:
  explicit Merger(std::uint64_t last_chunk) : m_last(last_chunk) {}

  // Checks that the node tiles on from the chunks so far and queues it.
  void push(unsigned level, detail::ChainingValue cv, std::uint64_t first_chunk) {
    flush_full();
    if (first_chunk != m_chunks || !m_partial.empty() || (first_chunk & ((std::uint64_t{1} << level) - 1)) != 0)
      throw Error(Errc::internal, "Blake3Tree: pieces do not tile the input");
    m_chunks += std::uint64_t{1} << level;
    m_queue.push_back({level, cv, false});
    if (m_waiting_counters.empty()) settle();
  }

  // Bytes that belong to chunks no piece hashed whole.
  void feed(ByteSpan bytes) {
    while (!bytes.empty()) {
      flush_full();
      const std::size_t take = std::min<std::size_t>(k_chunk - m_partial.size(), bytes.size());
      m_partial.insert(m_partial.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(take));
      bytes = bytes.subspan(take);
    }
  }

  Digest finish(std::uint64_t total) {
    settle();
    if (m_chunks != m_last || m_last * k_chunk + m_partial.size() != total)
      throw Error(Errc::internal, "Blake3Tree: pieces do not cover the input");
    return detail::blake3_root(m_stack, m_partial, m_last);
  }

 private:
  static constexpr std::size_t k_batch = 16;
  struct Queued {
    unsigned level;
    detail::ChainingValue cv;
    bool waiting;  // a straddling chunk whose cv is not computed yet
  };

  // A complete chunk followed by more bytes is not the last: queue it.
  void flush_full() {
    if (m_partial.size() != k_chunk) return;
    if (m_chunks >= m_last) throw Error(Errc::internal, "Blake3Tree: more bytes than the input size");
    m_waiting_bytes.insert(m_waiting_bytes.end(), m_partial.begin(), m_partial.end());
    m_waiting_counters.push_back(m_chunks);
    ++m_chunks;
    m_partial.clear();
    m_queue.push_back({0, {}, true});
    if (m_waiting_counters.size() == k_batch) settle();
  }

  // Hashes the waiting chunks and merges the queue into the stack.
  void settle() {
    if (const std::size_t waiting = m_waiting_counters.size(); waiting != 0) {
      const std::uint8_t* at[k_batch];
      for (std::size_t i = 0; i < waiting; ++i)
        at[i] = reinterpret_cast<const std::uint8_t*>(m_waiting_bytes.data()) + i * k_chunk;
      detail::ChainingValue cvs[k_batch];
      detail::blake3_chunk_cvs(at, m_waiting_counters.data(), waiting, cvs);
      std::size_t next = 0;
      for (auto& q : m_queue)
        if (q.waiting) q.cv = cvs[next++];
      m_waiting_bytes.clear();
      m_waiting_counters.clear();
    }
    for (const auto& q : m_queue) merge(q.level, q.cv);
    m_queue.clear();
  }

  void merge(unsigned level, detail::ChainingValue cv) {
    m_merged += std::uint64_t{1} << level;
    for (std::uint64_t t = m_merged >> level; (t & 1) == 0; t >>= 1, ++level) {
      if (m_stack.empty() || m_levels.back() != level) throw Error(Errc::internal, "Blake3Tree: bad merge");
      cv = detail::blake3_parent_cv(m_stack.back(), cv);
      m_stack.pop_back();
      m_levels.pop_back();
    }
    m_stack.push_back(cv);
    m_levels.push_back(level);
  }

  std::uint64_t m_last;
  std::uint64_t m_chunks = 0;  // chunks queued or merged
  std::uint64_t m_merged = 0;  // chunks merged into the stack
  ByteVector m_partial;        // bytes of chunk number m_chunks
  std::vector<Queued> m_queue;
  // The chunks waiting to be hashed, 1 KiB each, and their chunk numbers.
  ByteVector m_waiting_bytes;
  std::vector<std::uint64_t> m_waiting_counters;
  std::vector<detail::ChainingValue> m_stack;
  std::vector<unsigned> m_levels;
};

Blake3Tree::Blake3Tree(std::uint64_t total_size, std::size_t pieces, std::uint64_t piece_size)
    : m_total(total_size),
      m_piece_size(piece_size == 0 ? k_range_piece : piece_size),
      m_last_chunk(total_size == 0 ? 0 : (total_size - 1) / k_chunk),
      m_pieces(pieces),
      m_merger(std::make_unique<Merger>(m_last_chunk)) {}

Blake3Tree::~Blake3Tree() = default;

std::size_t Blake3Tree::pieces_in(std::uint64_t offset, std::uint64_t size, std::uint64_t piece) noexcept {
  if (size == 0) return 1;
  if (piece == 0) piece = k_range_piece;
  return static_cast<std::size_t>((offset + size + piece - 1) / piece - offset / piece);
}

std::vector<std::size_t> Blake3Tree::first_pieces(
    std::size_t n, const std::function<std::pair<std::uint64_t, std::uint64_t>(std::size_t)>& range,
    std::uint64_t piece_size) {
  std::vector<std::size_t> first(n + 1, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const auto [offset, size] = range(i);
    first[i + 1] = first[i] + pieces_in(offset, size, piece_size);
  }
  return first;
}

std::size_t Blake3Tree::Feeder::piece_end(std::size_t at) const noexcept {
  const std::uint64_t piece = m_tree.m_piece_size;
  const std::uint64_t pos = m_offset + at;
  const std::uint64_t room = (pos / piece + 1) * piece - pos;
  return at + static_cast<std::size_t>(std::min<std::uint64_t>(room, m_range.size() - at));
}

void Blake3Tree::Feeder::advance(std::size_t final_bytes) {
  final_bytes = std::min(final_bytes, m_range.size());
  while (m_done < m_range.size()) {
    const std::size_t end = piece_end(m_done);
    if (end > final_bytes) return;
    m_tree.add(m_index++, m_offset + m_done, m_range.subspan(m_done, end - m_done));
    m_done = end;
  }
}

void Blake3Tree::Feeder::finish() {
  if (!m_range.empty()) {
    advance(m_range.size());
  } else if (!m_empty_added) {
    m_tree.add(m_index++, m_offset, m_range);
    m_empty_added = true;
  }
}

void Blake3Tree::add(std::size_t index, std::uint64_t offset, ByteSpan data) {
  if (index >= m_pieces.size()) throw Error(Errc::internal, "Blake3Tree: piece index out of range");
  Piece& p = m_pieces[index];
  p.offset = offset;
  p.size = data.size();
  p.nodes.clear();
  const std::uint64_t end = offset + data.size();
  const std::uint64_t first = (offset + k_chunk - 1) / k_chunk;
  const std::uint64_t stop = std::min(end / k_chunk, m_last_chunk);  // whole chunks [first, stop)
  if (first >= stop) {
    p.head.assign(data.begin(), data.end());
    p.tail.clear();
    merge_ready(index);
    return;
  }
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(data.data());
  const std::size_t head = static_cast<std::size_t>(first * k_chunk - offset);
  const std::size_t tail_at = static_cast<std::size_t>(stop * k_chunk - offset);
  p.head.assign(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(head));
  p.tail.assign(data.begin() + static_cast<std::ptrdiff_t>(tail_at), data.end());
  // Largest aligned power-of-two subtrees, left to right.
  detail::blake3_aligned_subtrees(bytes + head, first, stop - first, p.nodes);
  merge_ready(index);
}

void Blake3Tree::merge_ready(std::size_t index) {
  std::unique_lock lock(m_mutex);
  if (m_pieces[index].added && m_failure.empty()) m_failure = fmt::format("Blake3Tree: piece {} added twice", index);
  m_pieces[index].added = true;
  if (m_merging) return;  // that add() merges this piece too, once it gets here
  m_merging = true;
  // The position merged up to: the next piece must start there.
  const auto merged_end = [this] { return m_next == 0 ? 0 : m_pieces[m_next - 1].offset + m_pieces[m_next - 1].size; };
  while (m_failure.empty() && m_next < m_pieces.size() && m_pieces[m_next].added) {
    Piece& p = m_pieces[m_next];
    const bool tiles = p.offset == merged_end();
    lock.unlock();  // the merger and merged pieces are this thread's alone
    std::string failure;
    if (!tiles) {
      failure = "Blake3Tree: pieces do not tile the input";
    } else {
      try {
        m_merger->feed(p.head);
        for (const auto& n : p.nodes) m_merger->push(n.level, n.cv, n.first_chunk);
        m_merger->feed(p.tail);
      } catch (const Error& e) {
        failure = e.what();
      }
    }
    // Only the bytes and subtrees go; offset and size stay for the next check.
    p.head = {};
    p.nodes = {};
    p.tail = {};
    lock.lock();
    if (!failure.empty() && m_failure.empty()) m_failure = std::move(failure);
    ++m_next;
  }
  m_merging = false;
}

Digest Blake3Tree::digest() {
  const std::lock_guard lock(m_mutex);
  if (!m_failure.empty()) throw Error(Errc::internal, m_failure);
  if (m_merging || m_next != m_pieces.size())
    throw Error(Errc::internal, "Blake3Tree: pieces do not tile the input");
  return m_merger->finish(m_total);
}

}  // namespace mithril::util
