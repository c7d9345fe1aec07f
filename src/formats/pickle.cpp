#include "formats/pickle.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "formats/pickle_text.hpp"
#include "formats/torch_dtype.hpp"
#include "mithril/error.hpp"

namespace mithril::formats {

using detail::escape;
using detail::utf8_to_latin1;
using detail::valid_utf8;

namespace {

// Opcode bytes, from CPython's Lib/pickle.py.
enum Op : std::uint8_t {
  MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2',
  FLOAT = 'F', INT = 'I', BININT = 'J', BININT1 = 'K', LONG = 'L', BININT2 = 'M',
  NONE = 'N', PERSID = 'P', BINPERSID = 'Q', REDUCE = 'R', STRING = 'S',
  BINSTRING = 'T', SHORT_BINSTRING = 'U', UNICODE = 'V', BINUNICODE = 'X',
  APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd', EMPTY_DICT = '}',
  APPENDS = 'e', GET = 'g', BINGET = 'h', INST = 'i', LONG_BINGET = 'j',
  LIST = 'l', EMPTY_LIST = ']', OBJ = 'o', PUT = 'p', BINPUT = 'q',
  LONG_BINPUT = 'r', SETITEM = 's', TUPLE = 't', EMPTY_TUPLE = ')',
  SETITEMS = 'u', BINFLOAT = 'G',
  PROTO = 0x80, NEWOBJ = 0x81, EXT1 = 0x82, EXT2 = 0x83, EXT4 = 0x84,
  TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89,
  LONG1 = 0x8a, LONG4 = 0x8b,
  BINBYTES = 'B', SHORT_BINBYTES = 'C',
  SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e,
  EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91, NEWOBJ_EX = 0x92,
  STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95,
  BYTEARRAY8 = 0x96, NEXT_BUFFER = 0x97, READONLY_BUFFER = 0x98,
};

std::string_view refused_opcode_name(std::uint8_t op) {
  switch (op) {
    case FLOAT: return "FLOAT";
    case INT: return "INT";
    case LONG: return "LONG";
    case PERSID: return "PERSID";
    case STRING: return "STRING";
    case UNICODE: return "UNICODE";
    case DICT: return "DICT";
    case GET: return "GET";
    case INST: return "INST";
    case LIST: return "LIST";
    case OBJ: return "OBJ";
    case PUT: return "PUT";
    case EXT1: return "EXT1";
    case EXT2: return "EXT2";
    case EXT4: return "EXT4";
    case NEWOBJ_EX: return "NEWOBJ_EX";
    case BYTEARRAY8: return "BYTEARRAY8";
    case NEXT_BUFFER: return "NEXT_BUFFER";
    case READONLY_BUFFER: return "READONLY_BUFFER";
    default: return "";
  }
}

constexpr std::size_t k_max_global_name = 512;


bool is_tensor_rebuild(std::string_view name) {
  return name == "torch._utils._rebuild_tensor" || name == "torch._utils._rebuild_tensor_v2" ||
         name == "torch._utils._rebuild_tensor_v3" || name == "torch._utils._rebuild_parameter" ||
         name == "torch._utils._rebuild_parameter_with_state";
}

// Allowed globals that are pushed as `global` nodes (dtypes and storage
// classes are recognised separately).
constexpr std::array<std::string_view, 17> k_allowed_globals{
    "collections.OrderedDict",
    "collections.Counter",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.complex",
    "_codecs.encode",
    "torch.Size",
    "torch.device",
    "torch.Tensor",
    "torch.nn.parameter.Parameter",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
};

// Why a global torch itself knows is still refused here.
std::string_view refusal_hint(std::string_view name) {
  if (name == "torch._utils._rebuild_qtensor" || name.find("per_tensor") != std::string_view::npos ||
      name.find("per_channel") != std::string_view::npos)
    return " (quantized tensors are not supported)";
  if (name == "torch._utils._rebuild_sparse_tensor" || name == "torch.serialization._get_layout")
    return " (sparse tensors are not supported)";
  if (name == "torch._utils._rebuild_nested_tensor" || name.starts_with("torch.nested."))
    return " (nested tensors are not supported)";
  if (name == "torch._utils._rebuild_meta_tensor_no_storage") return " (meta tensors are not supported)";
  if (name == "torch._utils._rebuild_wrapper_subclass" || name.starts_with("torch.distributed."))
    return " (tensor subclasses such as DTensor are not supported)";
  if (name.starts_with("torch._utils._rebuild_device_tensor")) return " (numpy-backed tensors are not supported)";
  if (name.starts_with("__torch__.")) return " (TorchScript archives are not supported)";
  if (name.starts_with("numpy.")) return " (numpy objects are not supported)";
  return "";
}

}  // namespace

class Unpickler {
 public:
  Unpickler(util::ByteSpan data, std::string_view context, const UnpickleLimits& limits)
      : m_data(data), m_ctx(context), m_lim(limits) {}

  PickleTree run();

 private:
  // ---- errors ----
  [[noreturn]] void fail(Errc code, const std::string& what) const {
    throw Error(code, fmt::format("{}: {} at offset {}", m_ctx, what, m_op_pos));
  }
  [[noreturn]] void corrupt(const std::string& what) const { fail(Errc::corrupt, what); }

  // ---- input ----
  void need(std::uint64_t n) const {
    if (n > m_data.size() - m_pos)
      corrupt(fmt::format("truncated pickle: {} needs {} more bytes, {} left", m_op_name, n, m_data.size() - m_pos));
  }
  template <typename T>
  T read_le() {
    need(sizeof(T));
    T v = util::load_le<T>(m_data.data() + m_pos);
    m_pos += sizeof(T);
    return v;
  }
  std::string_view read_bytes(std::uint64_t n) {
    need(n);
    auto s = util::as_chars(m_data.subspan(m_pos, static_cast<std::size_t>(n)));
    m_pos += static_cast<std::size_t>(n);
    return s;
  }
  std::string_view read_line() {
    const auto rest = util::as_chars(m_data.subspan(m_pos));
    const auto nl = rest.substr(0, k_max_global_name + 1).find('\n');
    if (nl == std::string_view::npos) {
      if (rest.size() <= k_max_global_name) corrupt("truncated pickle: GLOBAL name has no newline");
      fail(Errc::unsupported, fmt::format("GLOBAL name longer than {} bytes", k_max_global_name));
    }
    m_pos += nl + 1;
    return rest.substr(0, nl);
  }

  // ---- tree and stack ----
  PickleNode& node(PickleId id) { return m_tree.m_nodes[id]; }
  PickleId add(PickleNode n) {
    if (m_tree.m_nodes.size() >= m_lim.max_nodes)
      fail(Errc::unsupported, fmt::format("pickle holds more than {} values", m_lim.max_nodes));
    count_items(n.items.size());
    m_tree.m_nodes.push_back(std::move(n));
    return static_cast<PickleId>(m_tree.m_nodes.size() - 1);
  }
  PickleId add_kind(PickleKind kind) {
    PickleNode n;
    n.kind = kind;
    return add(std::move(n));
  }
  PickleId add_text(PickleKind kind, std::string_view text) {
    PickleNode n;
    n.kind = kind;
    n.text = std::string(text);
    return add(std::move(n));
  }
  PickleId add_int(std::int64_t v) {
    PickleNode n;
    n.kind = PickleKind::integer;
    n.integer = v;
    return add(std::move(n));
  }
  void count_items(std::size_t n) {
    m_items += n;
    if (m_items > m_lim.max_items)
      fail(Errc::unsupported, fmt::format("pickle containers hold more than {} items in all", m_lim.max_items));
  }
  std::size_t base() const { return m_marks.empty() ? 0 : m_marks.back(); }
  void push(PickleId id) {
    if (m_stack.size() >= m_lim.max_stack)
      fail(Errc::unsupported, fmt::format("pickle stack deeper than {}", m_lim.max_stack));
    m_stack.push_back(id);
  }
  PickleId top() const {
    if (m_stack.size() <= base()) corrupt(fmt::format("{} on an empty stack", m_op_name));
    return m_stack.back();
  }
  PickleId pop() {
    const PickleId id = top();
    m_stack.pop_back();
    return id;
  }
  std::vector<PickleId> pop_mark() {
    if (m_marks.empty()) corrupt(fmt::format("{} without a MARK", m_op_name));
    const std::size_t b = m_marks.back();
    m_marks.pop_back();
    std::vector<PickleId> items(m_stack.begin() + static_cast<std::ptrdiff_t>(b), m_stack.end());
    m_stack.resize(b);
    return items;
  }
  PickleId cached(PickleId& slot, PickleKind kind, std::int64_t v) {
    // None, True and False are immutable; one node each is enough.
    if (slot == k_no_pickle_node) {
      PickleNode n;
      n.kind = kind;
      n.integer = v;
      slot = add(std::move(n));
    }
    return slot;
  }

  // ---- opcode groups ----
  void op_long(std::string_view bytes);
  void op_string(std::string_view s);
  void op_global(std::string module, std::string name);
  void op_setitems(PickleId target, const std::vector<PickleId>& kv);
  void op_binpersid();
  void op_newobj();
  void op_build();
  PickleId call(const std::string& fn, PickleId args_id);
  PickleId make_tensor(const std::string& fn, const std::vector<PickleId>& a);
  PickleId make_parameter(PickleId tensor_id, PickleId rg_id, PickleId hooks_id, PickleId state_id);

  void check_key(PickleId key) {
    const auto k = node(key).kind;
    if (k == PickleKind::list || k == PickleKind::dict || k == PickleKind::ordered_dict || k == PickleKind::set)
      corrupt(fmt::format("unhashable dict key of type {}", pickle_kind_name(k)));
  }
  const PickleNode& expect(PickleId id, PickleKind kind, std::string_view what) {
    const auto& n = node(id);
    if (n.kind != kind)
      corrupt(fmt::format("{} must be {}, not {}", what, pickle_kind_name(kind), pickle_kind_name(n.kind)));
    return n;
  }
  std::vector<std::uint64_t> dims(PickleId id, std::string_view what);
  bool empty_mapping(PickleId id) {
    const auto& n = node(id);
    return (n.kind == PickleKind::dict || n.kind == PickleKind::ordered_dict) && n.items.empty();
  }

  util::ByteSpan m_data;
  std::string m_ctx;
  UnpickleLimits m_lim;
  PickleTree m_tree;
  std::size_t m_pos = 0;
  std::size_t m_op_pos = 0;
  std::string_view m_op_name;
  std::vector<PickleId> m_stack;
  std::vector<std::size_t> m_marks;
  std::unordered_map<std::uint32_t, PickleId> m_memo;
  std::unordered_map<std::string, std::uint32_t> m_storage_by_key;
  std::size_t m_items = 0;
  PickleId m_none = k_no_pickle_node, m_true = k_no_pickle_node, m_false = k_no_pickle_node;
};

PickleTree Unpickler::run() {
  for (;;) {
    if (m_pos >= m_data.size()) {
      m_op_pos = m_pos;
      corrupt("truncated pickle: no STOP opcode");
    }
    m_op_pos = m_pos;
    const auto op = static_cast<std::uint8_t>(m_data[m_pos++]);
    m_op_name = "opcode";
    switch (op) {
      case PROTO: {
        m_op_name = "PROTO";
        const auto v = read_le<std::uint8_t>();
        if (v < 2 || v > 5) fail(Errc::unsupported, fmt::format("pickle protocol {} is not supported (2 to 5)", v));
        m_tree.m_protocol = v;
        break;
      }
      case FRAME: {
        m_op_name = "FRAME";
        // Frames only group opcodes for buffered reading; the stream reads the
        // same without them. The length must still be honest.
        need(read_le<std::uint64_t>());
        break;
      }
      case STOP: {
        m_op_name = "STOP";
        if (!m_marks.empty()) corrupt("STOP with an open MARK");
        if (m_stack.size() != 1) corrupt(fmt::format("STOP with {} values on the stack (want 1)", m_stack.size()));
        if (m_pos != m_data.size())
          corrupt(fmt::format("{} bytes after the STOP opcode", m_data.size() - m_pos));
        m_tree.m_root = m_stack.back();
        return std::move(m_tree);
      }
      case MARK:
        m_op_name = "MARK";
        if (m_marks.size() >= m_lim.max_mark_depth)
          fail(Errc::unsupported, fmt::format("MARK nesting deeper than {}", m_lim.max_mark_depth));
        m_marks.push_back(m_stack.size());
        break;
      case POP:
        m_op_name = "POP";
        if (m_stack.size() == base() && !m_marks.empty())
          m_marks.pop_back();
        else
          pop();
        break;
      case POP_MARK:
        m_op_name = "POP_MARK";
        pop_mark();
        break;
      case DUP:
        m_op_name = "DUP";
        push(top());
        break;
      case NONE: push(cached(m_none, PickleKind::none, 0)); break;
      case NEWTRUE: push(cached(m_true, PickleKind::boolean, 1)); break;
      case NEWFALSE: push(cached(m_false, PickleKind::boolean, 0)); break;
      case BININT: m_op_name = "BININT"; push(add_int(read_le<std::int32_t>())); break;
      case BININT1: m_op_name = "BININT1"; push(add_int(read_le<std::uint8_t>())); break;
      case BININT2: m_op_name = "BININT2"; push(add_int(read_le<std::uint16_t>())); break;
      case LONG1: {
        m_op_name = "LONG1";
        const auto n = read_le<std::uint8_t>();
        op_long(read_bytes(n));
        break;
      }
      case LONG4: {
        m_op_name = "LONG4";
        const auto n = read_le<std::int32_t>();
        if (n < 0) corrupt("LONG4 with a negative length");
        op_long(read_bytes(static_cast<std::uint64_t>(n)));
        break;
      }
      case BINFLOAT: {
        m_op_name = "BINFLOAT";
        // The only big-endian field of the format.
        const auto bits = __builtin_bswap64(read_le<std::uint64_t>());
        PickleNode n;
        n.kind = PickleKind::floating;
        n.real = std::bit_cast<double>(bits);
        push(add(std::move(n)));
        break;
      }
      case BINUNICODE: m_op_name = "BINUNICODE"; op_string(read_bytes(read_le<std::uint32_t>())); break;
      case SHORT_BINUNICODE: m_op_name = "SHORT_BINUNICODE"; op_string(read_bytes(read_le<std::uint8_t>())); break;
      case BINUNICODE8: m_op_name = "BINUNICODE8"; op_string(read_bytes(read_le<std::uint64_t>())); break;
      case BINSTRING: {
        m_op_name = "BINSTRING";
        const auto n = read_le<std::int32_t>();
        if (n < 0) corrupt("BINSTRING with a negative length");
        push(add_text(PickleKind::bytes, read_bytes(static_cast<std::uint64_t>(n))));
        break;
      }
      case SHORT_BINSTRING:
        m_op_name = "SHORT_BINSTRING";
        push(add_text(PickleKind::bytes, read_bytes(read_le<std::uint8_t>())));
        break;
      case BINBYTES:
        m_op_name = "BINBYTES";
        push(add_text(PickleKind::bytes, read_bytes(read_le<std::uint32_t>())));
        break;
      case SHORT_BINBYTES:
        m_op_name = "SHORT_BINBYTES";
        push(add_text(PickleKind::bytes, read_bytes(read_le<std::uint8_t>())));
        break;
      case BINBYTES8:
        m_op_name = "BINBYTES8";
        push(add_text(PickleKind::bytes, read_bytes(read_le<std::uint64_t>())));
        break;
      case EMPTY_TUPLE: push(add_kind(PickleKind::tuple)); break;
      case EMPTY_LIST: push(add_kind(PickleKind::list)); break;
      case EMPTY_DICT: push(add_kind(PickleKind::dict)); break;
      case EMPTY_SET: push(add_kind(PickleKind::set)); break;
      case TUPLE: {
        m_op_name = "TUPLE";
        PickleNode n;
        n.kind = PickleKind::tuple;
        n.items = pop_mark();
        push(add(std::move(n)));
        break;
      }
      case FROZENSET: {
        m_op_name = "FROZENSET";
        PickleNode n;
        n.kind = PickleKind::set;
        n.items = pop_mark();
        push(add(std::move(n)));
        break;
      }
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        m_op_name = op == TUPLE1 ? "TUPLE1" : op == TUPLE2 ? "TUPLE2" : "TUPLE3";
        const std::size_t k = op - TUPLE1 + 1u;
        if (m_stack.size() < base() + k) corrupt(fmt::format("{} needs {} values on the stack", m_op_name, k));
        PickleNode n;
        n.kind = PickleKind::tuple;
        n.items.assign(m_stack.end() - static_cast<std::ptrdiff_t>(k), m_stack.end());
        m_stack.resize(m_stack.size() - k);
        push(add(std::move(n)));
        break;
      }
      case APPEND: {
        m_op_name = "APPEND";
        const PickleId v = pop();
        const PickleId t = top();
        if (node(t).kind != PickleKind::list)
          corrupt(fmt::format("APPEND to a {}, not a list", pickle_kind_name(node(t).kind)));
        count_items(1);
        node(t).items.push_back(v);
        break;
      }
      case APPENDS:
      case ADDITEMS: {
        m_op_name = op == APPENDS ? "APPENDS" : "ADDITEMS";
        const auto items = pop_mark();
        const PickleId t = top();
        const auto want = op == APPENDS ? PickleKind::list : PickleKind::set;
        if (node(t).kind != want)
          corrupt(fmt::format("{} to a {}, not a {}", m_op_name, pickle_kind_name(node(t).kind), pickle_kind_name(want)));
        count_items(items.size());
        node(t).items.insert(node(t).items.end(), items.begin(), items.end());
        break;
      }
      case SETITEM: {
        m_op_name = "SETITEM";
        const PickleId v = pop();
        const PickleId k = pop();
        op_setitems(top(), {k, v});
        break;
      }
      case SETITEMS: {
        m_op_name = "SETITEMS";
        const auto kv = pop_mark();
        if (kv.size() % 2) corrupt("SETITEMS with an odd number of values");
        op_setitems(top(), kv);
        break;
      }
      case BINPUT:
      case LONG_BINPUT:
      case MEMOIZE: {
        m_op_name = op == BINPUT ? "BINPUT" : op == LONG_BINPUT ? "LONG_BINPUT" : "MEMOIZE";
        const std::uint32_t idx = op == BINPUT        ? read_le<std::uint8_t>()
                                  : op == LONG_BINPUT ? read_le<std::uint32_t>()
                                                      : static_cast<std::uint32_t>(m_memo.size());
        const PickleId v = top();
        if (m_memo.size() >= m_lim.max_memo && !m_memo.contains(idx))
          fail(Errc::unsupported, fmt::format("pickle memo holds more than {} entries", m_lim.max_memo));
        m_memo[idx] = v;
        break;
      }
      case BINGET:
      case LONG_BINGET: {
        m_op_name = op == BINGET ? "BINGET" : "LONG_BINGET";
        const std::uint32_t idx = op == BINGET ? read_le<std::uint8_t>() : read_le<std::uint32_t>();
        const auto it = m_memo.find(idx);
        if (it == m_memo.end()) corrupt(fmt::format("{} of memo index {}, which was never stored", m_op_name, idx));
        push(it->second);
        break;
      }
      case GLOBAL: {
        m_op_name = "GLOBAL";
        std::string module(read_line());
        std::string name(read_line());
        op_global(std::move(module), std::move(name));
        break;
      }
      case STACK_GLOBAL: {
        m_op_name = "STACK_GLOBAL";
        const PickleId name = pop();
        const PickleId module = pop();
        if (node(name).kind != PickleKind::string || node(module).kind != PickleKind::string)
          corrupt("STACK_GLOBAL needs two strings");
        op_global(node(module).text, node(name).text);
        break;
      }
      case REDUCE: {
        m_op_name = "REDUCE";
        const PickleId args = pop();
        const PickleId fn = pop();
        if (node(fn).kind != PickleKind::global)
          corrupt(fmt::format("REDUCE on a {}, not a global", pickle_kind_name(node(fn).kind)));
        const std::string name = node(fn).text;
        push(call(name, args));
        break;
      }
      case BUILD: m_op_name = "BUILD"; op_build(); break;
      case NEWOBJ: m_op_name = "NEWOBJ"; op_newobj(); break;
      case BINPERSID: m_op_name = "BINPERSID"; op_binpersid(); break;
      default: {
        const auto name = refused_opcode_name(op);
        if (!name.empty())
          fail(Errc::unsupported, fmt::format("refused opcode {} (0x{:02x})", name, op));
        corrupt(fmt::format("unknown opcode 0x{:02x}", op));
      }
    }
  }
}

void Unpickler::op_long(std::string_view b) {
  // Little-endian two's complement (pickletools: decode_long).
  const std::size_t n = b.size();
  bool fits = n <= 8;
  if (!fits) {
    const auto sign = static_cast<unsigned char>(b[7]) & 0x80 ? 0xFF : 0x00;
    fits = std::all_of(b.begin() + 8, b.end(), [&](char c) { return static_cast<unsigned char>(c) == sign; });
  }
  if (!fits) {
    push(add_text(PickleKind::big_integer, b));
    return;
  }
  std::uint64_t v = 0;
  const std::size_t m = std::min<std::size_t>(n, 8);
  for (std::size_t i = 0; i < m; ++i) v |= std::uint64_t{static_cast<unsigned char>(b[i])} << (8 * i);
  if (m > 0 && m < 8 && (static_cast<unsigned char>(b[m - 1]) & 0x80)) v |= ~std::uint64_t{0} << (8 * m);
  push(add_int(static_cast<std::int64_t>(v)));
}

void Unpickler::op_string(std::string_view s) {
  if (!valid_utf8(s)) corrupt(fmt::format("{} is not valid UTF-8", m_op_name));
  push(add_text(PickleKind::string, s));
}

void Unpickler::op_global(std::string module, std::string name) {
  if (module == "__builtin__") module = "builtins";  // protocol-2 spelling (Python 2 names)
  const std::string full = module + "." + name;
  if (module == "torch") {
    if (torch_dtype_by_name(name)) {
      push(add_text(PickleKind::dtype, name));
      return;
    }
    if (torch_dtype_by_storage(name)) {
      push(add_text(PickleKind::global, full));
      return;
    }
  }
  if (module == "torch.cuda" && torch_dtype_by_storage(name)) {
    push(add_text(PickleKind::global, "torch." + name));  // the dtype is what matters; location says cuda
    return;
  }
  if (full == "torch.storage.UntypedStorage" || full == "torch.UntypedStorage") {
    push(add_text(PickleKind::global, "torch.UntypedStorage"));
    return;
  }
  if (std::find(k_allowed_globals.begin(), k_allowed_globals.end(), full) != k_allowed_globals.end()) {
    push(add_text(PickleKind::global, full));
    return;
  }
  fail(Errc::unsupported, fmt::format("refused global '{}'{}", escape(full), refusal_hint(full)));
}

void Unpickler::op_setitems(PickleId target, const std::vector<PickleId>& kv) {
  const auto kind = node(target).kind;
  if (kind != PickleKind::dict && kind != PickleKind::ordered_dict)
    corrupt(fmt::format("{} on a {}, not a dict", m_op_name, pickle_kind_name(kind)));
  for (std::size_t i = 0; i < kv.size(); i += 2) check_key(kv[i]);
  count_items(kv.size());
  // Duplicate keys are kept as written; callers that derive names from keys
  // detect collisions themselves.
  auto& items = node(target).items;
  items.insert(items.end(), kv.begin(), kv.end());
}

void Unpickler::op_binpersid() {
  const PickleId pid = pop();
  const auto& p = node(pid);
  // torch.save (serialization.py, persistent_id):
  //   ("storage", storage_type, key, location, numel)
  if (p.kind != PickleKind::tuple || p.items.size() != 5)
    fail(Errc::unsupported, "persistent id is not a 5-tuple ('storage', type, key, location, numel)");
  const auto& tag = node(p.items[0]);
  if ((tag.kind != PickleKind::string && tag.kind != PickleKind::bytes) || tag.text != "storage")
    fail(Errc::unsupported, "persistent id other than 'storage'");
  const auto& type = node(p.items[1]);
  const auto& key = node(p.items[2]);
  const auto& loc = node(p.items[3]);
  const auto& numel = node(p.items[4]);
  if (type.kind != PickleKind::global || !type.text.ends_with("Storage"))
    corrupt("persistent id: storage type is not a storage class");
  if (key.kind != PickleKind::string || key.text.empty()) corrupt("persistent id: storage key is not a string");
  if (loc.kind != PickleKind::string) corrupt("persistent id: location is not a string");
  if (numel.kind != PickleKind::integer || numel.integer < 0)
    corrupt("persistent id: numel is not a non-negative integer");
  PickleStorage s;
  s.key = key.text;
  s.storage_type = type.text.substr(type.text.rfind('.') + 1);
  s.location = loc.text;
  s.numel = static_cast<std::uint64_t>(numel.integer);
  std::uint32_t index;
  if (auto it = m_storage_by_key.find(s.key); it != m_storage_by_key.end()) {
    const auto& old = m_tree.m_storages[it->second];
    if (old.storage_type != s.storage_type || old.numel != s.numel || old.location != s.location)
      corrupt(fmt::format("storage '{}' is described twice, differently", escape(s.key)));
    index = it->second;
  } else {
    index = static_cast<std::uint32_t>(m_tree.m_storages.size());
    m_storage_by_key.emplace(s.key, index);
    m_tree.m_storages.push_back(std::move(s));
  }
  PickleNode n;
  n.kind = PickleKind::storage;
  n.index = index;
  push(add(std::move(n)));
}

void Unpickler::op_build() {
  const PickleId state = pop();
  const PickleId t = top();
  const auto kind = node(t).kind;
  if (kind != PickleKind::dict && kind != PickleKind::ordered_dict && kind != PickleKind::tensor)
    fail(Errc::unsupported, fmt::format("BUILD on a {} (only OrderedDict and tensor state is accepted)",
                                        pickle_kind_name(kind)));
  node(t).state = state;
}

void Unpickler::op_newobj() {
  const PickleId args = pop();
  const PickleId cls = pop();
  const auto& c = node(cls);
  if (c.kind != PickleKind::global || c.text != "torch.nn.parameter.Parameter")
    fail(Errc::unsupported, fmt::format("NEWOBJ of {} (only torch.nn.parameter.Parameter is accepted)",
                                        c.kind == PickleKind::global ? "'" + c.text + "'"
                                                                     : std::string(pickle_kind_name(c.kind))));
  const auto& a = node(args);
  if (a.kind != PickleKind::tuple || a.items.empty() || a.items.size() > 2)
    corrupt("Parameter(data, requires_grad) needs 1 or 2 arguments");
  const PickleId data = a.items[0];
  const PickleId rg = a.items.size() > 1 ? a.items[1] : cached(m_true, PickleKind::boolean, 1);
  push(make_parameter(data, rg, k_no_pickle_node, k_no_pickle_node));
}

std::vector<std::uint64_t> Unpickler::dims(PickleId id, std::string_view what) {
  const auto& n = node(id);
  if (n.kind != PickleKind::tuple && n.kind != PickleKind::size && n.kind != PickleKind::list)
    corrupt(fmt::format("tensor {} is a {}, not a tuple", what, pickle_kind_name(n.kind)));
  std::vector<std::uint64_t> out;
  out.reserve(n.items.size());
  for (PickleId item : n.items) {
    const auto& d = node(item);
    if (d.kind != PickleKind::integer || d.integer < 0)
      corrupt(fmt::format("tensor {} holds something other than a non-negative integer", what));
    out.push_back(static_cast<std::uint64_t>(d.integer));
  }
  return out;
}

PickleId Unpickler::make_tensor(const std::string& fn, const std::vector<PickleId>& a) {
  // Signatures from torch/_utils.py (torch 2.13):
  //   _rebuild_tensor(storage, storage_offset, size, stride)
  //   _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None)
  //   _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None)
  const bool v1 = fn.ends_with("_rebuild_tensor"), v3 = fn.ends_with("_v3");
  const std::size_t min_args = v1 ? 4 : v3 ? 7 : 6;
  const std::size_t max_args = v1 ? 4 : min_args + 1;
  if (a.size() < min_args || a.size() > max_args)
    corrupt(fmt::format("{} called with {} arguments", fn, a.size()));
  PickleTensor t;
  const auto& st = expect(a[0], PickleKind::storage, "tensor storage");
  t.storage = st.index;
  const auto& off = expect(a[1], PickleKind::integer, "tensor storage offset");
  if (off.integer < 0) corrupt("negative tensor storage offset");
  t.storage_offset = static_cast<std::uint64_t>(off.integer);
  t.shape = dims(a[2], "size");
  t.stride = dims(a[3], "stride");
  if (t.shape.size() != t.stride.size())
    corrupt(fmt::format("tensor size has {} dimensions but stride has {}", t.shape.size(), t.stride.size()));
  const auto& storage = m_tree.m_storages[t.storage];
  if (storage.storage_type == "UntypedStorage") {
    t.dtype = "uint8";
  } else {
    const auto* info = torch_dtype_by_storage(storage.storage_type);
    if (!info) corrupt(fmt::format("unknown storage class '{}'", escape(storage.storage_type)));
    t.dtype = std::string(info->name);
  }
  if (!v1) {
    t.requires_grad = expect(a[4], PickleKind::boolean, "requires_grad").integer != 0;
    if (!empty_mapping(a[5]) && node(a[5]).kind != PickleKind::none)
      fail(Errc::unsupported, "tensor with backward hooks");
    std::size_t next = 6;
    if (v3) t.dtype = expect(a[next++], PickleKind::dtype, "tensor dtype").text;
    if (next < a.size() && node(a[next]).kind != PickleKind::none) {
      const auto& md = node(a[next]);
      if (md.kind != PickleKind::dict && md.kind != PickleKind::ordered_dict)
        corrupt("tensor metadata is not a dict");
      for (std::size_t i = 0; i < md.items.size(); i += 2) {
        const auto& k = node(md.items[i]);
        const auto& v = node(md.items[i + 1]);
        const bool flag = v.kind == PickleKind::boolean && v.integer != 0;
        if (k.kind == PickleKind::string && k.text == "conj" && v.kind == PickleKind::boolean)
          t.conj = flag;
        else if (k.kind == PickleKind::string && k.text == "neg" && v.kind == PickleKind::boolean)
          t.neg = flag;
        else
          fail(Errc::unsupported, fmt::format("tensor metadata key {}", pickle_repr(m_tree, md.items[i])));
      }
    }
  }
  PickleNode n;
  n.kind = PickleKind::tensor;
  n.index = static_cast<std::uint32_t>(m_tree.m_tensors.size());
  m_tree.m_tensors.push_back(std::move(t));
  return add(std::move(n));
}

PickleId Unpickler::make_parameter(PickleId tensor_id, PickleId rg_id, PickleId hooks_id, PickleId state_id) {
  // _rebuild_parameter(data, requires_grad, backward_hooks) wraps a tensor:
  // a new view record that shares the data tensor's storage.
  const auto& src = expect(tensor_id, PickleKind::tensor, "Parameter data");
  PickleTensor t = m_tree.m_tensors[src.index];
  t.is_parameter = true;
  t.requires_grad = expect(rg_id, PickleKind::boolean, "Parameter requires_grad").integer != 0;
  if (hooks_id != k_no_pickle_node && !empty_mapping(hooks_id) && node(hooks_id).kind != PickleKind::none)
    fail(Errc::unsupported, "Parameter with backward hooks");
  PickleNode n;
  n.kind = PickleKind::tensor;
  n.index = static_cast<std::uint32_t>(m_tree.m_tensors.size());
  n.state = state_id;
  m_tree.m_tensors.push_back(std::move(t));
  return add(std::move(n));
}

PickleId Unpickler::call(const std::string& fn, PickleId args_id) {
  if (node(args_id).kind != PickleKind::tuple)
    corrupt(fmt::format("arguments of {} are a {}, not a tuple", fn, pickle_kind_name(node(args_id).kind)));
  const std::vector<PickleId> a = node(args_id).items;  // copy: node references move as the arena grows
  auto arity = [&](std::size_t lo, std::size_t hi) {
    if (a.size() < lo || a.size() > hi) corrupt(fmt::format("{} called with {} arguments", fn, a.size()));
  };
  auto kind = [&](std::size_t i) { return node(a[i]).kind; };

  if (fn == "collections.OrderedDict" || fn == "collections.Counter") {
    arity(0, 1);
    PickleNode n;
    n.kind = fn == "collections.OrderedDict" ? PickleKind::ordered_dict : PickleKind::dict;
    if (a.size() == 1) {
      if (kind(0) == PickleKind::dict || kind(0) == PickleKind::ordered_dict) {
        n.items = node(a[0]).items;
      } else if (kind(0) == PickleKind::list || kind(0) == PickleKind::tuple) {
        for (PickleId pair : node(a[0]).items) {
          const auto& p = node(pair);
          if ((p.kind != PickleKind::tuple && p.kind != PickleKind::list) || p.items.size() != 2)
            corrupt(fmt::format("{} item is not a (key, value) pair", fn));
          check_key(p.items[0]);
          n.items.push_back(p.items[0]);
          n.items.push_back(p.items[1]);
        }
      } else {
        corrupt(fmt::format("{} of a {}", fn, pickle_kind_name(kind(0))));
      }
    }
    return add(std::move(n));
  }
  if (fn == "builtins.set" || fn == "builtins.frozenset") {
    arity(0, 1);
    PickleNode n;
    n.kind = PickleKind::set;
    if (a.size() == 1) {
      if (kind(0) != PickleKind::list && kind(0) != PickleKind::tuple && kind(0) != PickleKind::set)
        corrupt(fmt::format("{} of a {}", fn, pickle_kind_name(kind(0))));
      n.items = node(a[0]).items;
    }
    return add(std::move(n));
  }
  if (fn == "_codecs.encode" || fn == "builtins.bytearray") {
    // Protocol 2 writes bytes as _codecs.encode(str, 'latin1') and bytearray
    // as bytearray(str, 'latin-1') (CPython copyreg / bytes.__reduce_ex__).
    arity(fn == "_codecs.encode" ? 2 : 0, 2);
    if (a.empty()) return add_text(PickleKind::bytes, "");
    if (a.size() == 1) {
      if (kind(0) != PickleKind::bytes) corrupt(fmt::format("{} of a {}", fn, pickle_kind_name(kind(0))));
      return add_text(PickleKind::bytes, node(a[0]).text);
    }
    const auto& enc = node(a[1]);
    if (kind(0) != PickleKind::string || enc.kind != PickleKind::string ||
        (enc.text != "latin1" && enc.text != "latin-1"))
      fail(Errc::unsupported, fmt::format("{} other than (str, 'latin1')", fn));
    std::string out;
    if (!utf8_to_latin1(node(a[0]).text, out)) corrupt(fmt::format("{}: text is not latin-1", fn));
    return add_text(PickleKind::bytes, out);
  }
  if (fn == "builtins.complex") {
    arity(0, 2);
    PickleNode n;
    n.kind = PickleKind::complex;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const auto& v = node(a[i]);
      double d;
      if (v.kind == PickleKind::floating)
        d = v.real;
      else if (v.kind == PickleKind::integer || v.kind == PickleKind::boolean)
        d = static_cast<double>(v.integer);
      else
        corrupt(fmt::format("complex() of a {}", pickle_kind_name(v.kind)));
      (i == 0 ? n.real : n.imag) = d;
    }
    return add(std::move(n));
  }
  if (fn == "torch.Size") {
    arity(0, 1);
    PickleNode n;
    n.kind = PickleKind::size;
    if (a.size() == 1) {
      if (kind(0) != PickleKind::tuple && kind(0) != PickleKind::list)
        corrupt(fmt::format("torch.Size of a {}", pickle_kind_name(kind(0))));
      n.items = node(a[0]).items;
      for (PickleId d : n.items)
        if (node(d).kind != PickleKind::integer) corrupt("torch.Size holds a non-integer");
    }
    return add(std::move(n));
  }
  if (fn == "torch.device") {
    arity(1, 2);
    if (kind(0) != PickleKind::string) corrupt("torch.device of a non-string");
    std::string text = node(a[0]).text;
    if (a.size() == 2 && kind(1) != PickleKind::none) {
      if (kind(1) != PickleKind::integer) corrupt("torch.device index is not an integer");
      text += fmt::format(":{}", node(a[1]).integer);
    }
    return add_text(PickleKind::device, text);
  }
  if (fn == "torch._utils._rebuild_tensor" || fn == "torch._utils._rebuild_tensor_v2" ||
      fn == "torch._utils._rebuild_tensor_v3")
    return make_tensor(fn, a);
  if (fn == "torch._utils._rebuild_parameter") {
    arity(3, 3);
    return make_parameter(a[0], a[1], a[2], k_no_pickle_node);
  }
  if (fn == "torch._utils._rebuild_parameter_with_state") {
    arity(4, 4);
    return make_parameter(a[0], a[1], a[2], empty_mapping(a[3]) ? k_no_pickle_node : a[3]);
  }
  if (fn == "torch._tensor._rebuild_from_type_v2") {
    // _rebuild_from_type_v2(func, new_type, args, state): a tensor (or
    // Parameter) carrying Python attributes in `state`.
    arity(4, 4);
    const auto& f = node(a[0]);
    const auto& type = node(a[1]);
    if (f.kind != PickleKind::global || !is_tensor_rebuild(f.text))
      fail(Errc::unsupported, "_rebuild_from_type_v2 with a function other than a tensor rebuild");
    if (type.kind != PickleKind::global || (type.text != "torch.Tensor" && type.text != "torch.nn.parameter.Parameter"))
      fail(Errc::unsupported, "_rebuild_from_type_v2 of a type other than torch.Tensor or Parameter");
    const bool parameter = type.text == "torch.nn.parameter.Parameter";
    const std::string inner = f.text;
    const PickleId result = call(inner, a[2]);
    const std::uint32_t index = node(result).index;
    if (parameter) m_tree.m_tensors[index].is_parameter = true;
    if (!empty_mapping(a[3]) && node(a[3]).kind != PickleKind::none) node(result).state = a[3];
    return result;
  }
  fail(Errc::unsupported, fmt::format("calling '{}' is not supported", escape(fn)));
}

PickleTree unpickle(util::ByteSpan data, std::string_view context, const UnpickleLimits& limits) {
  return Unpickler(data, context, limits).run();
}

}  // namespace mithril::formats
