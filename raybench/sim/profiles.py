"""Engine profiles: the fitted numbers of one engine on one GPU, stored as JSON data.

A profile is what ``raybench calibrate`` fits for one (engine, GPU) pair; the shipped defaults
(``profiles/default.json``) are its output on the seed's output-800 rows. Every number has a
physical meaning (``FIELD_MEANINGS``, also written into every profiles file). The numbers hold
for the model the rows ran (``fitted_model``): another model's kernels reach other fractions of
peak, so a prediction for it with them is marked extrapolated (``OTHER_MODEL``).
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType

from raybench.sim.config import SimConfigError
from raybench.sim.features import REGIMES

FIELD_MEANINGS = MappingProxyType({
    "engine": "the serving engine: vllm, sglang, trtllm (PyTorch flow), trtllm-engine (a prebuilt TensorRT engine)",
    "gpu": "the GPU model the numbers hold for (8 of them in the seed)",
    "fixed_step_ms": "milliseconds every step costs whatever it computes: scheduling, sampling setup, "
                     "kernel launches (1.1 us each under CUDA graphs, 8 us eager), synchronisation",
    "per_seq_ms": "milliseconds each sequence in a step adds on top: sampling, detokenizing, "
                  "the scheduler's per-request bookkeeping",
    "moe_read_factor": "1 / the fraction of HBM bandwidth the expert GEMMs reach when they read the "
                       "touched experts' weights (a TP-8 shard reaches 3-8 % on H200, so ~12-30)",
    "compute_factor": "1 / the fraction of dense FP8 (GEMMs) and BF16 (prompt attention) peak reached",
    "kv_read_factor": "1 / the fraction of HBM bandwidth decode attention reaches reading the KV latent "
                      "(FlashMLA-like kernels reach 75-85 % on H200, so ~1.2-1.4)",
    "eager_factor": "multiplies what a decode step that cannot replay its CUDA graph pays extra: its kernels "
                    "x (8.1 - 1.1) us, the eager vs graph launch cost on H200; stays 1 unless the fitted rows "
                    "have such steps (vLLM: a sequence past max_seq_len_to_capture, 8192)",
    "reserve_gib": "GiB per GPU the engine keeps outside the KV pool: activations, CUDA graphs, NCCL "
                   "buffers, allocator slack; sets the KV capacity with the memory fraction. Where the pool "
                   "follows a profiling pass (vLLM), that pass's peak activations come on top, computed from "
                   "the launch's step budget (raybench.sim.costmodel.profile_peak_bytes)",
    "fitted_model": "the model the reference rows ran (a profile's numbers hold for it alone); a prediction for "
                    "another model is marked extrapolated (other_model); absent: deepseek-ai/DeepSeek-R1, the "
                    "model of every profile written before the field",
    "fitted_on": "which reference rows the numbers were fitted on",
    "fitted_regimes": "the parts of the engine model those rows exercised (raybench.sim.features.REGIMES); a "
                      "prediction that needs another one is marked extrapolated; null: not recorded",
})

#: the model of a profile that does not name one: every profile written before ``fitted_model``
#: existed (the shipped ones, and what ``raybench calibrate`` wrote then) was fitted on the seed's rows
LEGACY_FITTED_MODEL = "deepseek-ai/DeepSeek-R1"
#: the mark of a prediction whose profile was fitted on another model's rows: the fitted constants
#: (kernel efficiencies, per-step overheads, the reserve) describe that model's kernels, not this one's
OTHER_MODEL = "other_model"
#: the top-level keys of a profiles file
FILE_KEYS = ("meaning", "profiles")

NUMBERS = ("fixed_step_ms", "per_seq_ms", "moe_read_factor", "compute_factor", "kv_read_factor", "eager_factor",
           "reserve_gib")


@dataclass(frozen=True, kw_only=True)
class EngineProfile:
    """The fitted constants of one engine on one GPU (see FIELD_MEANINGS)."""

    engine: str
    gpu: str
    fixed_step_ms: float
    per_seq_ms: float
    moe_read_factor: float
    compute_factor: float
    kv_read_factor: float
    reserve_gib: float
    eager_factor: float = 1.0  # profiles written before it existed load with the physical value
    fitted_model: str = LEGACY_FITTED_MODEL
    fitted_on: str = ""
    fitted_regimes: tuple[str, ...] | None = None  # None: the fit's regimes are unknown (written by hand, or older)

    def __post_init__(self) -> None:
        for name in ("engine", "gpu", "fitted_model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SimConfigError(f"profile.{name}", getattr(self, name), "a non-empty name")
        if self.fitted_regimes is not None:
            regimes = self.fitted_regimes
            if not isinstance(regimes, (list, tuple)) or not all(isinstance(r, str) and r in REGIMES for r in regimes):
                raise SimConfigError("profile.fitted_regimes", regimes, f"null or a list of {', '.join(REGIMES)}")
            object.__setattr__(self, "fitted_regimes", tuple(sorted(set(regimes))))
        for name in NUMBERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise SimConfigError(f"profile.{name}", value, "a finite number >= 0")

    @property
    def key(self) -> str:
        return pair_key(self.engine, self.gpu)

    def fits_model(self, model: str) -> bool:
        """Whether ``model`` is the model this profile was fitted on (names and aliases as the simulator
        knows them, any case)."""
        from raybench.sim.costmodel import find_model  # costmodel imports this module

        def canonical(name: str) -> str:
            found = find_model(name)
            return (found.name if found is not None else name).lower()

        return canonical(model) == canonical(self.fitted_model)

    def extrapolated(self, regimes: Iterable[str], model: str | None = None) -> tuple[str, ...] | None:
        """The regimes a run went through that this profile's fit never saw (None: unknown), and
        OTHER_MODEL where the run's ``model`` is not the one the profile was fitted on."""
        other = model is not None and not self.fits_model(model)
        if self.fitted_regimes is None:
            return (OTHER_MODEL,) if other else None
        return tuple(sorted(set(regimes) - set(self.fitted_regimes) | ({OTHER_MODEL} if other else set())))

    @property
    def coefficients(self) -> tuple[float, ...]:
        """Factors of the step feature vector (costmodel.FEATURES), in seconds per unit."""
        return (self.fixed_step_ms / 1e3, self.per_seq_ms / 1e3, self.moe_read_factor, self.compute_factor,
                self.kv_read_factor, self.eager_factor, 1.0)


def pair_key(engine: str, gpu: str) -> str:
    return f"{engine}/{gpu}"


#: what a pair without a fitted profile runs with in the simulator server (never in predict):
#: mid-range values of the fitted profiles, so an H100 or a generic engine still behaves plausibly
UNCALIBRATED = dict(fixed_step_ms=25.0, per_seq_ms=0.05, moe_read_factor=8.0, compute_factor=20.0,
                    kv_read_factor=1.5, eager_factor=1.0, reserve_gib=12.0, fitted_on="uncalibrated defaults")


def uncalibrated(engine: str, gpu: str) -> EngineProfile:
    return EngineProfile(engine=engine, gpu=gpu, **UNCALIBRATED)


def default_profiles_path() -> Path:
    return Path(str(importlib.resources.files("raybench.sim") / "profiles" / "default.json"))


def load_profiles(path: str | Path | None = None) -> Mapping[str, EngineProfile]:
    """The profiles of a file (default: the shipped ones), keyed ``engine/GPU``."""
    if path is None:
        return _default_profiles()
    return _read(Path(path))


@functools.lru_cache(maxsize=1)
def _default_profiles() -> Mapping[str, EngineProfile]:
    return _read(default_profiles_path())


def _read(path: Path) -> Mapping[str, EngineProfile]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SimConfigError("profiles", str(path), "an existing profiles JSON file (raybench calibrate --out)") from None
    except (OSError, ValueError) as err:
        raise SimConfigError("profiles", str(path), f"a readable profiles JSON file ({err})") from None
    items = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise SimConfigError("profiles", str(path), 'a JSON object with a non-empty "profiles" list')
    for key in data:  # a key nothing reads is a typo or a field of another tool: saying so beats ignoring it
        if key not in FILE_KEYS:
            raise SimConfigError(f"{path}: key", key, f"a profiles file holds {' and '.join(map(repr, FILE_KEYS))} "
                                 f"only{_did_you_mean(key, FILE_KEYS)}")
    known = tuple(f.name for f in fields(EngineProfile))
    out: dict[str, EngineProfile] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            # the fields by name: FIELD_MEANINGS is this module's constant, which a user never sees by that name
            raise SimConfigError(f"profiles[{i}]", item, f"an object with a profile's fields ({', '.join(known)})")
        for key in item:  # dropped, a misspelt optional field would silently take its default
            if key not in known:
                raise SimConfigError(f"profiles[{i}].{key}", item[key], f"no profile field has that name"
                                     f"{_did_you_mean(key, known)}; the fields: {', '.join(known)}")
        try:
            profile = EngineProfile(**item)
        except TypeError as err:
            raise SimConfigError(f"profiles[{i}]", item.get("engine"), f"every field of a profile ({err})") from None
        if profile.key in out:  # which of two would be used is nothing a user should have to guess
            raise SimConfigError(f"profiles[{i}]", profile.key, "one profile per engine x GPU pair; this pair "
                                 "has one earlier in the file")
        out[profile.key] = profile
    return MappingProxyType(out)


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def dump_profiles(profiles: Iterable[EngineProfile], path: str | Path) -> None:
    """Write profiles with the meaning of every field, through a temporary file."""
    data = {"meaning": dict(FIELD_MEANINGS),
            "profiles": [_rounded(asdict(p)) for p in sorted(profiles, key=lambda p: p.key)]}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _rounded(d: dict) -> dict:
    return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in d.items()}
