// Partial reads of a container: the Reader opens with three reads outside
// the chunk region, and CheckpointReader (mithril/tensors.hpp) reads only
// the chunks of the tensors asked for — counted exactly on the golden v1
// files, with every tensor compared with its bytes in the original file
// (parsed independently).
#include <gtest/gtest.h>

#include "container/reader.hpp"
#include "formats/safetensors.hpp"
#include "mithril/error.hpp"
#include "mithril/tensors.hpp"
#include "test_helpers.hpp"
#include "util/byte_io.hpp"

namespace mithril {
namespace {

const std::filesystem::path k_golden = std::filesystem::path(MITHRIL_SOURCE_DIR) / "tests" / "golden";

// Stored bytes of everything but chunk payloads (header, index, footer),
// and of the raw (non-tensor) segments' chunks.
struct Layout {
  std::uint64_t overhead = 0, raw_segments = 0;
};

Layout layout_of(const std::filesystem::path& mcp) {
  container::Reader r(mcp);
  Layout l;
  std::uint64_t payload = 0;
  for (const auto& c : r.index().chunks) payload += c.stored_size;
  l.overhead = r.file_size() - payload;
  for (const auto& s : r.index().segments)
    if (s.kind == container::SegmentKind::raw)
      for (std::uint32_t c = s.first_chunk; c < s.first_chunk + s.chunk_count; ++c)
        l.raw_segments += r.index().chunks[c].stored_size;
  return l;
}

void expect_every_tensor_matches(const std::filesystem::path& original, const std::filesystem::path& mcp,
                                 const ReaderOptions& options = {}) {
  const auto file = test::read_file(original);
  const auto header = formats::parse_safetensors(file, original.string());
  ASSERT_FALSE(header.tensors.empty());
  CheckpointReader reader(mcp, options);
  const auto l = layout_of(mcp);
  // Opening reads the container's header, footer and index, and the
  // safetensors header (the raw segment) — no tensor chunk.
  EXPECT_EQ(reader.bytes_read(), l.overhead + l.raw_segments);
  std::uint64_t expected_read = reader.bytes_read();
  for (const auto& t : header.tensors) {
    const auto i = reader.find(t.name);
    ASSERT_TRUE(i) << t.name;
    const auto& e = reader.tensors()[*i];
    std::vector<std::byte> got(static_cast<std::size_t>(e.bytes));
    reader.read_tensor(*i, got);
    const auto begin = file.begin() + static_cast<std::ptrdiff_t>(header.data_offset + t.begin);
    EXPECT_EQ(got, util::ByteVector(begin, begin + static_cast<std::ptrdiff_t>(t.size()))) << t.name;
    expected_read += e.stored_bytes;
    EXPECT_EQ(reader.bytes_read(), expected_read) << "read more than the chunks of " << t.name;
  }
}

TEST(PartialReads, GoldenFilesTensorByTensor) {
  expect_every_tensor_matches(k_golden / "v1_chunks.safetensors", k_golden / "v1_chunks.safetensors.mcp");
  expect_every_tensor_matches(k_golden / "v1_mixed.safetensors", k_golden / "v1_mixed.safetensors.mcp");
}

TEST(PartialReads, DeltaWithItsBase) {
  ReaderOptions o;
  o.base = k_golden / "v1_base.safetensors";
  expect_every_tensor_matches(k_golden / "v1_delta.safetensors", k_golden / "v1_delta.safetensors.mcp.delta", o);
}

TEST(PartialReads, ReadTensorConvenience) {
  const auto mcp = k_golden / "v1_chunks.safetensors.mcp";
  const CheckpointReader reader(mcp);
  const auto& first = reader.tensors().front();
  EXPECT_EQ(read_tensor(mcp, first.name).size(), first.bytes);
  try {
    read_tensor(mcp, "no.such.tensor");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found);
    EXPECT_NE(std::string(e.what()).find("no.such.tensor"), std::string::npos);
  }
  EXPECT_THROW(read_tensor(k_golden / "absent.mcp", "x"), Error);
}

// A source that records every range read: the Reader must not read the
// chunk region while opening.
class RecordingSource final : public util::ByteSource {
 public:
  explicit RecordingSource(const std::filesystem::path& p) : m_inner(p) {}
  std::uint64_t size() const noexcept override { return m_inner.size(); }
  const std::string& name() const noexcept override { return m_inner.name(); }
  util::ByteSpan read(std::uint64_t offset, std::size_t length, util::ByteVector& scratch) const override {
    ranges.emplace_back(offset, length);
    const auto s = m_inner.read(offset, length, scratch);
    scratch.assign(s.begin(), s.end());  // behave like a remote source: hand out scratch
    return scratch;
  }
  mutable std::vector<std::pair<std::uint64_t, std::size_t>> ranges;

 private:
  util::MappedSource m_inner;
};

TEST(PartialReadsContainer, OpensWithThreeReadsOutsideTheChunks) {
  const auto path = k_golden / "v1_chunks.safetensors.mcp";
  auto src = std::make_shared<RecordingSource>(path);
  container::Reader r(src);
  ASSERT_EQ(src->ranges.size(), 3u);
  const auto first_chunk = r.index().chunks.front().file_offset;
  const auto index_at = r.footer().index_offset;
  for (const auto& [off, len] : src->ranges) EXPECT_TRUE(off + len <= first_chunk || off >= index_at) << off;
  util::ByteVector scratch;
  const auto p = r.payload(1, scratch);
  EXPECT_EQ(p.size(), r.index().chunks[1].stored_size);
  EXPECT_EQ(src->ranges.back(), std::make_pair(r.index().chunks[1].file_offset, std::size_t{p.size()}));
}

TEST(PartialReadsContainer, TruncatedSourceIsCorruptNotACrash) {
  test::TempDir dir;
  auto bytes = test::read_file(k_golden / "v1_chunks.safetensors.mcp");
  bytes.resize(bytes.size() / 2);
  test::write_file(dir / "half.mcp", bytes);
  try {
    container::Reader r(dir / "half.mcp");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt);
  }
}

}  // namespace
}  // namespace mithril
