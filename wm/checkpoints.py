"""Two kinds of files, kept apart so DVC can cache one and training can resume from the other.

* **Published models** (`models/*.pt`, DVC outputs): weights only, a state dict plus the config that rebuilds
  the module and the params fingerprint that produced it. They load with ``torch.load(weights_only=True)``
  (no training state is unpickled) and their bytes depend only on the weights and params, so an interrupted
  and resumed run publishes the same file as an uninterrupted one and DVC's run-cache can restore them.
* **Resume checkpoints** (weights, optimizer, RNG states, history): written every epoch or generation into a
  cache folder outside git and DVC (``WM_CACHE_DIR``, default `.cache/wm`), one file per run. A run's key
  leaves out its own `epochs`/`generations` (`ResumeCache.for_run`), so raising them continues a finished
  run exactly, and a killed stage resumes where it stopped when it is rerun.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import BaseModel

from wm.errors import WmError
from wm.files import write_bytes
from wm.provenance import code_hash

PUBLISHED_FORMAT = "wm-weights/1"
# Published model kinds and the stage that makes each.
PRODUCERS = {"vae": "train_vae", "wm": "train_wm", "controller": "train_ctrl"}
# Resume checkpoints kept per component (the most recently used), or all those of the run in progress if it
# writes more (iterative training: one per round); older ones are deleted.
KEEP_RESUME = 8


def torch_bytes(payload: object) -> bytes:
    """torch.save into memory. Through a buffer because torch.save names its zip archive after the file,
    and atomic writes go through a temporary name that carries the pid."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def save_checkpoint(path: Path, **payload) -> None:
    write_bytes(path, torch_bytes(payload))


def canonical_json(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two fingerprints (compared as JSON)."""

    def diff(a: object, b: object, prefix: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [x for k in sorted(set(a) | set(b)) for x in diff(a.get(k), b.get(k), f"{prefix}{k}.")]
        return [] if a == b else [prefix.rstrip(".")]

    return diff(json.loads(json.dumps(old)), json.loads(json.dumps(new)), "")


class ResumeCache:
    """The resume checkpoint of one training run: `<cache_dir>/<component>/<hash of its key>.pt`."""

    def __init__(self, cache_dir: Path, component: str, fingerprint: dict, runs: int = 1):
        # runs: how many checkpoints the training in progress writes in this component (iterative training: one
        # per round). Each is loaded or saved in turn, so they are its most recently used, and a prune that keeps
        # as many never deletes one: else a rerun retrains round 0 and each retrained round prunes the next.
        self.component, self.fingerprint, self.runs = component, fingerprint, runs
        key = hashlib.sha256(canonical_json(fingerprint).encode()).hexdigest()[:20]
        self.path = Path(cache_dir) / component / f"{key}.pt"

    @classmethod
    def for_run(
        cls, cache_dir: Path, section: str, fingerprint: dict, length_key: str, device: str, code: str, runs: int = 1
    ):
        """The cache of a training run, keyed by
        - its params fingerprint without its own length (`vae.epochs`, `ctrl.generations`, `ctrl.ac.updates`):
          raising the length continues a finished run exactly, so a longer run resumes from a shorter one's checkpoint;
          upstream lengths stay in (a VAE trained longer makes other tokens, so another world model);
        - the device type: CPU and CUDA runs of the same params differ in their last bits;
        - the hash of the training code (`code`, a module whose import closure is hashed: wm/provenance.py),
          so a changed model or loss never resumes a run of the old code."""
        key = fingerprint | {"device": device, "code": code_hash(code)}
        *parents, leaf = [section, *length_key.split(".")]  # a dotted key names a nested length (`ac.updates`)
        node = key
        for name in parents:  # copy the path down to the length, then drop it there
            node[name] = dict(node[name])
            node = node[name]
        del node[leaf]
        return cls(cache_dir, section, key, runs)

    def load(self, unit: str, limit: int, device: torch.device | str = "cpu") -> dict | None:
        """The checkpoint to resume from, or None: absent, unreadable, or further along (`ckpt[unit]` epochs
        or generations) than the `limit` asked for now."""
        if not self.path.exists():
            return None
        try:
            ckpt = torch.load(self.path, map_location=device, weights_only=False)
            changed = fingerprint_changes(ckpt["fingerprint"], self.fingerprint)
            done = int(ckpt[unit])
        except Exception as err:  # any unreadable checkpoint is as good as none: say so and retrain
            print(
                f"{self.component}: resume checkpoint {self.path} is unreadable ({type(err).__name__}); starting fresh"
            )
            return None
        if changed:  # a hash collision, or a file copied in by hand
            print(
                f"{self.component}: {self.path} was written under other params ({', '.join(changed)}); starting fresh"
            )
            return None
        if done > limit:
            print(f"{self.component}: {self.path} has {done} {unit}s, more than the {limit} asked; starting fresh")
            return None
        if done:
            print(f"{self.component}: resuming from {self.path} at {unit} {done}/{limit}")
        self.path.touch()  # most recently used: kept by `prune`
        return ckpt

    def save(self, **payload) -> None:
        save_checkpoint(self.path, fingerprint=self.fingerprint, **payload)
        self.prune()

    def prune(self) -> None:
        """Delete all but the KEEP_RESUME (or the run's own, if more) most recently used checkpoints of this
        component."""
        keep = max(KEEP_RESUME, self.runs)
        files = sorted(self.path.parent.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[keep:]:
            if old != self.path:
                old.unlink(missing_ok=True)


@dataclass(frozen=True)
class Published:
    """A published model file: what `publish` wrote, read back without unpickling any object."""

    kind: str  # "vae", "wm" or "controller"
    config: dict  # the config bundle that rebuilds the module (e.g. FSQVAEConfig as JSON)
    state_dict: dict[str, torch.Tensor]
    fingerprint: dict  # the params that produced it
    meta: dict  # small JSON facts (selected epoch, fitness, ...)


def publish(path: Path, kind: str, config_json: str, state_dict: dict, fingerprint: dict, meta: dict) -> None:
    """Write a weights-only model file. Tensors are copied to fresh contiguous CPU storage and everything
    else is JSON text, so the bytes depend only on the values (not on how the run got there)."""
    payload = {
        "format": PUBLISHED_FORMAT,
        "kind": kind,
        "config": config_json,
        "fingerprint": canonical_json(fingerprint),
        "meta": canonical_json(meta),
        "state_dict": {str(k): v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()},
    }
    write_bytes(path, torch_bytes(payload))


def read_published(path: Path, kind: str) -> Published:
    """Read a published model file; a missing or corrupt one is a WmError saying which stage makes it."""
    path, producer = Path(path), PRODUCERS[kind]
    if not path.is_file():
        raise WmError(f"{path}: missing input (run `dvc repro {producer}` first)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        if raw.get("format") != PUBLISHED_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}")
        found = Published(
            raw["kind"],
            json.loads(raw["config"]),
            raw["state_dict"],
            json.loads(raw["fingerprint"]),
            json.loads(raw["meta"]),
        )
    except Exception as err:  # unreadable for any reason: the fix is the same
        reason = (str(err).strip().splitlines() or [""])[0]  # torch's unpickling errors run to many lines
        raise WmError(
            f"{path}: unreadable model file ({type(err).__name__}: {reason}); run `dvc repro {producer}`"
        ) from None
    if found.kind != kind:
        raise WmError(f"{path} holds a {found.kind} model, expected {kind}")
    return found


def load_trained(path: Path, kind: str, fingerprint: dict) -> Published:
    """An upstream model of the pipeline, refusing one trained under other params."""
    found = read_published(path, kind)
    changed = fingerprint_changes(found.fingerprint, fingerprint)
    if changed:
        raise WmError(
            f"{path} was trained under other params ({', '.join(changed)}); run `dvc repro {PRODUCERS[kind]}`"
        )
    return found


class PublishedModule:
    """Mixin of the model classes (an nn.Module built from one config object, kept as `self.config`):
    `publish` writes its weights-only model file, `from_file` rebuilds the module from one."""

    kind: ClassVar[str]  # a key of PRODUCERS
    config_class: ClassVar[type[BaseModel]]

    def publish(self, path: Path, fingerprint: dict, meta: dict, state_dict: dict | None = None) -> None:
        """Write `state_dict` (default: the module's own) with the config that rebuilds the module."""
        state = self.state_dict() if state_dict is None else state_dict
        publish(Path(path), self.kind, self.config.model_dump_json(), state, fingerprint, meta)

    @classmethod
    def from_published(cls, published: Published):
        model = cls(cls.config_class.model_validate(published.config))
        model.load_state_dict(published.state_dict)
        return model.eval()

    @classmethod
    def from_file(cls, path: str | Path, fingerprint: dict | None = None):
        """The model of a published file (in eval mode, on the CPU); given a fingerprint, refuse (WmError) a
        model trained under other params."""
        found = (
            read_published(Path(path), cls.kind)
            if fingerprint is None
            else load_trained(Path(path), cls.kind, fingerprint)
        )
        return cls.from_published(found)
