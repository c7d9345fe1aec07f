// storage/redis_backend.hpp — Redis as an object store (redis://), via hiredis.
//
// An object is one Redis string (at most 512 MiB, Redis's limit). Uploads
// are written with SETRANGE at explicit offsets (idempotent, so a retried
// part cannot duplicate bytes) into a temporary key that expires after a
// day, then published with RENAME + PERSIST in one MULTI/EXEC: the object
// appears whole or not at all, and an upload killed mid-way leaves at most a
// temporary that Redis expires by itself. list() uses SCAN (never KEYS).
#pragma once

#include "storage/backend.hpp"
#include "storage/url.hpp"

namespace mithril::storage {

std::unique_ptr<Backend> make_redis_backend(const Url& url, const Options& options);

}  // namespace mithril::storage
