// formats/pickle.hpp — a restricted unpickler for the data.pkl of torch.save
// files. It never imports, calls or evaluates anything: it reads the opcode
// stream into a value tree, and the few callables torch.save uses are
// recognised by name and turned into typed nodes (a REDUCE of
// torch._utils._rebuild_tensor_v2 becomes a `tensor` node, and so on).
//
// Opcodes (Python's Lib/pickletools.py is the reference for their encodings):
//   accepted: PROTO (2..5) FRAME STOP MARK POP POP_MARK DUP
//             NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 LONG4 BINFLOAT
//             BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINSTRING SHORT_BINSTRING
//             BINBYTES SHORT_BINBYTES BINBYTES8
//             EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST APPEND APPENDS
//             EMPTY_DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET
//             BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET
//             GLOBAL STACK_GLOBAL REDUCE BUILD NEWOBJ BINPERSID
//   refused:  everything else (INST, OBJ, NEWOBJ_EX, EXT*, PERSID, the
//             protocol-0 text opcodes, out-of-band buffers), naming the opcode.
//
// Globals (the data-only subset of torch/_weights_only_unpickler.py):
//   collections.OrderedDict, collections.Counter, builtins.set,
//   builtins.frozenset, builtins.bytearray, builtins.complex, _codecs.encode,
//   torch.Size, torch.device, torch.Tensor, torch.nn.parameter.Parameter,
//   torch.<dtype> (torch.bfloat16, ...), torch[.cuda].<Name>Storage,
//   torch.storage.UntypedStorage, torch._utils._rebuild_tensor{,_v2,_v3},
//   torch._utils._rebuild_parameter{,_with_state},
//   torch._tensor._rebuild_from_type_v2 ("__builtin__" is read as "builtins").
// Any other global is refused: Error(unsupported, "CTX: refused global
// 'os.system' at offset N"). Quantized, sparse, nested and meta tensors are
// refused by the same rule.
//
// Resource limits: every length is checked against the remaining input before
// anything is allocated; MARK nesting, node count, total container items and
// memo entries are capped (UnpickleLimits). The tree is an arena indexed by
// PickleId, so deep or even cyclic structures (possible through the memo)
// cost no recursion here; walkers must bound their own depth. A limit
// exceeded is Error(unsupported); a malformed or truncated stream is
// Error(corrupt).
//
// Thread-safety: unpickle() is reentrant; a PickleTree is immutable once returned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/bytes.hpp"

namespace mithril::formats {

using PickleId = std::uint32_t;
inline constexpr PickleId k_no_pickle_node = 0xFFFFFFFF;

enum class PickleKind : std::uint8_t {
  none,
  boolean,      // `integer` is 0 or 1
  integer,      // fits int64
  big_integer,  // `text`: little-endian two's complement bytes (as LONG1 stores them)
  floating,     // `real`
  complex,      // `real`, `imag`
  string,       // `text`: UTF-8
  bytes,        // `text`: raw bytes (bytes, bytearray, Python 2 str)
  list,         // `items`
  tuple,        // `items`
  set,          // `items` (set and frozenset)
  dict,         // `items`: key0, value0, key1, value1, ... in insertion order
  ordered_dict, // as dict; `state`: BUILD state (a state_dict's `_metadata`)
  global,       // `text`: "module.name" of an allowed global not (yet) called
  dtype,        // `text`: torch dtype name without "torch." ("bfloat16")
  size,         // torch.Size: `items` are integer nodes
  device,       // torch.device: `text` ("cpu", "cuda:0")
  storage,      // persistent id: `index` into PickleTree::storages()
  tensor,       // `index` into PickleTree::tensors(); `state`: Python attributes
};

std::string_view pickle_kind_name(PickleKind kind) noexcept;

struct PickleNode {
  PickleKind kind = PickleKind::none;
  std::int64_t integer = 0;
  double real = 0;
  double imag = 0;
  std::string text;
  std::vector<PickleId> items;
  PickleId state = k_no_pickle_node;
  std::uint32_t index = 0;
};

// A storage named by a persistent id ('storage', <class>, key, location, numel).
struct PickleStorage {
  std::string key;           // record name under "<archive>/data/"
  std::string storage_type;  // class name without module: "FloatStorage", "UntypedStorage"
  std::string location;      // "cpu", "cuda:0", ...
  std::uint64_t numel = 0;   // elements of the class's dtype; bytes for UntypedStorage
};

// A tensor view: what the rebuild functions were given. Shapes and strides are
// checked to be non-negative here; bounds against the storage are the
// caller's business (it knows the record sizes).
struct PickleTensor {
  std::uint32_t storage = 0;         // index into PickleTree::storages()
  std::string dtype;                 // torch dtype name ("float32"): the rebuild's dtype argument
                                     // (_v3), else the storage class's ("uint8" for untyped)
  std::uint64_t storage_offset = 0;  // in elements of the tensor's dtype
  std::vector<std::uint64_t> shape;
  std::vector<std::uint64_t> stride;  // in elements
  bool requires_grad = false;
  bool is_parameter = false;  // came through _rebuild_parameter / Parameter
  bool conj = false;          // lazy conjugate bit (metadata {"conj": True})
  bool neg = false;           // lazy negative bit (metadata {"neg": True})
};

struct UnpickleLimits {
  std::size_t max_mark_depth = 1000;       // nested MARKs
  std::size_t max_nodes = 4'000'000;       // value nodes in the tree
  std::size_t max_items = 32'000'000;      // child references, all containers together
  std::size_t max_memo = 4'000'000;        // memo entries
  std::size_t max_stack = 4'000'000;       // values on the stack (all MARK levels)
};

class PickleTree {
 public:
  PickleId root() const noexcept { return m_root; }
  const PickleNode& node(PickleId id) const { return m_nodes.at(id); }
  std::size_t node_count() const noexcept { return m_nodes.size(); }
  const std::vector<PickleStorage>& storages() const noexcept { return m_storages; }
  const std::vector<PickleTensor>& tensors() const noexcept { return m_tensors; }
  int protocol() const noexcept { return m_protocol; }

 private:
  friend class Unpickler;
  std::vector<PickleNode> m_nodes;
  std::vector<PickleStorage> m_storages;
  std::vector<PickleTensor> m_tensors;
  PickleId m_root = k_no_pickle_node;
  int m_protocol = 0;
};

// Reads one pickle from `data` (which must end right after its STOP opcode:
// trailing bytes are refused as corrupt). `context` prefixes every error
// message, e.g. "model.pt: archive/data.pkl". Throws Error(unsupported) for a
// refused global or opcode or a limit exceeded, Error(corrupt) for a malformed
// or truncated stream.
PickleTree unpickle(util::ByteSpan data, std::string_view context, const UnpickleLimits& limits = {});

// Cheap textual rendering of a node for summaries and error messages: scalars
// in Python repr style ("3", "0.001", "'adam'", "None"), containers by kind and
// length ("dict(3)"); strings and bytes are shortened to `max_chars`.
std::string pickle_repr(const PickleTree& tree, PickleId id, std::size_t max_chars = 60);

}  // namespace mithril::formats
