#include "cache/content_store.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::cache;
using mithril::test::TempDir;

namespace {

util::ByteVector text_bytes(std::size_t n) {
  util::ByteVector v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>("abcdefgh"[i % 8]);
  return v;
}

}  // namespace

TEST(ContentStore, RoundTripAndAddressing) {
  TempDir dir;
  ContentStore cas(dir / "cas", dir / "q");
  const auto data = test::random_bytes(10000, 1);
  const auto d = cas.put(data);
  EXPECT_EQ(d, util::blake3(data));
  const auto hex = util::to_hex(d);
  EXPECT_TRUE(std::filesystem::exists(dir / "cas" / hex.substr(0, 2) / hex));
  auto back = cas.get(d);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, data);
  EXPECT_EQ(cas.check(d), ContentStore::State::ok);
  EXPECT_EQ(cas.put(data), d);  // idempotent
  EXPECT_EQ(cas.list().size(), 1u);
}

TEST(ContentStore, CompressesOnlyWhenItPays) {
  TempDir dir;
  ContentStore cas(dir / "cas", dir / "q");
  const auto text = text_bytes(100000);
  const auto random = test::random_bytes(100000, 2);
  const auto dt = cas.put(text);
  const auto dr = cas.put(random);
  EXPECT_LT(cas.stored_size(dt), 10000u);
  EXPECT_EQ(cas.stored_size(dr), random.size() + 16);
  EXPECT_EQ(*cas.get(dt), text);
  EXPECT_EQ(*cas.get(dr), random);
  const auto dn = cas.put(text_bytes(5000), Compression::none);
  EXPECT_EQ(cas.stored_size(dn), 5000u + 16);
}

TEST(ContentStore, EmptyBlob) {
  TempDir dir;
  ContentStore cas(dir / "cas", dir / "q");
  const auto d = cas.put({});
  auto back = cas.get(d);
  ASSERT_TRUE(back);
  EXPECT_TRUE(back->empty());
}

TEST(ContentStore, CorruptBlobIsAMissAndQuarantined) {
  for (bool compressible : {false, true}) {
    TempDir dir;
    ContentStore cas(dir / "cas", dir / "q");
    const auto data = compressible ? text_bytes(50000) : test::random_bytes(50000, 3);
    const auto d = cas.put(data);
    auto image = test::read_file(cas.blob_path(d));
    image[image.size() / 2] ^= std::byte{0x01};
    test::write_file(cas.blob_path(d), image);
    EXPECT_FALSE(cas.get(d).has_value());
    EXPECT_EQ(cas.corrupt_count(), 1u);
    EXPECT_FALSE(cas.contains(d));
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir / "q"), {}), 1);
    EXPECT_EQ(cas.check(d), ContentStore::State::missing);
    // Stored again, it is whole again.
    cas.put(data);
    EXPECT_EQ(*cas.get(d), data);
  }
}

TEST(ContentStore, TruncatedAndForeignFilesAreCorrupt) {
  TempDir dir;
  ContentStore cas(dir / "cas", dir / "q");
  const auto data = test::random_bytes(4000, 4);
  const auto d = cas.put(data);
  auto image = test::read_file(cas.blob_path(d));
  image.resize(image.size() - 1);
  test::write_file(cas.blob_path(d), image);
  EXPECT_EQ(cas.check(d), ContentStore::State::corrupt);
  // A blob file holding other (valid) content under the wrong name.
  const auto other = test::random_bytes(100, 5);
  const auto od = cas.put(other);
  std::filesystem::create_directories(cas.blob_path(d).parent_path());
  std::filesystem::copy_file(cas.blob_path(od), cas.blob_path(d));
  EXPECT_EQ(cas.check(d), ContentStore::State::corrupt);
  EXPECT_EQ(cas.check(od), ContentStore::State::ok);
}

TEST(ContentStore, DecodeRejectsBadHeaders) {
  const auto data = text_bytes(3000);
  const auto d = util::blake3(data);
  auto image = encode_blob(data, Compression::automatic);
  EXPECT_TRUE(decode_blob(image, d).has_value());
  auto bad = image;
  bad[0] = std::byte{'X'};
  EXPECT_FALSE(decode_blob(bad, d));
  bad = image;
  bad[4] = std::byte{2};  // version
  EXPECT_FALSE(decode_blob(bad, d));
  bad = image;
  bad[5] = std::byte{7};  // codec
  EXPECT_FALSE(decode_blob(bad, d));
  bad = image;
  util::store_le<std::uint64_t>(bad.data() + 8, std::uint64_t{1} << 50);  // absurd size
  EXPECT_FALSE(decode_blob(bad, d));
  EXPECT_FALSE(decode_blob(util::ByteSpan(image).first(10), d));
}

TEST(ContentStore, ConcurrentWritersAndReaders) {
  TempDir dir;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      ContentStore cas(dir / "cas", dir / "q");
      for (int i = 0; i < 50; ++i) {
        const auto data = test::random_bytes(1000 + static_cast<std::size_t>(i) * 37, static_cast<std::uint64_t>(i % 10 + t * 0));
        const auto d = cas.put(data);
        auto back = cas.get(d);
        if (!back || *back != data) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(ContentStore, DecodeNeverAllocatesWhatTheHeaderClaims) {
  // "MTHB" v1 zstd, raw size 2 GiB; a zstd frame declaring 2 GiB whose one
  // RLE block (128 KiB, not the last) is all there is (RFC 8878 3.1.1).
  const std::uint64_t claim = std::uint64_t{2} << 30;
  util::ByteVector image(16);
  std::memcpy(image.data(), "MTHB", 4);
  image[4] = std::byte{1};
  image[5] = std::byte{1};
  util::store_le<std::uint64_t>(image.data() + 8, claim);
  const std::uint8_t frame[] = {0x28, 0xB5, 0x2F, 0xFD, 0xC0, 7 << 3};
  for (auto b : frame) image.push_back(std::byte{b});
  for (int i = 0; i < 8; ++i) image.push_back(std::byte{static_cast<std::uint8_t>(claim >> (8 * i))});
  const std::uint32_t block = 0 | (1u << 1) | ((128u << 10) << 3);
  for (int i = 0; i < 3; ++i) image.push_back(std::byte{static_cast<std::uint8_t>(block >> (8 * i))});
  image.push_back(std::byte{0});
  util::Digest d{};
  EXPECT_FALSE(decode_blob(image, d));            // truncated: a miss, no 2 GiB buffer
  EXPECT_FALSE(decode_blob(image, d, claim - 1));  // more than the caller expects
  util::store_le<std::uint64_t>(image.data() + 8, std::uint64_t{1} << 41);
  EXPECT_FALSE(decode_blob(image, d));  // over the absolute cap
}
