// codec/rans_table.hpp — the rANS model: frequency normalisation and the
// compact frequency-table encoding (grammar in rans.cpp). Internal to the
// rANS coder; exposed as a header so that the coder stays one job per file.
//
// Thread-safety: reentrant, no shared state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "codec/byte_group.hpp"

namespace mithril::codec::rans::detail {

constexpr unsigned k_min_scale = 8;
constexpr unsigned k_max_scale = 16;
// The largest a table can be, in bytes (runs + k + 255 codes), with slack.
constexpr std::size_t k_max_table_bytes = 2048;

using Freqs = std::array<std::uint32_t, 256>;

// Scales `hist` (total n, 2..2^scale present symbols) to frequencies summing
// to exactly 2^scale, every present symbol >= 1 and absent ones 0, so as to
// minimise sum c_s * log2(2^scale / f_s). Deterministic across CPUs (no libm).
void normalize(const Histogram& hist, std::uint64_t n, unsigned scale, Freqs& freq);

// Coded size of `hist` under `freq`, in bits (the payload, no table).
double payload_bits(const Histogram& hist, const Freqs& freq, unsigned scale);

struct TableCost {
  unsigned k = 0;          // exp-Golomb order giving the smallest table
  std::uint64_t bits = 0;  // table size with that order
};
TableCost table_cost(const Freqs& freq);

// Writes the table for `freq` (at least two symbols) with order k into out,
// which must hold k_max_table_bytes. Returns the bytes written, which is
// ceil(table_cost(freq).bits / 8) when k is the cost's order.
std::size_t write_table(const Freqs& freq, unsigned k, std::uint8_t* out);

// Parses a table from p[0, size) for the given scale, validating everything:
// at least two symbols, frequencies >= 1 summing to exactly 2^scale. Returns
// the bytes it used. Throws Error(corrupt) otherwise; never reads past size.
std::size_t read_table(const std::uint8_t* p, std::size_t size, unsigned scale, Freqs& freq);

}  // namespace mithril::codec::rans::detail
