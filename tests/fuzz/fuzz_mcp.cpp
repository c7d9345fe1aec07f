// libFuzzer target for the .mcp container reader (container/reader.hpp,
// container/format.cpp) and the decoder behind `mithril decompress / verify
// / info` (checkpoint/source.hpp decode_container, describe_container):
// arbitrary bytes as a container. fuzz_mcp_mutate starts from valid files.
// Built and run by scripts/fuzz; replayed by ctest.
//
// Contract checked: opening either throws Error(corrupt/unsupported) or
// gives an index whose chunks and segments lie inside the file and the
// source; describing never throws; decoding every chunk either throws Error
// (corrupt, or invalid_argument for a delta without its base) or hands out
// exactly the source's bytes, each chunk exactly its raw size.
#include "fuzz_mcp.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mithril::fuzz::exercise_container(mithril::fuzz::as_span(data, size));
  return 0;
}
