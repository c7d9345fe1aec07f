// mithril/version.hpp — library version and process-wide helpers.
#pragma once

#include <string>

namespace mithril {

// "MAJOR.MINOR.PATCH" of this build.
const char* version() noexcept;

// The SIMD kernels this process runs, by the names `mithril --version -v`
// prints ("avx512", "avx2", "avx2x", "sse2", "scalar", "portable"). Each is
// chosen once per process, at its first use, from what the CPU has, capped by
// MITHRIL_ISA; the rANS kernels by timing them (about 1 ms a direction, on the
// first call), once per build and CPU: later processes read the choice back.
struct Kernels {
  std::string rans_encode;
  std::string rans_decode;
  std::string byte_grouping;
  std::string blake3;
  std::string xxh3;
  // Exponent planes coded two bytes a rANS symbol (plane codec 5): the
  // encoder's passes and the decoder's expansion, "avx2" or "scalar".
  std::string pairs;
  // Planes split into high bits in pairs and stored low bits (plane codec 6,
  // fp16 high bytes): the low bits' packing and merging, "avx512", "avx2"
  // or "scalar".
  std::string split;
  // Output written around the cache (non-temporal stores: a decode into
  // memory that holds something old, a compression into a reused buffer):
  // "avx2" or "sse2" on x86-64, else "portable".
  std::string streaming_copy;
  // How the rANS kernels were chosen and where timed choices are
  // remembered: "encode timed, decode remembered; remembered in
  // /home/u/.cache/mithril/kernels" (MITHRIL_KERNEL_MEMO).
  std::string rans_choice;
};
Kernels kernels();

// The CPU, for benchmark output beside kernels(): its model name as
// /proc/cpuinfo gives it, then (x86-64) its microarchitecture where known,
// CPUID family and model, and the widest vector instruction set it has —
// "AMD EPYC (Zen 4: family 25, model 17; AVX-512)", "Intel(R) Xeon(R)
// Platinum 8481C CPU @ 2.70GHz (Sapphire Rapids: family 6, model 143;
// AVX-512)" — since a virtual machine's model name alone may not tell an
// AVX2-only Zen 3 from a Zen 4 (util/cpu_info.hpp).
std::string cpu_model();

// MITHRIL_ISA as this process reads it (once): `level` is the cap
// ("avx512", "avx2", "sse2" or "scalar"), empty when there is none; `rejected`
// is the variable's value when it names no level (it is then ignored).
struct IsaCap {
  std::string level;
  std::string rejected;
};
IsaCap isa_cap();

// Removes every output file still being written (their temporaries) — for a
// signal handler right before the process dies. Async-signal-safe.
void remove_pending_outputs() noexcept;

// For the same handler: true when a remote upload is in flight and will abort
// itself (network calls are not async-signal-safe); the handler then returns
// and the caller re-raises deferred_signal() once the command has unwound.
// A second signal is not deferred. Async-signal-safe.
bool defer_signal(int sig) noexcept;
// The signal defer_signal() accepted, 0 if none.
int deferred_signal() noexcept;

// For a program that embeds the library (the Python package calls it when
// it is imported): a local file that shrinks while it is read (truncated, or
// rewritten in place by another process) becomes an Error(io) naming it,
// "... shrank while it was being read", with nothing written, instead of a
// SIGBUS that kills the process. It installs a SIGBUS handler that passes
// every other SIGBUS to the handler that was there before. Once per process;
// up to 1024 files mapped at once are covered. A SIGBUS handler installed
// later comes first (Python's faulthandler.enable() after `import mithril`
// reports the read as a fatal error, as without this).
void recover_from_shrinking_files();

}  // namespace mithril
