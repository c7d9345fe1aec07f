"""Checkpoints: save/load dicts of tensors as .mcp files, lazy access, files.

Tensors travel as zero-copy byte views (the buffer protocol): ``save`` codes
chunks straight from tensor memory, ``load`` decodes straight into freshly
allocated tensors; the native core releases the GIL while it works.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from . import _core, _sharded
from ._dtypes import numpy_to_safetensors, safetensors_to_numpy, safetensors_to_torch, torch_to_safetensors
from ._progress import reporter
from .errors import InvalidArgumentError, TensorNotFoundError, UnsupportedError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "CompressResult",
    "DecompressResult",
    "VerifyResult",
    "TensorInfo",
    "CheckpointFile",
    "save_state_dict",
    "load_state_dict",
    "open",
    "compress_file",
    "decompress_file",
    "verify",
    "info",
]

_FRAMEWORKS = ("torch", "numpy")


@dataclass(frozen=True)
class CompressResult:
    source_bytes: int  #: bytes of the (safetensors) source
    output_bytes: int  #: bytes of the .mcp written
    source_kind: str  #: "safetensors", "torch" or "raw"
    tensors: int
    chunks: int
    seconds: float
    source_blake3: str = ""  #: BLAKE3 of the original bytes (hex), as the .mcp records it

    @property
    def ratio(self) -> float:
        """source_bytes / output_bytes."""
        return self.source_bytes / self.output_bytes if self.output_bytes else 0.0


@dataclass(frozen=True)
class DecompressResult:
    input_bytes: int
    output_bytes: int
    seconds: float


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    chunks: int
    source_bytes: int
    problems: List[str]
    seconds: float


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  #: safetensors spelling: "F32", "BF16", ...
    shape: Tuple[int, ...]
    nbytes: int  #: decoded size
    stored_bytes: int  #: size in the file (compressed, for .mcp)


# ---------------------------------------------------------------- helpers


def _threads(threads: Optional[int]) -> int:
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidArgumentError(f"threads must be a positive integer or None (all cores), not {threads!r}")
    return threads


def _level(level: Optional[int]) -> int:
    if level is None:
        return int(_core.DEFAULT_LEVEL)
    if isinstance(level, bool) or not isinstance(level, int):
        raise InvalidArgumentError(f"level must be an integer {_core.MIN_LEVEL}..{_core.MAX_LEVEL}, not {level!r}")
    return level  # the core checks the range


def _chunk_size(chunk_size: Optional[int]) -> int:
    return int(_core.DEFAULT_CHUNK_SIZE) if chunk_size is None else int(chunk_size)


def _opt_path(p: Optional[PathLike]) -> Optional[str]:
    return None if p is None else os.fspath(p)


def _framework(framework: str) -> str:
    if framework not in _FRAMEWORKS:
        raise InvalidArgumentError(f"framework must be one of {', '.join(_FRAMEWORKS)}, not {framework!r}")
    return framework


def _str_map(m: Optional[Mapping[str, str]], what: str) -> Dict[str, str]:
    if m is None:
        return {}
    out: Dict[str, str] = {}
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgumentError(f"{what} must map str to str; got {k!r}: {v!r}")
        out[k] = v
    return out


def _is_torch_tensor(value: Any) -> bool:
    # No torch import for numpy-only users: torch is loaded if it already is.
    torch = __import__("sys").modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _source_view(name: str, value: Any) -> Tuple[str, str, List[int], Any]:
    """(name, dtype, shape, buffer) for a tensor or array, without copying
    unless it must (device memory, non-contiguous, big-endian)."""
    if _is_torch_tensor(value):
        import torch

        t = value
        if t.layout != torch.strided:
            raise UnsupportedError(f"tensor '{name}': {t.layout} tensors cannot be saved; convert with .to_dense()")
        dtype = torch_to_safetensors(t.dtype, name)
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.resolve_conj().resolve_neg().contiguous()
        shape = list(t.shape)
        buf: Any = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        return name, dtype, shape, buf
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency of torch
        np = None
    if np is not None and isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        dtype = numpy_to_safetensors(a.dtype, name)
        if not a.flags.c_contiguous:
            a = a.copy(order="C")  # (not ascontiguousarray: it makes 0-dim arrays 1-dim)
        return name, dtype, list(a.shape), (a.reshape(-1).view(np.uint8) if a.size else b"")
    raise InvalidArgumentError(
        f"'{name}' is a {type(value).__name__}; save() takes a dict of torch tensors or numpy arrays "
        "(flatten nested state such as optimizer state first)"
    )


def _allocate(framework: str, name: str, dtype: str, shape: List[int], nbytes: int) -> Tuple[Any, Any]:
    """An uninitialised tensor/array and a writable byte view of its memory."""
    if framework == "torch":
        import torch

        t = torch.empty(shape, dtype=safetensors_to_torch(dtype, name))
        view = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else bytearray()
        return t, view
    import numpy as np

    a = np.empty(shape, dtype=safetensors_to_numpy(dtype, name))
    return a, (a.reshape(-1).view(np.uint8) if a.size else bytearray())


# ---------------------------------------------------------------- save / load


def save_state_dict(
    state_dict: Mapping[str, Any],
    path: PathLike,
    base: Optional[PathLike] = None,
    level: Optional[int] = None,
    threads: Optional[int] = None,
    *,
    metadata: Optional[Mapping[str, str]] = None,
    overwrite: bool = True,
    sync: bool = True,
    chunk_size: Optional[int] = None,
    progress: Any = None,
) -> CompressResult:
    """Saves a dict of tensors (torch or numpy) as a compressed .mcp file of a
    safetensors source (what :func:`mithril.save` does for a flat state_dict).

    The file's content is the safetensors file these tensors make — laid out
    byte for byte as ``safetensors.torch.save_file`` lays it out —, coded
    losslessly without writing that file: ``mithril decompress`` restores it,
    and :func:`load` reads the tensors back bit for bit. Every dtype
    safetensors knows (bf16, bool, float8, ...), 0-dim and empty tensors
    work; non-contiguous tensors are made contiguous and GPU tensors copied to
    the host first. ``metadata`` goes into the safetensors header.

    ``base``: an earlier checkpoint (.mcp or safetensors) to code a delta
    against; loading then needs the same base. ``level`` 1..19 (default 3),
    ``threads`` (default: all cores). The output is written atomically:
    replaced whole (``overwrite=True``, like torch.save) or, with
    ``overwrite=False``, :class:`ExistsError` if it exists. ``sync`` fsyncs
    the file before it appears (a checkpoint that survives a crash; torch.save
    does not), as ``mithril compress`` does.
    """
    if not isinstance(state_dict, Mapping):
        raise InvalidArgumentError(f"save() takes a mapping of names to tensors, not {type(state_dict).__name__}")
    items = []
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise InvalidArgumentError(f"tensor names must be str, not {type(name).__name__} ({name!r})")
        items.append(_source_view(name, value))
    result = _core.compress_tensors(
        items, _str_map(metadata, "metadata"), os.fspath(path), _level(level), _threads(threads),
        _chunk_size(chunk_size), bool(overwrite), bool(sync), _opt_path(base), {}, reporter(progress),
    )
    return CompressResult(**result)


# Tensors decoded per batch when progress is reported: big enough to keep
# every worker busy, small enough for a smooth progress line.
_PROGRESS_BATCH = 64 << 20


def load_state_dict(
    path: PathLike,
    base: Optional[PathLike] = None,
    *,
    framework: str = "torch",
    device: Any = "cpu",
    threads: Optional[int] = None,
    verify: bool = False,
    progress: Any = None,
) -> Dict[str, Any]:
    """Loads every tensor of an .mcp of a safetensors source (or a
    safetensors file) into a dict, names sorted as safetensors sorts them.
    A directory of shards (Hugging Face layout, plain or compressed by
    ``mithril compress DIR``) or its ``*.index.json`` loads every tensor its
    index names.

    Each tensor is allocated once and decoded straight into its memory, all
    chunks in parallel; every chunk's checksum is checked. ``verify=True``
    also checks the BLAKE3 digest of the whole original file. A delta file
    needs its ``base``. ``framework="numpy"`` returns numpy arrays (dtypes
    numpy lacks, such as bf16, raise :class:`UnsupportedError`); ``device``
    moves torch tensors after decoding (e.g. "cuda").
    """
    fw = _framework(framework)
    if _sharded.is_sharded(path):
        return _sharded.load(path, base, framework=fw, device=device, threads=threads, verify=verify)
    reader = _core.Reader(os.fspath(path), _opt_path(base), _threads(threads))
    out: Dict[str, Any] = {}
    targets = []
    for index, (name, dtype, shape, nbytes, _stored) in enumerate(reader.tensors):
        value, view = _allocate(fw, name, dtype, shape, nbytes)
        out[name] = value
        targets.append((index, view))
    report = reporter(progress)
    if report is None or verify:
        reader.read_tensors(targets, bool(verify))
    else:
        sizes = [e[3] for e in reader.tensors]
        total, done, batch, batch_bytes = sum(sizes), 0, [], 0
        for target in targets:
            batch.append(target)
            batch_bytes += sizes[target[0]]
            if batch_bytes >= _PROGRESS_BATCH or target is targets[-1]:
                reader.read_tensors(batch, False)
                done += batch_bytes
                report(done, total)
                batch, batch_bytes = [], 0
        if not targets:
            report(0, 0)
    if report is not None and verify:
        total = sum(e[3] for e in reader.tensors)
        report(total, total)
    del targets
    if fw == "torch" and str(device) != "cpu":
        out = {k: v.to(device) for k, v in out.items()}
    return {k: out[k] for k in sorted(out)}


class CheckpointFile:
    """Lazy, random access to the tensors of an .mcp (or safetensors) file.

    ``f[name]`` decodes only that tensor's chunks. Use as a context manager,
    or call :meth:`close`. Reads may come from several threads at once.
    """

    def __init__(
        self,
        path: PathLike,
        base: Optional[PathLike] = None,
        *,
        framework: str = "torch",
        threads: Optional[int] = None,
    ) -> None:
        self._framework = _framework(framework)
        self._path = os.fspath(path)
        self._reader: Any = _core.Reader(self._path, _opt_path(base), _threads(threads))
        self._entries: Dict[str, Tuple[int, TensorInfo]] = {}
        for index, (name, dtype, shape, nbytes, stored) in enumerate(self._reader.tensors):
            self._entries[name] = (index, TensorInfo(name, dtype, tuple(shape), nbytes, stored))
        self._header_metadata: Dict[str, str] = dict(self._reader.header_metadata)
        self._mcp_metadata: Dict[str, str] = dict(self._reader.metadata)

    # mapping protocol
    def keys(self) -> List[str]:
        """Tensor names, sorted (as safetensors' safe_open lists them)."""
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> Any:
        return self.get_tensor(name)

    def get_tensor(self, name: str) -> Any:
        """Decodes one tensor (only its chunks) into a new tensor/array."""
        reader = self._open_reader()
        try:
            index, info = self._entries[name]
        except KeyError:
            raise TensorNotFoundError(f"{self._path}: no tensor named {name!r}") from None
        value, view = _allocate(self._framework, name, info.dtype, list(info.shape), info.nbytes)
        reader.read_tensor(index, view)
        return value

    # description
    @property
    def path(self) -> str:
        return self._path

    @property
    def tensors(self) -> Dict[str, TensorInfo]:
        """Name -> dtype, shape and sizes, without decoding anything."""
        return {name: self._entries[name][1] for name in self.keys()}

    def metadata(self) -> Dict[str, str]:
        """The safetensors header's ``__metadata__`` (as safe_open.metadata())."""
        return dict(self._header_metadata)

    @property
    def index_metadata(self) -> Dict[str, str]:
        """Metadata stored in the .mcp index (e.g. by ``mithril compress``)."""
        return dict(self._mcp_metadata)

    # lifetime
    def _open_reader(self) -> Any:
        if self._reader is None:
            raise InvalidArgumentError(f"{self._path}: checkpoint file is closed")
        return self._reader

    @property
    def closed(self) -> bool:
        return self._reader is None

    def close(self) -> None:
        """Unmaps the file (and a delta's decoded base)."""
        self._reader = None

    def __enter__(self) -> "CheckpointFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} tensors"
        return f"<mithril.CheckpointFile {self._path!r}: {state}>"


def open(
    path: PathLike,
    base: Optional[PathLike] = None,
    *,
    framework: str = "torch",
    threads: Optional[int] = None,
) -> "CheckpointFile | _sharded.ShardedCheckpoint":
    """Opens an .mcp (or safetensors) file for lazy access: ``f[name]``.

    A directory (a Hugging Face sharded checkpoint, plain or compressed by
    ``mithril compress DIR``) or its ``*.index.json`` opens as a
    :class:`ShardedCheckpoint`: the index says which shard holds a tensor,
    and only that shard's chunks are read."""
    if _sharded.is_sharded(path):
        return _sharded.ShardedCheckpoint(path, base, framework=_framework(framework), threads=threads)
    return CheckpointFile(path, base, framework=framework, threads=threads)


# ---------------------------------------------------------------- files


def compress_file(
    src: PathLike,
    dst: Optional[PathLike] = None,
    *,
    base: Optional[PathLike] = None,
    level: Optional[int] = None,
    threads: Optional[int] = None,
    force: bool = False,
    sync: bool = True,
    chunk_size: Optional[int] = None,
    metadata: Optional[Mapping[str, str]] = None,
    progress: Any = None,
) -> CompressResult:
    """Compresses a file (safetensors: tensor-aware; anything else: as bytes)
    into ``dst`` (default: ``src + ".mcp"``), as ``mithril compress`` does.
    ``metadata`` is stored in the .mcp index. ``progress``: a callable(done,
    total) or a tqdm-like object, in bytes of ``src``."""
    out = os.fspath(src) + ".mcp" if dst is None else os.fspath(dst)
    result = _core.compress_file(
        os.fspath(src), out, _level(level), _threads(threads), _chunk_size(chunk_size), bool(force), bool(sync),
        _opt_path(base), _str_map(metadata, "metadata"), reporter(progress),
    )
    return CompressResult(**result)


def decompress_file(
    src: PathLike,
    dst: Optional[PathLike] = None,
    *,
    base: Optional[PathLike] = None,
    threads: Optional[int] = None,
    force: bool = False,
    sync: bool = False,
    progress: Any = None,
    check_digest: bool = True,
) -> DecompressResult:
    """Restores the original file of an .mcp, byte for byte, into ``dst``
    (default: ``src`` without ".mcp"); ``sync`` fsyncs it first.
    ``progress``: a callable(done, total) or a tqdm-like object (bytes).
    Every chunk is checked against its XXH3-64; ``check_digest=False``
    (``mithril decompress --no-check``) skips recomputing the whole-file
    BLAKE3 as well, a quarter to a third of the CPU (:func:`verify` always does it)."""
    src_s = os.fspath(src)
    if dst is None:
        if not src_s.endswith(".mcp"):
            raise InvalidArgumentError(f"{src_s}: does not end in .mcp; say where to write (dst=...)")
        dst_s = src_s[: -len(".mcp")]
    else:
        dst_s = os.fspath(dst)
    return DecompressResult(
        **_core.decompress_file(
            src_s, dst_s, _threads(threads), bool(force), bool(sync), _opt_path(base), reporter(progress),
            bool(check_digest),
        )
    )


def verify(path: PathLike, base: Optional[PathLike] = None, *, threads: Optional[int] = None) -> VerifyResult:
    """Checks every chunk checksum and the whole-file digest; writes nothing.
    A damaged file gives ok=False with the problems listed."""
    return VerifyResult(**_core.verify_file(os.fspath(path), _threads(threads), _opt_path(base)))


def info(path: PathLike) -> Dict[str, Any]:
    """What an .mcp or safetensors file holds (as ``mithril info --json``):
    source, base, metadata, and each tensor's dtype, shape and sizes."""
    return dict(_core.describe_file(os.fspath(path)))


URL_SCHEMES = ("s3://", "redis://", "file://")


def is_url(path: str) -> bool:
    """An object-store URL (s3://, redis://, file://), not a local path."""
    return path.startswith(URL_SCHEMES)


def check_member_digest(location: str, member: Mapping[str, Any], manifest: str) -> Dict[str, Any]:
    """A series member against its manifest's copy of its digest (as ``mithril
    series restore`` checks it): a member file replaced by another step's (a
    valid checkpoint, the wrong values) raises CorruptError instead of being
    loaded as this step. Members listed without a digest are not checked.
    Returns the member's :func:`info`."""
    return dict(_core.series_check_member(location, member.get("blake3") or "", manifest, int(member["step"])))
