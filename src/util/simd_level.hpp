// util/simd_level.hpp — the widest SIMD instruction set Mithril's own kernels
// may use in this process: what the CPU (and the OS, which must save the wide
// registers) supports, capped by the environment variable MITHRIL_ISA.
//
// MITHRIL_ISA=avx512|avx2|sse2|scalar makes every kernel choice (byte
// grouping and histograms, rANS encode and decode, BLAKE3, XXH3) stay at or
// below that level, so that one machine can run — and test, and measure —
// the whole pipeline as a CPU without AVX-512 (or without AVX2) would; unset,
// empty or "auto" means no cap. Outputs never depend on it: every kernel
// reads and writes the same bytes. What the cap does not reach: code the
// compiler generates for the x86-64 baseline (SSE2), the non-temporal copies
// of util/cold_memory.hpp (SSE2), and the libraries' own dispatch (zstd).
// "scalar" means Mithril's portable kernels; XXH3 then runs libxxhash's
// baseline (SSE2) build.
//
// Read once, at the first call (thread-safe); an unknown value is ignored
// (no cap) and reported by simd_cap_rejected(), for the CLI's warning.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mithril::util {

enum class SimdLevel : std::uint8_t { scalar = 0, sse2 = 1, avx2 = 2, avx512 = 3 };

std::string_view simd_level_name(SimdLevel level) noexcept;
std::optional<SimdLevel> parse_simd_level(std::string_view name) noexcept;

// The cap from MITHRIL_ISA, or nullopt when there is none.
std::optional<SimdLevel> simd_cap() noexcept;
// Whether a kernel of `level` may run, as far as the cap goes (the caller
// still checks that the CPU has its instructions).
bool simd_allows(SimdLevel level) noexcept;
// MITHRIL_ISA's value when it is set but names no level (then ignored).
std::optional<std::string> simd_cap_rejected();

}  // namespace mithril::util
