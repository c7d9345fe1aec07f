// libFuzzer target for the S3 response parsing (storage/s3_backend.hpp:
// xml_value, xml_values) over the tags the backend reads from ListObjectsV2,
// CreateMultipartUpload and error bodies. Built and run by scripts/fuzz;
// replayed by ctest.
//
// Contract checked: no crash, no exception; a value is never longer than the
// document; xml_values finds no more values than there are opening tags and
// its first value is xml_value's.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_common.hpp"
#include "storage/s3_backend.hpp"

using mithril::fuzz::check;

namespace {

std::size_t count(std::string_view s, std::string_view needle) {
  std::size_t n = 0;
  for (auto pos = s.find(needle); pos != std::string_view::npos; pos = s.find(needle, pos + 1)) ++n;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view xml(reinterpret_cast<const char*>(data), size);
  for (std::string_view tag : {"Key", "Code", "Message", "IsTruncated", "NextContinuationToken", "UploadId", "ETag"}) {
    const auto one = mithril::storage::xml_value(xml, tag);
    check(one.size() <= size);
    const auto all = mithril::storage::xml_values(xml, tag);
    check(all.size() <= count(xml, "<" + std::string(tag) + ">"));
    if (!all.empty()) check(all.front() == one);
    for (const auto& v : all) check(v.size() <= size);
  }
  return 0;
}
