// codec/rans_table.cpp — frequency normalisation and table coding for rANS.
#include "codec/rans_table.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "mithril/error.hpp"

namespace mithril::codec::rans::detail {
namespace {

using u8 = std::uint8_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

constexpr unsigned k_eg_max_prefix = 24;  // longer zero prefixes are corrupt

[[noreturn]] void corrupt(const char* what) { throw Error(Errc::corrupt, std::string("rans block: ") + what); }

// Costs are compared in floating point with log2_count (byte_group.hpp):
// the same answer on every CPU, so the same tie-breaks and bytes.
double log2_freq(u64 v) { return log2_count(v); }

// Bits saved by raising a frequency from f to f + 1 for a symbol seen c times.
double step_bits(u32 c, u32 f) { return static_cast<double>(c) * (log2_freq(f + 1) - log2_freq(f)); }

unsigned eg_bits(u64 v, unsigned k) { return k + 2 * static_cast<unsigned>(std::bit_width((v >> k) + 1) - 1) + 1; }

// Lengths of the alternating absent/present runs, absent first.
std::vector<unsigned> presence_runs(const Freqs& freq) {
  std::vector<unsigned> runs;
  bool present = false;
  unsigned len = 0;
  for (unsigned s = 0; s < 256; ++s) {
    if ((freq[s] != 0) != present) {
      runs.push_back(len);
      present = !present;
      len = 0;
    }
    ++len;
  }
  runs.push_back(len);
  return runs;
}

unsigned last_present(const Freqs& freq) {
  unsigned last = 0;
  for (unsigned s = 0; s < 256; ++s)
    if (freq[s]) last = s;
  return last;
}

class BitWriter {
 public:
  explicit BitWriter(u8* out) : m_out(out) {}
  void put(u64 v, unsigned n) {  // n <= 32
    m_acc |= (v & ((u64{1} << n) - 1)) << m_fill;
    m_fill += n;
    for (; m_fill >= 8; m_fill -= 8, m_acc >>= 8) m_out[m_pos++] = static_cast<u8>(m_acc);
  }
  void put_eg(u64 v, unsigned k) {
    const u64 u = (v >> k) + 1;
    const auto b = static_cast<unsigned>(std::bit_width(u));
    put(0, b - 1);
    put(1, 1);
    put(u, b - 1);
    put(v, k);
  }
  std::size_t finish() {
    if (m_fill > 0) put(0, 8 - m_fill);
    return m_pos;
  }

 private:
  u8* m_out;
  std::size_t m_pos = 0;
  u64 m_acc = 0;
  unsigned m_fill = 0;
};

// Bit at a time: tables are a few hundred bits and every read is checked.
class BitReader {
 public:
  BitReader(const u8* p, std::size_t size) : m_p(p), m_bits(size * 8) {}
  u64 get(unsigned n) {  // n <= 32
    if (n > m_bits - m_pos) corrupt("frequency table truncated");
    u64 v = 0;
    for (unsigned i = 0; i < n; ++i, ++m_pos) v |= u64{(m_p[m_pos >> 3] >> (m_pos & 7)) & 1u} << i;
    return v;
  }
  u64 get_eg(unsigned k) {
    unsigned zeros = 0;
    while (get(1) == 0)
      if (++zeros > k_eg_max_prefix) corrupt("bad code in frequency table");
    const u64 u = (u64{1} << zeros) | get(zeros);
    return ((u - 1) << k) | get(k);
  }
  std::size_t bytes_used() const { return (m_pos + 7) / 8; }

 private:
  const u8* m_p;
  std::size_t m_bits;
  std::size_t m_pos = 0;
};

}  // namespace

// The cost is separable and concave in each f_s, so a point from which no
// single-unit move between two symbols helps is optimal: start from rounding,
// repair the sum greedily, then apply improving moves until none is left.
void normalize(const Histogram& hist, u64 n, unsigned scale, Freqs& freq) {
  const u64 m = u64{1} << scale;
  // Only the present symbols take part (a block's planes often have a few
  // dozen), in byte order; the heaps live on the stack (this runs for every
  // scale tried on every block, most of them small).
  std::array<u8, 256> present;
  unsigned np = 0;
  u64 sum = 0;
  for (unsigned s = 0; s < 256; ++s) {
    const u64 c = hist[s];
    freq[s] = c == 0 ? 0 : static_cast<u32>(std::max<u64>(1, (c * m * 2 + n) / (2 * n)));
    sum += freq[s];
    if (c) present[np++] = static_cast<u8>(s);
  }
  using Item = std::pair<double, unsigned>;
  std::array<Item, 256> heap;
  std::size_t size = 0;
  // Repeatedly take the best move from a heap ordered by `better`: the
  // largest saving to raise (ties to the higher symbol), the cheapest loss
  // to lower (ties to the lower one).
  if (sum < m) {
    const auto better = std::less<Item>();
    for (unsigned i = 0; i < np; ++i) heap[size++] = {step_bits(hist[present[i]], freq[present[i]]), present[i]};
    std::make_heap(heap.begin(), heap.begin() + size, better);
    for (; sum < m; ++sum) {
      std::pop_heap(heap.begin(), heap.begin() + size, better);
      const unsigned s = heap[size - 1].second;
      ++freq[s];
      heap[size - 1] = {step_bits(hist[s], freq[s]), s};
      std::push_heap(heap.begin(), heap.begin() + size, better);
    }
  } else if (sum > m) {
    const auto better = std::greater<Item>();
    for (unsigned i = 0; i < np; ++i)
      if (freq[present[i]] > 1) heap[size++] = {step_bits(hist[present[i]], freq[present[i]] - 1), present[i]};
    std::make_heap(heap.begin(), heap.begin() + size, better);
    for (; sum > m; --sum) {
      std::pop_heap(heap.begin(), heap.begin() + size, better);
      const unsigned s = heap[--size].second;
      --freq[s];
      if (freq[s] > 1) {
        heap[size++] = {step_bits(hist[s], freq[s] - 1), s};
        std::push_heap(heap.begin(), heap.begin() + size, better);
      }
    }
  }
  // Exchange pass: rarely more than a few moves; the cap only guards against
  // floating-point surprises. Ties go to the lowest symbol.
  constexpr double k_inf = std::numeric_limits<double>::infinity();
  std::array<double, 256> up, down;
  auto refresh = [&](unsigned i) {
    const unsigned s = present[i];
    up[i] = step_bits(hist[s], freq[s]);
    down[i] = freq[s] > 1 ? step_bits(hist[s], freq[s] - 1) : k_inf;
  };
  for (unsigned i = 0; i < np; ++i) refresh(i);
  for (int iter = 0; iter < 1024 && np > 1; ++iter) {
    unsigned best_up = 0, best_down = 0;
    for (unsigned i = 1; i < np; ++i) {
      if (up[i] > up[best_up]) best_up = i;
      if (down[i] < down[best_down]) best_down = i;
    }
    if (best_up == best_down || !(up[best_up] > down[best_down] * (1.0 + 1e-12) + 1e-12)) break;
    ++freq[present[best_up]];
    --freq[present[best_down]];
    refresh(best_up);
    refresh(best_down);
  }
}

double payload_bits(const Histogram& hist, const Freqs& freq, unsigned scale) {
  double bits = 0.0;
  for (unsigned s = 0; s < 256; ++s)
    if (hist[s]) bits += static_cast<double>(hist[s]) * (scale - log2_freq(freq[s]));
  return bits;
}

TableCost table_cost(const Freqs& freq) {
  // The runs as presence_runs() gives them, counted in place (this runs for
  // every scale tried on every block).
  u64 run_bits = 0;
  {
    bool present = false;
    unsigned len = 0, i = 0;
    for (unsigned s = 0; s < 256; ++s) {
      if ((freq[s] != 0) != present) {
        run_bits += eg_bits(i++ == 0 ? len : len - 1, 0);
        present = !present;
        len = 0;
      }
      ++len;
    }
    run_bits += eg_bits(i == 0 ? len : len - 1, 0);
  }
  // The coded values (every present symbol's but the last), gathered once
  // for the orders tried.
  const unsigned last = last_present(freq);
  std::array<u32, 256> coded;
  unsigned m = 0;
  u32 widest = 0;
  for (unsigned s = 0; s < last; ++s)
    if (freq[s]) widest |= coded[m++] = freq[s] - 1;
  // From k = bit_width(every value) on, every EGk code is k + 1 bits: a
  // larger k only costs more, so the orders past it are not tried.
  const unsigned k_end = std::min(16u, static_cast<unsigned>(std::bit_width(widest)) + 1);
  TableCost best{0, std::numeric_limits<u64>::max()};
  for (unsigned k = 0; k < k_end; ++k) {
    u64 bits = run_bits + 4;
    for (unsigned j = 0; j < m; ++j) bits += eg_bits(coded[j], k);
    if (bits < best.bits) best = {k, bits};
  }
  return best;
}

std::size_t write_table(const Freqs& freq, unsigned k, u8* out) {
  BitWriter w(out);
  const auto runs = presence_runs(freq);
  for (std::size_t i = 0; i < runs.size(); ++i) w.put_eg(i == 0 ? runs[i] : runs[i] - 1, 0);
  w.put(k, 4);
  const unsigned last = last_present(freq);
  for (unsigned s = 0; s < last; ++s)
    if (freq[s]) w.put_eg(freq[s] - 1, k);
  return w.finish();
}

std::size_t read_table(const u8* p, std::size_t size, unsigned scale, Freqs& freq) {
  BitReader r(p, size);
  freq.fill(0);
  std::array<bool, 256> present{};
  unsigned nsym = 0;
  bool is_present = false;
  for (unsigned s = 0, i = 0; s < 256; ++i, is_present = !is_present) {
    const u64 len = r.get_eg(0) + (i == 0 ? 0 : 1);
    if (len > 256 - s) corrupt("symbol runs overrun the alphabet");
    std::fill_n(present.begin() + s, len, is_present);
    if (is_present) nsym += static_cast<unsigned>(len);
    s += static_cast<unsigned>(len);
  }
  if (nsym < 2) corrupt("fewer than two symbols");
  const auto k = static_cast<unsigned>(r.get(4));
  const u64 m = u64{1} << scale;
  u64 sum = 0;
  unsigned seen = 0;
  for (unsigned s = 0; s < 256; ++s) {
    if (!present[s]) continue;
    if (++seen == nsym) {
      if (sum >= m) corrupt("frequencies exceed the scale");
      freq[s] = static_cast<u32>(m - sum);
      break;
    }
    const u64 f = r.get_eg(k) + 1;
    sum += f;
    if (sum >= m) corrupt("frequencies exceed the scale");
    freq[s] = static_cast<u32>(f);
  }
  return r.bytes_used();
}

}  // namespace mithril::codec::rans::detail
