// storage/remote_io.hpp — ByteSource / ByteSink (util/byte_io.hpp) for a
// local path or an object-store URL, so that the checkpoint code reads and
// writes both the same way.
//
//   open_source("ckpt.mcp")          a memory map
//   open_source("s3://b/ckpt.mcp")   ranged GETs (the first, of the last 64 KiB,
//                                    also gives the size and is kept);
//                                    concurrent reads use a pool of connections
//   open_sink("out.mcp")             an AtomicFile (temporary + rename)
//   open_sink("s3://b/out.mcp")      a streaming multipart upload: parts are
//                                    sent while the writer goes on; an upload
//                                    that is not committed (an error, an
//                                    exception, SIGINT/SIGTERM) is aborted
//                                    and leaves no object; detach() instead
//                                    of commit() stores it unpublished
//                                    (Backend::complete_detached).
#pragma once

#include <memory>
#include <string_view>

#include "storage/backend.hpp"
#include "util/byte_io.hpp"

namespace mithril::storage {

// Throws Error(not_found) when the file or object does not exist,
// Error(remote_unavailable) when the store cannot be reached.
std::unique_ptr<util::ByteSource> open_source(std::string_view path_or_url, const Options& options);

// With Overwrite::refuse, throws Error(exists) when the output already
// exists. `durability` applies to local files (an object store's upload is
// durable once complete). While a remote sink lives, SIGINT/SIGTERM are
// deferred (util/interrupt.hpp) so that the upload can be aborted cleanly.
// Publishes what a detached sink (ByteSink::detach()) of the same local path
// or URL stored, from its token (Backend::complete_detached): the rename of
// a local temporary, S3's CompleteMultipartUpload, the rename of a Redis
// temporary. Errors name the URL.
void complete_detached(std::string_view path_or_url, std::string_view token, const Options& options);

// The file backend's key ("/" as root) of a local path: absolute, normal.
std::string local_key(const std::filesystem::path& path);

std::unique_ptr<util::ByteSink> open_sink(std::string_view path_or_url, util::Overwrite overwrite,
                                          const Options& options,
                                          util::Durability durability = util::Durability::sync);

}  // namespace mithril::storage
