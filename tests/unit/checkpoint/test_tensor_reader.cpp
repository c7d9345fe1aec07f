// CheckpointReader / read_tensor on the golden v1 files: every tensor read
// alone must equal its bytes in the original safetensors file (parsed
// independently), and only that tensor's chunks may be read.
#include <gtest/gtest.h>

#include "container/reader.hpp"
#include "formats/safetensors.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "test_helpers.hpp"
#include "util/byte_io.hpp"

namespace mithril {
namespace {

const std::filesystem::path k_golden = std::filesystem::path(MITHRIL_SOURCE_DIR) / "tests" / "golden";

// Stored bytes of everything but chunk payloads: header, index, footer.
std::uint64_t container_overhead(const std::filesystem::path& mcp) {
  container::Reader r(mcp);
  std::uint64_t payload = 0;
  for (const auto& c : r.index().chunks) payload += c.stored_size;
  return r.file_size() - payload;
}

void expect_every_tensor_matches(const std::filesystem::path& original, const std::filesystem::path& mcp,
                                 const ReadOptions& options = {}) {
  const auto file = test::read_file(original);
  const auto header = formats::parse_safetensors(file, original.string());
  ASSERT_FALSE(header.tensors.empty());
  CheckpointReader reader(mcp, options);
  const auto overhead = container_overhead(mcp);
  EXPECT_EQ(reader.bytes_read(), overhead);  // opening reads no chunk
  std::uint64_t expected_read = overhead;
  for (const auto& t : header.tensors) {
    const auto got = reader.tensor(t.name);
    const auto begin = file.begin() + static_cast<std::ptrdiff_t>(header.data_offset + t.begin);
    EXPECT_EQ(got.data, util::ByteVector(begin, begin + static_cast<std::ptrdiff_t>(t.size()))) << t.name;
    EXPECT_EQ(got.shape, t.shape) << t.name;
    const auto info = std::find_if(reader.info().tensors.begin(), reader.info().tensors.end(),
                                   [&](const auto& s) { return s.name == t.name; });
    ASSERT_NE(info, reader.info().tensors.end());
    EXPECT_EQ(got.dtype, info->dtype);
    expected_read += info->stored_bytes.value_or(0);
    EXPECT_EQ(reader.bytes_read(), expected_read) << "read more than the chunks of " << t.name;
  }
}

TEST(TensorReader, GoldenFilesTensorByTensor) {
  expect_every_tensor_matches(k_golden / "v1_chunks.safetensors", k_golden / "v1_chunks.safetensors.mcp");
  expect_every_tensor_matches(k_golden / "v1_mixed.safetensors", k_golden / "v1_mixed.safetensors.mcp");
}

TEST(TensorReader, DeltaNeedsItsBase) {
  const auto delta = k_golden / "v1_delta.safetensors.mcp.delta";
  CheckpointReader without(delta);
  bool some_delta_chunk = false;
  for (const auto& t : without.info().tensors) {
    try {
      without.tensor(t.name);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument) << e.what();
      EXPECT_NE(std::string(e.what()).find("--base"), std::string::npos) << e.what();
      some_delta_chunk = true;
    }
  }
  EXPECT_TRUE(some_delta_chunk);
  ReadOptions o;
  o.base = k_golden / "v1_base.safetensors";
  expect_every_tensor_matches(k_golden / "v1_delta.safetensors", delta, o);
}

TEST(TensorReader, MissingTensorAndNonContainer) {
  CheckpointReader reader(k_golden / "v1_chunks.safetensors.mcp");
  try {
    reader.tensor("no.such.tensor");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found);
    EXPECT_NE(std::string(e.what()).find("no.such.tensor"), std::string::npos);
  }
  EXPECT_THROW(CheckpointReader(k_golden / "v1_chunks.safetensors"), Error);
  EXPECT_THROW(read_tensor(k_golden / "absent.mcp", "x"), Error);
}

TEST(TensorReader, ReadTensorConvenience) {
  const auto t = read_tensor(k_golden / "v1_chunks.safetensors.mcp",
                             CheckpointReader(k_golden / "v1_chunks.safetensors.mcp").info().tensors.front().name);
  EXPECT_FALSE(t.data.empty());
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

TEST(ContainerReader, OpensWithThreeReadsOutsideTheChunks) {
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

TEST(ContainerReader, TruncatedSourceIsCorruptNotACrash) {
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
