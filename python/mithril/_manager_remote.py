"""CheckpointManager on object storage (``s3://``, ``redis://``, ``file://``
URLs, through the storage layer of include/mithril/objects.hpp).

    URL/step-NNNNNNNNNN.mcp   # members: keyframes and deltas, as in a series directory
    URL/series.json           # the manifest: the commit point, written last

A member object is written whole (a multipart upload completes or leaves no
object), then the manifest is replaced (one PUT: it appears whole) listing
it: a process killed at any point leaves the previous manifest, whose
members all exist. Removal rewrites the manifest first, then deletes the
objects. Member objects no manifest lists (a killed save's) are deleted when
the next manager opens the URL. The manifest has the schema of a local
``series.json``, the members' BLAKE3 digests included. One writer per URL: object
stores have no lock, so two jobs must not share a URL.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Optional

from . import _core
from .errors import CorruptError, InvalidArgumentError

_MEMBER = re.compile(r"^step-\d{10}\.mcp$")
MANIFEST = "series.json"


class RemoteSeries:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def location(self, name: str) -> str:
        return f"{self.url}/{name}"

    def members(self) -> List[Dict[str, Any]]:
        data = _core.get_object(self.location(MANIFEST))
        if data is None:
            return []
        try:
            doc = json.loads(bytes(data))
            members = doc["members"]
            if doc.get("format") != "mithril-series" or not isinstance(members, list):
                raise ValueError("not a mithril series manifest")
            out = []
            for m in members:
                out.append({"step": int(m["step"]), "keyframe": m["kind"] == "keyframe",
                            "base_step": None if m["kind"] == "keyframe" else int(m["base_step"]),
                            "file": str(m["file"]), "source_bytes": int(m["source_bytes"]),
                            "stored_bytes": int(m["stored_bytes"]), "source_name": m.get("source_name", ""),
                            "blake3": m.get("blake3", ""), "metrics": dict(m.get("metrics", {}))})
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptError(f"{self.location(MANIFEST)}: cannot read the series manifest ({e})") from None
        return sorted(out, key=lambda m: m["step"])

    def _write(self, members: Iterable[Dict[str, Any]]) -> None:
        doc = {"format": "mithril-series", "version": 1, "members": []}
        for m in members:
            entry = {"step": m["step"], "file": m["file"], "kind": "keyframe" if m["keyframe"] else "delta",
                     "source_bytes": m["source_bytes"], "stored_bytes": m["stored_bytes"],
                     "source_name": m["source_name"]}
            if not m["keyframe"]:
                entry["base_step"] = m["base_step"]
            if m["metrics"]:
                entry["metrics"] = m["metrics"]
            if m["blake3"]:
                entry["blake3"] = m["blake3"]
            doc["members"].append(entry)
        _core.put_object(self.location(MANIFEST), json.dumps(doc, indent=2, sort_keys=True).encode())

    def register(self, step: int, file: str, base_step: Optional[int], metrics: Dict[str, float],
                 source_bytes: int, stored_bytes: int, blake3: str,
                 members: Optional[List[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
        """Lists a member whose object was written whole (its upload completed:
        the commit point) in the manifest, read again unless ``members`` (read
        by the same save) is given; returns the members now listed."""
        listed = [m for m in (self.members() if members is None else members) if m["step"] != step]
        listed.append({"step": step, "file": file, "keyframe": base_step is None, "base_step": base_step,
                       "source_bytes": source_bytes, "stored_bytes": stored_bytes, "source_name": "",
                       "blake3": blake3, "metrics": metrics})
        listed.sort(key=lambda m: m["step"])
        self._write(listed)
        return listed

    def remove(self, steps: List[int]) -> None:
        """Unlists, then deletes; refuses a keyframe a remaining delta needs."""
        doomed = set(steps)
        members = self.members()
        kept = [m for m in members if m["step"] not in doomed]
        needed = {m["base_step"] for m in kept if not m["keyframe"]}
        if needed & doomed:
            raise InvalidArgumentError(f"{self.url}: step(s) {sorted(needed & doomed)} are keyframes of kept deltas")
        self._write(kept)
        for m in members:
            if m["step"] in doomed:
                _core.remove_object(self.location(m["file"]))

    def remove_leftovers(self) -> None:
        """Member objects no manifest lists: what a killed save wrote."""
        listed = {m["file"] for m in self.members()}
        for name in _core.list_objects(self.url + "/"):
            if _MEMBER.match(name) and name not in listed:
                _core.remove_object(self.location(name))
