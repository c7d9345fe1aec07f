// tests/fuzz/fuzz_mcp.hpp — the checks fuzz_mcp and fuzz_mcp_mutate run on
// a candidate .mcp held in memory (see fuzz_mcp.cpp for the contract).
#pragma once

#include "fuzz_common.hpp"

namespace mithril::checkpoint {
class BaseSource;
}

namespace mithril::fuzz {

// `base`: the delta's base (or nullptr: a delta chunk is then an
// Error(invalid_argument)).
void exercise_container(util::ByteSpan file, const checkpoint::BaseSource* base = nullptr);

}  // namespace mithril::fuzz
