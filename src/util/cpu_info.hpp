// util/cpu_info.hpp — which CPU this is, for benchmark output.
//
// A benchmark's numbers mean little without the CPU they came from, and a
// virtual machine's model name often does not say it: the same "AMD EPYC"
// has been an AVX2-only Zen 3 (slow AVX2 gathers: a different rANS decoder
// wins) and a Zen 4 with AVX-512. CPUID's signature (leaf 1: family, model,
// stepping) does, so the description adds it, the microarchitecture it
// belongs to where this file knows it, and the widest vector instruction set
// the CPU offers (before any MITHRIL_ISA cap).
//
// Sources (facts, not code): AMD's and Intel's CPUID documentation for the
// signature's fields (the extended family is added when the base family is
// 0xF; the extended model is prepended for families 6 and 0xF and up), and
// their published family/model numbers for the microarchitectures below.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mithril::util {

struct CpuSignature {
  std::string vendor;  // CPUID's vendor string: "AuthenticAMD", "GenuineIntel", ...
  unsigned family = 0, model = 0, stepping = 0;
  // AMX tiles (CPUID leaf 7, EDX bit 24): only Intel's server cores from
  // Sapphire Rapids on have them. A hypervisor may report another model
  // number (a Xeon VM with AMX seen as family 6, model 167, Rocket Lake's,
  // a desktop part that never had AMX); the features then tell.
  bool amx = false;
};

// The signature from CPUID leaf 1's EAX and the vendor string.
CpuSignature decode_cpu_signature(std::string_view vendor, std::uint32_t eax) noexcept;

// This CPU's signature: nullopt off x86-64.
std::optional<CpuSignature> cpu_signature();

// The microarchitecture a signature belongs to ("Zen 4", "Sapphire Rapids"),
// empty where this file does not know it. An Intel signature with AMX whose
// model number names a core without it: "Sapphire Rapids or later, by its AMX".
std::string_view microarchitecture(const CpuSignature& s) noexcept;

// "<model name> (<microarchitecture>: family F, model M; <ISA>)", e.g.
// "AMD EPYC (Zen 4: family 25, model 17; AVX-512)": the model name from
// /proc/cpuinfo (else CPUID's brand string, else "unknown CPU"), the
// signature in decimal as /proc/cpuinfo prints it, and AVX-512 (F and BW),
// AVX2 or SSE2, whichever is the widest the CPU has. Off x86-64: the model
// name alone.
std::string cpu_description();

// The CPU as exactly as a choice by timing depends on it: "VENDOR FAMILY
// MODEL STEPPING BRAND" (decimal; CPUID's brand string), "unknown" off
// x86-64.
std::string cpu_identity();

}  // namespace mithril::util
