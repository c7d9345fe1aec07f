// util/kernel_memo.hpp — kernel choices made by timing, remembered from one
// process to the next.
//
// The rANS kernels are chosen by timing each candidate in every process that
// codes (codec/rans_dispatch.cpp): ~1 ms a direction on AMD Zen 4, a fixed
// cost in every `mithril decompress` and every first decompress() of a Python
// process (a 256 KiB bf16 file: 5.0 ms a decompress, 4.0 with the kernel
// forced). The same build on the same CPU makes the same choice, so the first
// processes write it down and the later ones read it (~20 us), as PyTorch's
// and Triton's caches keep their autotuning.
//
// The file: $MITHRIL_KERNEL_MEMO if set (empty, "0" or "off": nothing is
// remembered, every process times), else $XDG_CACHE_HOME/mithril/kernels,
// else ~/.cache/mithril/kernels. One line a choice: this build's GNU build
// id, the CPU (CPUID vendor, family, model, stepping, brand string), the
// question (e.g. "rans-decode avx2,avx512x,avx2x,avx512": the direction and
// the candidates, which MITHRIL_ISA changes), the answer and how many
// timings in a row gave it (1 or 2), tab-separated. An answer is trusted once
// two processes' timings agreed on it: a single timing taken while the
// machine was busy elsewhere could pick a slower kernel (on an Intel Xeon VM,
// 5 of 18 builds, most timed while builds and tests loaded both cores, had
// remembered avx2 or avx2x as their encoder, which bench_rans puts 12-54%
// behind avx512 there), and a remembered choice is never timed again.
// Another build (its build id differs), CPU or cap asks anew. A file that
// cannot be read or written, or a line that does not parse, is as good as no
// file: remembering is never worth an error. It is rewritten whole (a
// temporary renamed into place) and keeps the last 64 lines. Deleting it
// makes the next process time again.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace mithril::util {

// Where choices are remembered; nullopt when that is turned off or no
// directory can be named (no HOME), or this build has no build id.
std::optional<std::filesystem::path> kernel_memo_path();

// The answer remembered for `question` on this CPU and build, if two
// timings in a row gave it.
std::optional<std::string> recall_kernel(std::string_view question);

// Writes down a timing's `answer` for `question` (replacing an earlier one,
// and trusted from now on if it is the same as that one's); returns false
// where it could not (the file is then as it was).
bool remember_kernel(std::string_view question, std::string_view answer);

// This binary's (or shared object's) GNU build id in hex, empty if it has
// none.
std::string build_id();

}  // namespace mithril::util
