// storage/backend.hpp — one interface over the object stores both products
// use: a local directory (file://), Redis (redis://) and S3-compatible object
// storage (s3://). One .cpp per backend; open() picks one by URL scheme.
//
// Keys are '/'-separated strings relative to the store (a bucket, a Redis
// database, a directory). Contracts shared by every backend:
//   - a missing object is std::nullopt (or false), never an error;
//   - every network call has a connect timeout and an inactivity timeout and
//     is retried with exponential backoff (retry.hpp) when the failure is
//     transient; what still fails is Error(remote_unavailable,
//     "<endpoint>: <what>"); refused credentials fail at once with a message
//     that names the endpoint;
//   - put() and Upload::complete() make an object appear whole or not at
//     all; an Upload destroyed without complete() is aborted and leaves no
//     object.
//
// Thread-safety: a Backend (and an Upload) is used by one thread at a time;
// clone() gives another connection with the same settings for another thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/retry.hpp"
#include "util/bytes.hpp"

namespace mithril::storage {

struct Options {
  std::string endpoint;  // S3 endpoint URL ("http://127.0.0.1:9000"); empty = AWS_ENDPOINT_URL, else AWS
  std::string region;    // empty = AWS_REGION, AWS_DEFAULT_REGION, else us-east-1
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds io_timeout{30000};  // a call making no progress this long fails
  RetryPolicy retry;
  std::size_t part_size = std::size_t{8} << 20;  // multipart part size (S3 needs >= 5 MiB)
  unsigned upload_parallelism = 4;               // S3 parts in flight at once
};

// Options with the environment applied: MITHRIL_REMOTE_TIMEOUT (seconds of
// inactivity, e.g. "2.5"), MITHRIL_REMOTE_RETRIES (attempts),
// MITHRIL_REMOTE_PART_SIZE (bytes, at least 5 MiB for S3).
Options options_from_env(Options defaults = {});

struct ObjectInfo {
  std::uint64_t size = 0;
};

// The end of an object and its size, from one call where the store allows.
struct ObjectTail {
  util::ByteVector bytes;  // the last min(length asked, size) bytes
  std::uint64_t size = 0;  // of the whole object
  std::string version;     // which version of the object answered (S3: its ETag); empty if unknown
};

// A streaming write of one object (S3 multipart upload, a Redis temporary
// key, a local temporary file). Memory is bounded by a few part sizes.
class Upload {
 public:
  virtual ~Upload() = default;  // implementations abort() unless completed
  // Appends bytes. Throws Error(remote_unavailable) when a part cannot be
  // stored; the upload is then aborted and further calls throw.
  virtual void write(util::ByteSpan data) = 0;
  // Makes the object visible with every byte written. Throws as write().
  virtual void complete() = 0;
  // Stores every byte written without making the object visible and returns
  // a token (a small JSON text: S3's upload id and part ETags, the name of a
  // Redis or local temporary) from which Backend::complete_detached() makes
  // it visible, in this process or another. The upload then ends: it is
  // neither completed nor aborted here. What is never completed vanishes as
  // an unfinished write does (abort_uploads(), Redis expiry, the removal of
  // stale local temporaries). Throws as write().
  virtual std::string detach() = 0;
  // Discards what was sent; the object does not appear. Never throws.
  virtual void abort() noexcept = 0;
  virtual std::uint64_t size() const noexcept = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "redis://host:6379/0", "http://127.0.0.1:9000/bucket", ... for messages.
  virtual const std::string& endpoint() const noexcept = 0;

  // The whole object; nullopt when it does not exist.
  virtual std::optional<util::ByteVector> get(std::string_view key) = 0;
  // The same for an object expected to hold at most max_bytes: throws
  // Error(corrupt) when it is larger, having held no more than about
  // max_bytes of it (backends that can bound the transfer do; the default
  // checks after get()).
  virtual std::optional<util::ByteVector> get_at_most(std::string_view key, std::uint64_t max_bytes);
  // Bytes [offset, offset + length) of the object, shorter at its end (empty
  // past it); nullopt when the object does not exist.
  virtual std::optional<util::ByteVector> get_range(std::string_view key, std::uint64_t offset,
                                                    std::uint64_t length) = 0;
  // The last `length` bytes of the object (all of it when it is shorter)
  // and its size; nullopt when it does not exist. S3 answers with one
  // request (a suffix range, RFC 9110 14.1.1), where stat() and get_range()
  // take two: opening an .mcp by URL reads its footer and index this way.
  // The default is stat() then get_range().
  virtual std::optional<ObjectTail> get_tail(std::string_view key, std::uint64_t length);
  // get_range() of the version a get_tail() saw (ObjectTail::version): an
  // object replaced since throws Error(corrupt) saying so, instead of handing
  // out another object's bytes (S3: If-Match, 412). Stores that give no
  // version, or an empty `version`, read whatever is there (the default).
  virtual std::optional<util::ByteVector> get_range_if(std::string_view key, std::uint64_t offset,
                                                       std::uint64_t length, std::string_view version) {
    (void)version;
    return get_range(key, offset, length);
  }
  // Size of the object; nullopt when it does not exist.
  virtual std::optional<ObjectInfo> stat(std::string_view key) = 0;
  bool exists(std::string_view key) { return stat(key).has_value(); }

  // Stores the object whole (replacing any previous one).
  virtual void put(std::string_view key, util::ByteSpan data) = 0;
  // Starts a streaming write; nothing is visible until complete().
  virtual std::unique_ptr<Upload> begin_upload(std::string_view key) = 0;
  // Makes the object of a detached upload of `key` visible (Upload::detach()).
  // Completing the same token again succeeds while the object is recognisably
  // that upload's result and changes nothing. A token whose upload was
  // aborted or expired throws Error(not_found) and changes nothing; a token
  // of another store or key throws Error(invalid_argument).
  virtual void complete_detached(std::string_view key, std::string_view token) = 0;
  // Deletes the object; deleting a missing object is not an error.
  virtual void remove(std::string_view key) = 0;
  // Every key that starts with prefix, sorted.
  virtual std::vector<std::string> list(std::string_view prefix) = 0;
  // Discards the unfinished streaming writes (begin_upload() never completed
  // nor aborted, e.g. by a killed process) of keys that start with prefix;
  // returns how many. S3 aborts its open multipart uploads; stores whose
  // unfinished writes vanish by themselves (Redis temporaries expire, local
  // temporaries are removed by their writer) have none to discard.
  virtual std::size_t abort_uploads(std::string_view prefix) {
    (void)prefix;
    return 0;
  }

  // Another connection to the same store with the same settings.
  virtual std::unique_ptr<Backend> clone() const = 0;
};

// A store and a key in it, as named by a URL.
struct Location {
  std::unique_ptr<Backend> backend;
  std::string key;
  std::string url;  // redacted, for messages
};

// Opens the store a URL names (url.hpp). Connecting is lazy: a store that is
// down fails on its first call, not here. Throws Error(invalid_argument) for
// a malformed URL.
Location open(std::string_view url, const Options& options);

}  // namespace mithril::storage
