"""Where a Mithril DCP checkpoint lives: locations (a directory or an
object-store URL), DCP's ``.metadata`` and what it records per item, the
rank files, and the removal of what an unfinished save left (docs/dcp.md,
"Interrupted saves")."""
from __future__ import annotations

import os
import pickle
import re
import urllib.parse
import uuid
import warnings
from dataclasses import dataclass
from typing import List, Optional, Union

from torch.distributed.checkpoint.metadata import Metadata

from . import _core
from ._checkpoint import is_url as _is_url
from .errors import CorruptError, Error, InvalidArgumentError, NotFoundError

PathLike = Union[str, "os.PathLike[str]"]

METADATA_NAME = ".metadata"


@dataclass(frozen=True)
class _Item:
    """Where DCP's ``.metadata`` finds one item: a tensor of a rank file."""

    relative_path: str  #: "__0_0.mcp"
    tensor: str  #: its name in that file
    base: Optional[str] = None  #: the base checkpoint (directory or URL) of a delta
    #: Between a rank's write_data and the coordinator's finish only: the
    #: token of the rank file's detached upload (on one item per rank file),
    #: from which finish() publishes the file. Always None in a .metadata.
    upload: Optional[str] = None


@dataclass(frozen=True)
class _Prefix:
    prefix: str  #: "__{rank}_"


def _join(loc: str, name: str) -> str:
    return loc.rstrip("/") + "/" + name if _is_url(loc) else os.path.join(loc, name)


def _absolute(loc: str) -> str:
    return loc if _is_url(loc) else os.path.abspath(loc)


def _exists(loc: str) -> bool:
    return _core.stat_object(loc) is not None if _is_url(loc) else os.path.exists(loc)


def _read_whole(loc: str) -> Optional[bytes]:
    if _is_url(loc):
        return _core.get_object(loc)
    try:
        with open(loc, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_atomic(loc: str, data: bytes, sync: bool) -> None:
    """The object appears whole or not at all (temporary + rename locally)."""
    if _is_url(loc):
        _core.put_object(loc, data)
        return
    directory = os.path.dirname(loc) or "."
    tmp = os.path.join(directory, f".{os.path.basename(loc)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, loc)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(loc: str) -> None:
    if _is_url(loc):
        _core.remove_object(loc)
    else:
        try:
            os.unlink(loc)
        except FileNotFoundError:
            pass


def _load_metadata(loc: str, name: str = METADATA_NAME) -> Metadata:
    """The ``.metadata`` (or ``name``) of a Mithril DCP checkpoint; clear errors otherwise."""
    path = _join(loc, name)
    data = _read_whole(path)
    if data is None:
        raise NotFoundError(
            f"{loc}: no {name}: not a complete checkpoint (a save that did not finish leaves none)"
        )
    try:
        metadata = pickle.loads(data)
    except Exception as e:  # a truncated or foreign file
        raise CorruptError(f"{path}: cannot read DCP metadata ({type(e).__name__}: {e})") from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise CorruptError(f"{path}: not DCP metadata")
    if not all(isinstance(v, _Item) for v in metadata.storage_data.values()):
        raise InvalidArgumentError(
            f"{loc}: not a Mithril checkpoint (no .mcp rank files; written by FileSystemWriter?): "
            "load it with torch.distributed.checkpoint.FileSystemReader"
        )
    return metadata


def _rank_files(metadata: Metadata) -> List[str]:
    return sorted({item.relative_path for item in metadata.storage_data.values()})


def is_checkpoint(path_or_url: PathLike) -> bool:
    """True when ``path_or_url`` holds a complete Mithril DCP checkpoint."""
    try:
        _load_metadata(os.fspath(path_or_url))
        return True
    except (Error, OSError):
        return False


def _with_context(e: Error, where: str) -> Error:
    """The same error class, its message prefixed with the file unless named."""
    text = str(e)
    if where in text:
        return e
    return type(e)(f"{where}: {text}")




# ---------------------------------------------------------------- unfinished saves

# What a save writes besides .metadata: rank files, and the temporaries of
# rank files being written (a rank killed mid-write leaves its own behind).
_RANK_FILE = re.compile(r"__\d+_\d+\.mcp")
_RANK_TEMPORARY = re.compile(r"\.(__\d+_\d+\.mcp|\.metadata)\..+\.tmp")


def _discard_unreferenced(loc: str, keep: Optional[Metadata], strict: bool = True) -> List[str]:
    """Removes the rank files ``keep`` does not reference (all of them when
    None), their temporaries, and unfinished uploads under ``loc``; returns
    the names removed ("(unfinished uploads)" when uploads were aborted).
    With strict=False a store that refuses to list or abort multipart uploads
    (a policy without s3:ListBucketMultipartUploads) is a warning, not an
    error: a save must not fail over leftovers of another."""
    referenced = set() if keep is None else set(_rank_files(keep))
    removed: List[str] = []
    if loc.startswith("file://"):  # a directory: its rank files and their temporaries as below
        loc = urllib.parse.unquote(loc[len("file://"):]) or "."
    if _is_url(loc):
        prefix = loc.rstrip("/") + "/"
        for name in _core.list_objects(prefix):
            if _RANK_FILE.fullmatch(name) and name not in referenced:
                _core.remove_object(prefix + name)
                removed.append(name)
        try:
            if _core.abort_uploads(prefix):
                removed.append("(unfinished uploads)")
        except Error as e:
            if strict:
                raise
            warnings.warn(f"{prefix}: unfinished uploads of an earlier save not aborted: {e}", RuntimeWarning,
                          stacklevel=3)
        return removed
    try:
        names = sorted(os.listdir(loc))
    except FileNotFoundError:
        return removed
    for name in names:
        if (_RANK_FILE.fullmatch(name) and name not in referenced) or _RANK_TEMPORARY.fullmatch(name):
            try:
                os.unlink(os.path.join(loc, name))
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed


def clean(path_or_url: PathLike) -> List[str]:
    """Removes what an unfinished save left at ``path_or_url`` and returns
    the names removed. Without a ``.metadata`` (a save that never committed:
    a rank killed, a job preempted) that is every rank file, rank-file
    temporary and unfinished multipart upload there; a complete checkpoint
    keeps the rank files its ``.metadata`` references and loses only the
    rest. Every save runs this on its checkpoint id before any rank writes;
    call it yourself for an id that will not be saved again. Never while a
    save of that id runs (its in-flight files would go)."""
    loc = os.fspath(path_or_url)
    keep: Optional[Metadata] = None
    if _exists(_join(loc, METADATA_NAME)):
        keep = _load_metadata(loc)
    return _discard_unreferenced(loc, keep)
