// mithril/objects.hpp — small whole objects (manifests, metadata) in the
// object stores checkpoints are written to: s3://BUCKET/KEY,
// redis://HOST:PORT/DB/KEY, file:///PATH (docs/storage.md).
//
// Large checkpoint data goes through compress_tensors() / CheckpointReader
// (tensors.hpp), which stream and read ranges; these calls move one small
// object whole, e.g. the `.metadata` a torch.distributed.checkpoint
// coordinator writes last (python/mithril/dcp.py).
//
// Every function takes a URL (a local path is refused with
// Error(invalid_argument): use the file system), has the storage layer's
// timeouts and retries, and throws Error(remote_unavailable) naming the
// endpoint when the store cannot be reached. S3 credentials and region come
// from the AWS_* variables; remote.endpoint overrides AWS_ENDPOINT_URL.
//
// Thread-safety: reentrant; each call opens its own connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mithril/checkpoint.hpp"

namespace mithril {

// Stores `data` as the object `url`, replacing any previous one; the object
// appears whole or not at all.
void put_object(const std::string& url, std::span<const std::byte> data, const RemoteOptions& remote = {});

// The whole object; nullopt when it does not exist.
std::optional<std::vector<std::byte>> get_object(const std::string& url, const RemoteOptions& remote = {});

// The object's size; nullopt when it does not exist.
std::optional<std::uint64_t> stat_object(const std::string& url, const RemoteOptions& remote = {});

// Deletes the object; a missing object is not an error.
void remove_object(const std::string& url, const RemoteOptions& remote = {});

// The keys of the objects whose URL starts with `url_prefix`, relative to
// that prefix (for "s3://b/run/" and the object "s3://b/run/x/y": "x/y"),
// sorted. (file:// lists skip names starting with '.': in-flight temporaries.)
std::vector<std::string> list_objects(const std::string& url_prefix, const RemoteOptions& remote = {});

// Discards the unfinished streaming writes under `url_prefix` (those of a
// process killed mid-upload): S3's open multipart uploads whose key starts
// with the prefix are aborted. Returns how many. Redis and file:// have none
// to discard (their temporaries expire or are removed by their writer): 0.
std::size_t abort_uploads(const std::string& url_prefix, const RemoteOptions& remote = {});

// Makes the object at `url` (or a local path) visible from the token of its
// detached upload (CompressOptions::detach: S3's CompleteMultipartUpload,
// the rename of a Redis or local temporary); any process may. Completing a token twice
// succeeds and changes nothing while the object is recognisably that
// upload's result; a token whose upload was aborted or expired is
// Error(not_found) naming the URL, a token of another object
// Error(invalid_argument).
void complete_upload(const std::string& url, const std::string& token, const RemoteOptions& remote = {});

}  // namespace mithril
