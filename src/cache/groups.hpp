// cache/groups.hpp — eviction units: a compiled graph and the generated
// code it runs, evicted together.
//
// Inductor keeps a graph's parts in separate places: the FX-graph entry
// (inductor/fxgraph/<xy>/<key>/) holds the pickled output code, whose C++
// kernels are compiled into module groups (inductor/<xy>/<stem>.main.cpp +
// .main.so); an AOTAutograd entry names the FX-graph keys of its forward and
// backward; a caching-precompile entry (inductor/dynamo/<key>/) bundles the
// whole compiled graph. Evicting an FX graph but not its kernels wastes
// space; evicting a kernel but not its graph makes the next "hit" recompile.
//
// The links are read from the entries' own bytes, no framework hooks:
//   kernel  — the source a module was compiled from: its .cpp up to Inductor's
//             "\n// Python bindings to call " suffix (CppPythonBindingsCodeCache
//             appends it to the kernel source), hashed with BLAKE3;
//   graph   — every r'''...''' block in a graph entry's files (the output
//             code passes each kernel's source to async_compile.cpp_pybinding
//             as a raw string; pickles store str bytes verbatim), hashed the
//             same way, and every FX-graph key ("f" + 51 [a-z0-9]) it names.
// Entries linked directly or through shared kernels form one unit (union-
// find); every other entry is a unit of its own. Triton kernels (GPU) are not
// linked yet: their cache keys cannot be derived from the graph's bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "cache/index.hpp"

namespace mithril::cache {

// Partitions rows into eviction units (indices into rows). Reads the graph
// entries' files and the modules' .cpp files under store_root; unreadable
// files just contribute no links. Never throws for missing files.
std::vector<std::vector<std::size_t>> eviction_units(const std::filesystem::path& store_root,
                                                     const std::vector<EntryRow>& rows);

// Chooses whole units, least recently used first (a unit's last use is its
// most recent member's), until the rest fits max_bytes / max_entries (0 = no
// count limit), plus every unit last used before older_than (0 = none);
// units used at or after protect_from are never taken. Returns row indices.
std::vector<std::size_t> choose_unit_victims(const std::vector<EntryRow>& rows,
                                             const std::vector<std::vector<std::size_t>>& units,
                                             std::uint64_t max_bytes, std::uint64_t max_entries,
                                             std::int64_t older_than, std::int64_t protect_from);

}  // namespace mithril::cache
