// SigV4 against published vectors:
//  - AWS Signature Version 4 test suite (docs.aws.amazon.com/general/latest/gr/
//    signature-v4-test-suite.html): get-vanilla, get-vanilla-query-order-key-case,
//    post-vanilla — credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY,
//    20150830T123600Z, us-east-1, service "service";
//  - Amazon S3 API reference, "Signature Calculations for the Authorization
//    Header: Transferring Payload in a Single Chunk" (sig-v4-header-based-auth):
//    GET Object, PUT Object, GET Bucket Lifecycle, Get Bucket (List Objects) —
//    AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, 20130524T000000Z.
// SHA-256 vectors: FIPS 180-2 appendix B ("abc", the 448-bit message);
// HMAC-SHA256: RFC 4231 test case 2.
#include <gtest/gtest.h>

#include "mithril/error.hpp"
#include "storage/sigv4.hpp"

namespace mithril::storage::sigv4 {
namespace {

const Credentials k_suite{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};
const Credentials k_s3doc{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
constexpr const char* k_empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

Request suite_request(std::string method, Pairs query = {}) {
  return {std::move(method), "/", std::move(query),
          {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}}, k_empty};
}

TEST(Sha256, FipsVectors) {
  EXPECT_EQ(sha256_hex(util::as_bytes("")), k_empty);
  EXPECT_EQ(sha256_hex(util::as_bytes("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(util::as_bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, HmacRfc4231Case2) {
  const auto mac = hmac_sha256(util::as_bytes("Jefe"), "what do ya want for nothing?");
  EXPECT_EQ(hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(SigV4, SuiteGetVanilla) {
  const auto s = sign(suite_request("GET"), k_suite, "us-east-1", "service", "20150830T123600Z");
  EXPECT_EQ(s.canonical_request,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + std::string(k_empty));
  EXPECT_EQ(s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");
  EXPECT_EQ(s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(SigV4, SuiteQueryOrderKeyCase) {
  const auto s = sign(suite_request("GET", {{"Param2", "value2"}, {"Param1", "value1"}}), k_suite, "us-east-1",
                      "service", "20150830T123600Z");
  EXPECT_EQ(s.signature, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
}

TEST(SigV4, SuitePostVanilla) {
  const auto s = sign(suite_request("POST"), k_suite, "us-east-1", "service", "20150830T123600Z");
  EXPECT_EQ(s.signature, "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
}

TEST(SigV4, S3GetObjectExample) {
  Request r{"GET", "/test.txt", {},
            {{"Host", "examplebucket.s3.amazonaws.com"}, {"Range", "bytes=0-9"},
             {"x-amz-content-sha256", k_empty}, {"x-amz-date", "20130524T000000Z"}},
            k_empty};
  const auto s = sign(r, k_s3doc, "us-east-1", "s3", "20130524T000000Z");
  EXPECT_EQ(sha256_hex(util::as_bytes(s.canonical_request)),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(s.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  EXPECT_NE(s.authorization.find("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"), std::string::npos);
}

TEST(SigV4, S3PutObjectExample) {
  const std::string body = "Welcome to Amazon S3.";
  const auto hash = sha256_hex(util::as_bytes(body));
  EXPECT_EQ(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  Request r{"PUT", "/" + uri_encode("test$file.text", true), {},
            {{"Host", "examplebucket.s3.amazonaws.com"}, {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
             {"x-amz-date", "20130524T000000Z"}, {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
             {"x-amz-content-sha256", hash}},
            hash};
  EXPECT_EQ(r.path, "/test%24file.text");
  const auto s = sign(r, k_s3doc, "us-east-1", "s3", "20130524T000000Z");
  EXPECT_EQ(s.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST(SigV4, S3BucketLifecycleAndListExamples) {
  const Pairs headers{{"Host", "examplebucket.s3.amazonaws.com"}, {"x-amz-date", "20130524T000000Z"},
                      {"x-amz-content-sha256", k_empty}};
  Request lifecycle{"GET", "/", {{"lifecycle", ""}}, headers, k_empty};
  EXPECT_EQ(sign(lifecycle, k_s3doc, "us-east-1", "s3", "20130524T000000Z").signature,
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
  Request list{"GET", "/", {{"prefix", "J"}, {"max-keys", "2"}}, headers, k_empty};
  EXPECT_EQ(sign(list, k_s3doc, "us-east-1", "s3", "20130524T000000Z").signature,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST(SigV4, ChangingAnySignedPartChangesTheSignature) {
  const auto base = sign(suite_request("GET"), k_suite, "us-east-1", "service", "20150830T123600Z").signature;
  EXPECT_NE(sign(suite_request("GET"), k_suite, "eu-west-1", "service", "20150830T123600Z").signature, base);
  EXPECT_NE(sign(suite_request("GET"), k_suite, "us-east-1", "service", "20150830T123601Z").signature, base);
  Credentials other = k_suite;
  other.secret_key.back() = 'X';
  EXPECT_NE(sign(suite_request("GET"), other, "us-east-1", "service", "20150830T123600Z").signature, base);
  EXPECT_THROW(sign(suite_request("GET"), k_suite, "us-east-1", "service", "2015-08-30"), Error);
}

TEST(SigV4, UriEncodingAndCanonicalQuery) {
  EXPECT_EQ(uri_encode("a b/c~d_e.f-g", true), "a%20b/c~d_e.f-g");
  EXPECT_EQ(uri_encode("a b/c", false), "a%20b%2Fc");
  EXPECT_EQ(uri_encode("\xc3\xa9+=&", false), "%C3%A9%2B%3D%26");
  EXPECT_EQ(canonical_query({{"uploadId", "x y"}, {"partNumber", "2"}, {"a", ""}}), "a=&partNumber=2&uploadId=x%20y");
  // Repeated names are ordered by value.
  EXPECT_EQ(canonical_query({{"k", "b"}, {"k", "a"}}), "k=a&k=b");
}

TEST(SigV4, HeaderValuesAreTrimmedAndNamesLowercased) {
  Request r = suite_request("GET");
  r.headers.emplace_back("X-Custom", "  two   words  ");
  const auto s = sign(r, k_suite, "us-east-1", "service", "20150830T123600Z");
  EXPECT_NE(s.canonical_request.find("\nx-custom:two words\n"), std::string::npos);
  EXPECT_NE(s.canonical_request.find("\nhost;x-amz-date;x-custom\n"), std::string::npos);
}

TEST(SigV4, AmzDateNowHasTheWireFormat) {
  const auto d = amz_date_now();
  ASSERT_EQ(d.size(), 16u);
  EXPECT_EQ(d[8], 'T');
  EXPECT_EQ(d[15], 'Z');
}

}  // namespace
}  // namespace mithril::storage::sigv4
