// formats/torch_checkpoint.hpp — reads torch.save files (torch >= 1.6 zip
// format) without executing anything.
//
//   file     := zip archive of STORED records, all under one prefix "P/"
//               (P is the file stem when torch wrote it, often "archive"):
//   P/data.pkl            the pickled object; tensors are persistent ids
//                         ('storage', <class>, key, location, numel)
//   P/.format_version     "1"        (torch >= 2.1)
//   P/.storage_alignment  "64"       (torch >= 2.5)
//   P/byteorder           "little" or "big" (absent in old files: little)
//   P/data/<key>          raw bytes of each storage, 64-byte aligned
//   P/version             "3\n" (serialization version)
//   P/.data/serialization_id
//
// What the reader returns is enough to (a) list every tensor with a dotted
// name for `info`, (b) code each storage by its dtype while keeping every other
// byte of the file verbatim: storages carry their exact byte range in the file.
//
// Refused, Error(unsupported): legacy torch.save files (torch < 1.6, a plain
// pickle stream or tar), TorchScript archives, any global or opcode the
// restricted unpickler refuses (see formats/pickle.hpp), tensors that view one
// storage with different dtypes. Refused, Error(corrupt): zip damage, a missing
// storage record, a record whose size disagrees with the storage's numel, a
// tensor view reaching past its storage, nesting deeper than 1000 levels.
//
// Thread-safety: free functions, reentrant; results are plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/dtype.hpp"
#include "formats/pickle.hpp"
#include "util/bytes.hpp"

namespace mithril::formats {

struct TorchStorage {
  std::string key;           // persistent-id key: the record is `record`
  std::string record;        // zip record name, e.g. "archive/data/0"
  std::string storage_type;  // "FloatStorage", ..., or "UntypedStorage"
  std::string torch_dtype;   // element type: the class's, or for an untyped
                             // storage the dtype of the tensors viewing it
                             // ("uint8" when none does)
  std::optional<DType> dtype;  // nullopt: no Mithril equivalent (code as bytes)
  unsigned element_size = 1;   // bytes per element of torch_dtype
  std::uint64_t numel = 0;     // elements of element_size
  std::string location;        // "cpu", "cuda:0", ...
  bool stored = true;          // the record is STORED (torch always writes that)
  std::uint64_t data_offset = 0;  // absolute file offset of the first byte of the record's data
  std::uint64_t data_size = 0;    // numel * element_size; bytes in the file when stored
  std::uint32_t crc32 = 0;        // from the central directory
};

struct TorchTensor {
  std::string name;          // dotted path: "model.layer.weight", "optimizer.state.3.exp_avg"
  std::uint32_t storage = 0;  // index into TorchCheckpoint::storages
  std::string torch_dtype;    // "bfloat16"
  std::optional<DType> dtype;
  unsigned element_size = 1;
  std::vector<std::uint64_t> shape;
  std::vector<std::uint64_t> stride;  // in elements
  std::uint64_t storage_offset = 0;   // in elements
  bool requires_grad = false;
  bool is_parameter = false;
  bool conj = false;  // lazily conjugated: stored bytes are the unconjugated values
  bool neg = false;   // lazily negated

  std::uint64_t numel() const noexcept;
  // Row-major dense (C-contiguous) in the sense of torch's is_contiguous().
  bool contiguous() const noexcept;
  // Bytes this view's elements span inside its storage: [begin, end), in
  // bytes from the storage start; {0, 0} for an empty tensor.
  std::pair<std::uint64_t, std::uint64_t> byte_extent() const noexcept;
};

// A non-tensor leaf of the pickled object (epoch, lr, step, a list of floats...).
struct TorchValue {
  std::string name;   // dotted path
  PickleKind kind;
  std::string repr;   // Python-like rendering (pickle_repr)
};

struct TorchCheckpoint {
  std::string archive_prefix;  // "archive/": every record name starts with it
  std::string byteorder;       // "little", "big", or "" when absent (torch reads little)
  std::vector<TorchStorage> storages;  // sorted by data_offset (file order)
  std::vector<TorchTensor> tensors;    // in pickle traversal order
  std::vector<TorchValue> values;      // non-tensor leaves, traversal order
  PickleTree pickle;                   // the whole data.pkl value tree
};

// Reads a whole torch.save file held in memory (usually a MappedFile).
// `file_name` prefixes every error message. Throws Error as described above.
TorchCheckpoint read_torch_checkpoint(util::ByteSpan file, std::string_view file_name);

// True if the bytes look like a legacy (torch < 1.6) torch.save file: the
// pickled magic number 0x1950a86a20f9469cfc6c near the start, or a tar header.
bool looks_like_legacy_torch_save(util::ByteSpan file) noexcept;

// The raw bytes of a storage inside `file` (the same bytes the checkpoint was
// read from). Throws Error(unsupported) if the record is not STORED.
util::ByteSpan torch_storage_bytes(util::ByteSpan file, const TorchStorage& storage);

}  // namespace mithril::formats
