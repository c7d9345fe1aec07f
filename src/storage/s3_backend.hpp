// storage/s3_backend.hpp — S3-compatible object storage (s3://) over libcurl,
// signed with AWS Signature V4 (sigv4.hpp).
//
// Endpoint: ?endpoint= in the URL, else Options::endpoint (the CLI's
// --endpoint), else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS itself
// (https://BUCKET.s3.REGION.amazonaws.com, virtual-hosted). A custom endpoint
// (MinIO, Ceph, moto, ...) is addressed path-style: ENDPOINT/BUCKET/KEY.
// Region: ?region=, else Options::region, else AWS_REGION /
// AWS_DEFAULT_REGION, else us-east-1. Credentials: AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN; without them requests go
// unsigned (public buckets).
//
// Payloads are signed (x-amz-content-sha256 is the body's SHA-256), so the
// server rejects bytes damaged in transit. Uploads of more than one part
// use the multipart API with up to Options::upload_parallelism parts in
// flight (memory: that many parts plus one being filled); a failed or
// abandoned upload is aborted (AbortMultipartUpload), so no object appears.
// Part sizes grow after every 1000 parts to stay within S3's 10000-part limit.
#pragma once

#include "storage/backend.hpp"
#include "storage/url.hpp"

namespace mithril::storage {

std::unique_ptr<Backend> make_s3_backend(const Url& url, const Options& options);

// First <tag>...</tag> of an XML document, entities decoded; "" if absent.
std::string xml_value(std::string_view xml, std::string_view tag);
// Every <tag>...</tag>, in order, entities decoded.
std::vector<std::string> xml_values(std::string_view xml, std::string_view tag);

}  // namespace mithril::storage
