"""The model files vidscore needs: where they live, where they come from, how to check them.

Paths follow the public contract: `$VIDSCORE_MODELS_DIR` with the upstream file names, and a per-file
override for each (`Settings.weights`, from VIDSCORE_<NAME>_WEIGHTS). Downloads are plain HTTP GETs from
the publishers' own URLs (or a mirror given by the user), written to a temp file in the models folder,
capped at the file's pinned size, verified against the full sha256 pinned below, then renamed into place
under the official name. Nothing is installed without a full digest to check it against, and nothing is
ever written onto a per-file override: that file is the user's.

Why not torch.hub.download_url_to_file: it has no size cap (a mirror serving /dev/zero fills the disk)
and no network timeout; both are needed here.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidscore_core.scoring.lineage import file_sha256, package_version, record_sha256, sha256_cache_file
from vidscore_core.settings import Settings, weights_env_var

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# The cap of a download whose size is pinned nowhere (a file with no pinned size, fetched with --url and
# --sha256): larger than any model file vidscore uses, small enough to stop a runaway stream.
DEFAULT_MAX_BYTES = 4 << 30


@dataclass(frozen=True)
class WeightFile:
    """One model file: where vidscore looks for it and where the publisher serves it."""

    name: str
    description: str
    relative_path: str  # below $VIDSCORE_MODELS_DIR
    url: str
    sha256: str | None = None  # full digest, when the publisher states one
    sha256_prefix: str | None = None  # leading hex digits, torch.hub's file-name convention
    expected_size: int | None = None  # exact bytes, when known; a download is capped at it
    max_bytes: int | None = None  # an upper bound when the exact size is not known
    approx_size: str = ""  # for messages only
    elsewhere: str | None = None  # another tool's copy, used when the models dir has none

    @property
    def env_var(self) -> str:
        """The per-file override (`Settings.weights[name]`)."""
        return weights_env_var(self.name)

    def path(self, settings: Settings) -> Path:
        """The file in use: the override, else the models dir's, else the other tool's copy if any."""
        if self.name in settings.weights:
            return Path(settings.weights[self.name])
        local = self.default_path(settings)
        if self.elsewhere and not local.exists() and Path(self.elsewhere).expanduser().exists():
            return Path(self.elsewhere).expanduser()
        return local

    def default_path(self, settings: Settings) -> Path:
        return settings.models_dir / self.relative_path

    def check_digest(self, sha256: str) -> bool | None:
        """True/False against the published digest or prefix; None when nothing was published."""
        sha256 = sha256.lower()
        if self.sha256:
            return sha256 == self.sha256
        if self.sha256_prefix:
            return sha256.startswith(self.sha256_prefix)
        return None

    @property
    def size_cap(self) -> int:
        """The most bytes a download of this file may bring: its size when pinned, else its bound."""
        return self.expected_size or self.max_bytes or DEFAULT_MAX_BYTES


# Full sha256 digests of the official files. Sources:
# * CLIP: OpenAI publishes the digest in the download URL itself (openai/CLIP clip/clip.py `_MODELS`), and
#   its `_download` checks the file against that path component.
# * aesthetic: the LAION publisher states none; this is the digest of the file in
#   christophschuhmann/improved-aesthetic-predictor (3,714,759 bytes) that independent public projects pin
#   for both the GitHub file and its Hugging Face mirrors.
# * UniMatch: the publisher states the first 8 hex digits in the file name (torch.hub convention,
#   "-4e7b215d.pth"); this full digest, which starts with them, is the one independent public projects pin
#   for the file at the publisher's URL.
_CLIP_SHA256 = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
_AESTHETIC_SHA256 = "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0"
_UNIMATCH_SHA256 = "4e7b215d5a25dc3b41bd2fb55cbbfe1b715a9c279bdcc8ad30bc31afe69421ca"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

REGISTRY: dict[str, WeightFile] = {
    "clip": WeightFile(
        name="clip",
        description="OpenAI CLIP ViT-L/14 (TorchScript archive), image/text encoder for aesthetic and matching",
        relative_path="clip/ViT-L-14.pt",
        url=f"https://openaipublic.azureedge.net/clip/models/{_CLIP_SHA256}/ViT-L-14.pt",
        sha256=_CLIP_SHA256,
        expected_size=932_768_134,
        approx_size="about 890 MB",
        elsewhere="~/.cache/clip/ViT-L-14.pt",  # where OpenAI's own `clip` package caches it
    ),
    "aesthetic": WeightFile(
        name="aesthetic",
        description="LAION improved aesthetic predictor MLP (sac+logos+ava1-l14-linearMSE) on CLIP ViT-L/14",
        relative_path="aesthetic.pth",
        url=(
            "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
            "sac+logos+ava1-l14-linearMSE.pth"
        ),
        sha256=_AESTHETIC_SHA256,
        expected_size=3_714_759,
        approx_size="about 3.7 MB",
    ),
    "unimatch": WeightFile(
        name="unimatch",
        description="UniMatch GMFlow scale2 regrefine6 (mixdata, 320x576) optical flow model",
        relative_path="unimatch/gmflow-scale2-regrefine6-mixdata-train320x576-4e7b215d.pth",
        url=(
            "https://s3.eu-central-1.amazonaws.com/avg-projects/unimatch/pretrained/"
            "gmflow-scale2-regrefine6-mixdata-train320x576-4e7b215d.pth"
        ),
        sha256=_UNIMATCH_SHA256,
        # torch.hub convention: the hex suffix of the file name is the start of its sha256.
        sha256_prefix="4e7b215d",
        # Its exact size is stated nowhere we could check; the file is about 30 MB (7.4 M float32 values).
        max_bytes=64 << 20,
        approx_size="about 30 MB",
    ),
}

NAMES: tuple[str, ...] = tuple(REGISTRY)


@dataclass(frozen=True)
class MissingWeights:
    """One model file that is not where vidscore looks for it, and how to get it there."""

    name: str
    path: Path
    env_var: str
    location: str  # "override" (set by env_var), "models_dir" or "openai_cache"
    description: str
    url: str

    @property
    def command(self) -> str:
        return f"vidscore weights download {self.name}"

    def describe(self) -> str:
        """One clause: which file, where it was looked for, the variable and the command."""
        if self.location == "override":
            return (
                f"{self.name} weights not found at {self.path} (set by {self.env_var}; fix it, or unset it "
                f"and run `{self.command}`)"
            )
        return (
            f"{self.name} weights not found at {self.path} (run `{self.command}`, or set {self.env_var} "
            "to a copy you have)"
        )


class WeightsMissingError(FileNotFoundError):
    """Model files are not where vidscore looks for them. The message says where and how to fetch each.

    `name`/`path` are the first missing file's; `missing` lists them all.
    """

    def __init__(
        self, name: str, path: Path, message: str, missing: list[MissingWeights] | None = None
    ) -> None:
        super().__init__(message)
        self.name = name
        self.path = path
        self.missing = list(missing or [])

    def __str__(self) -> str:
        return str(self.args[0])


class WeightsDownloadError(RuntimeError):
    """A download failed (network, HTTP status, truncated body or checksum); nothing was left at the target."""


class ChecksumMismatchError(WeightsDownloadError):
    """The downloaded bytes are not the published file."""


def get(name: str) -> WeightFile:
    """The registry entry for `name` ("clip", "aesthetic" or "unimatch")."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model file {name!r}: choose one of {', '.join(NAMES)}") from None


def _location(spec: WeightFile, settings: Settings) -> str:
    """Which rule chose the path: an override, the models dir, or another tool's copy (clip only)."""
    if spec.name in settings.weights:
        return "override"
    if spec.path(settings) == spec.default_path(settings):
        return "models_dir"
    return "openai_cache"


def _missing_message(spec: WeightFile, settings: Settings, path: Path) -> str:
    if _location(spec, settings) == "override":
        where = f"at {path} (set by {spec.env_var})"
        fix = f"fix {spec.env_var}, or unset it and run `vidscore weights download {spec.name}`"
    else:
        where = (
            f"at {path} ($VIDSCORE_MODELS_DIR/{spec.relative_path}; set {spec.env_var} to use another file)"
        )
        fix = f"run `vidscore weights download {spec.name}`"
    return (
        f"{spec.name} weights ({spec.description}) not found {where}. "
        f"To fetch them ({spec.approx_size or 'size unknown'}), {fix}, "
        f"or download {spec.url} yourself and place the file at {path}."
    )


def require(name: str, settings: Settings) -> Path:
    """The path of a model file that exists; raises WeightsMissingError saying where and how to get it."""
    spec = get(name)
    path = spec.path(settings)
    if not path.is_file():
        raise WeightsMissingError(name, path, _missing_message(spec, settings, path), missing(name, settings))
    return path


def missing(names: str | list[str] | tuple[str, ...], settings: Settings) -> list[MissingWeights]:
    """The model files among `names` that are not present, in the order given (duplicates once)."""
    if isinstance(names, str):
        names = [names]
    out: list[MissingWeights] = []
    for name in dict.fromkeys(names):
        spec = get(name)
        path = spec.path(settings)
        if not path.is_file():
            out.append(
                MissingWeights(
                    name=name,
                    path=path,
                    env_var=spec.env_var,
                    location=_location(spec, settings),
                    description=spec.description,
                    url=spec.url,
                )
            )
    return out


def missing_error(absent: list[MissingWeights], purpose: str = "") -> WeightsMissingError:
    """One error naming every missing file, each with its path, variable and download command."""
    if not absent:
        raise ValueError("missing_error needs at least one missing file")
    for_what = f" for {purpose}" if purpose else ""
    names = " ".join(m.name for m in absent)
    if len(absent) == 1:
        head = f"a model file is missing{for_what}: "
        tail = ""
    else:
        head = f"{len(absent)} model files are missing{for_what}: "
        tail = f"; fetch them all with `vidscore weights download {names}`"
    message = head + "; ".join(m.describe() for m in absent) + tail
    return WeightsMissingError(absent[0].name, absent[0].path, message, absent)


def require_all(names: list[str] | tuple[str, ...], settings: Settings, purpose: str = "") -> dict[str, Path]:
    """The paths of `names`, all present; otherwise one WeightsMissingError listing every missing file."""
    absent = missing(list(names), settings)
    if absent:
        raise missing_error(absent, purpose)
    return {name: get(name).path(settings) for name in dict.fromkeys(names)}


def status(settings: Settings, *, compute_sha256: bool = True) -> list[dict[str, Any]]:
    """One row per model file: where it is looked for, whether it is there, and whether it verifies.

    Digests come from the sha256 cache (lineage.file_sha256), so only the first call reads the files.
    `compute_sha256=False` skips hashing (sha256 and verified are then None).
    """
    rows: list[dict[str, Any]] = []
    for spec in REGISTRY.values():
        path = spec.path(settings)
        present = path.is_file()
        digest = None
        if present and compute_sha256:
            digest = file_sha256(path, cache_file=sha256_cache_file(settings))
        rows.append(
            {
                "name": spec.name,
                "path": str(path),
                "location": _location(spec, settings),
                "present": present,
                "size_bytes": path.stat().st_size if present else None,
                "sha256": digest,
                "expected_sha256": spec.sha256,
                "expected_sha256_prefix": spec.sha256_prefix,
                "verified": spec.check_digest(digest) if digest else None,
                "description": spec.description,
                "env_var": spec.env_var,
                "url": spec.url,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------------------


def _expected(sha256: str | None, sha256_prefix: str | None) -> str:
    return sha256 if sha256 else f"a digest starting with {sha256_prefix}"


def fetch_url(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    expected_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = True,
    timeout: float = 60.0,
    cache_file: Path | None = None,
) -> Path:
    """Stream `url` to `target` atomically: temp file in the same directory, verify, then os.replace.

    A body longer than `max_bytes` (or `expected_size`) is cut off and refused. On any failure, including
    KeyboardInterrupt (the CLI raises it on SIGTERM too), the temp file is removed and `target` is left
    as it was (absent or the old file).
    """
    from tqdm.auto import tqdm

    target = Path(target).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    host = urllib.parse.urlsplit(url).hostname or url
    place_hint = f"download it elsewhere and place it at {target}"
    request = urllib.request.Request(url, headers={"User-Agent": f"vidscore/{package_version()}"})

    # Same directory as the target, so the final os.replace is a rename on one filesystem (atomic).
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise WeightsDownloadError(f"{url} answered HTTP {exc.code} {exc.reason}; {place_hint}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise WeightsDownloadError(f"could not reach {host}: {reason}; {place_hint}") from exc

        digest = hashlib.sha256()
        received = 0
        with response, os.fdopen(fd, "wb") as out:
            fd = -1
            length_header = response.headers.get("Content-Length")
            total = int(length_header) if length_header and length_header.isdigit() else None
            cap = expected_size if expected_size is not None else max_bytes
            if total is not None and total > cap:
                raise WeightsDownloadError(_too_large(url, f"announces {total} bytes", cap, target))
            bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=target.name,
                disable=not progress,
                leave=False,
            )
            try:
                with bar:
                    # read1: what has arrived, so the file and the bar grow as the bytes come in.
                    read = getattr(response, "read1", response.read)
                    while True:
                        # One byte past the cap is enough to know the body is too long.
                        chunk = read(min(_CHUNK, cap + 1 - received))
                        if not chunk:
                            break
                        if received + len(chunk) > cap:
                            raise WeightsDownloadError(_too_large(url, "kept sending", cap, target))
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise WeightsDownloadError(
                    f"download of {url} was interrupted after {received} bytes ({exc!r}); "
                    f"{target} was left unchanged; run it again or {place_hint}"
                ) from exc
            # http.client returns a short body without error when the server closes early; check it here.
            if total is not None and received != total:
                raise WeightsDownloadError(
                    f"download of {url} was interrupted: got {received} of {total} bytes; "
                    f"{target} was left unchanged; run it again or {place_hint}"
                )
            out.flush()
            os.fsync(out.fileno())

        got = digest.hexdigest()
        if (
            (sha256 and got != sha256.lower())
            or (sha256_prefix and not got.startswith(sha256_prefix.lower()))
            or (expected_size is not None and received != expected_size)
        ):
            sizes = f"{expected_size} bytes, " if expected_size is not None else ""
            raise ChecksumMismatchError(
                f"sha256 mismatch for {url}: expected {sizes}{_expected(sha256, sha256_prefix)}, got "
                f"{received} bytes, {got}; the download was discarded and {target} was left unchanged"
            )
        # mkstemp creates 0600; weights are shared read-only data (e.g. a models dir mounted into containers).
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # We hashed while streaming; remember it so status/lineage need not read the file again.
    record_sha256(target, got, cache_file=cache_file)
    log.info("downloaded %s (%d bytes, sha256 %s) to %s", url, received, got, target)
    return target


def _too_large(url: str, detail: str, cap: int, target: Path) -> str:
    return (
        f"{url} {detail}: more than the {cap} bytes this file may have; nothing was installed and "
        f"{target} was left unchanged"
    )


def normalize_sha256(value: str) -> str:
    """A full sha256 as 64 lower-case hex digits; ValueError for anything else (a prefix, say)."""
    digest = value.strip().lower()
    if not _SHA256_HEX.fullmatch(digest):
        raise ValueError(f"--sha256 must be a full sha256 (64 hex digits), got {value!r}")
    return digest


def expected_sha256(name: str, url: str | None = None, sha256: str | None = None) -> str:
    """The full digest a download of `name` must have: the pinned one, or the user's when none is pinned.

    A user digest that differs from the pinned one is refused (that would be another file: point the
    file's variable at it instead); so is a download with no full digest at all to check it against.
    """
    spec = get(name)
    given = normalize_sha256(sha256) if sha256 else None
    if spec.sha256:
        if given and given != spec.sha256:
            raise WeightsDownloadError(
                f"--sha256 {given} is not the official {name} file (sha256 {spec.sha256}); to use another "
                f"checkpoint, place it anywhere and set {spec.env_var} to its path"
            )
        return spec.sha256
    if given:
        return given
    source = f"--url {url}" if url else spec.url
    raise WeightsDownloadError(
        f"no sha256 is pinned for the {name} file, so {source} cannot be verified: "
        f"give its full digest with --sha256"
    )


def download(
    name: str,
    settings: Settings,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Install the official model file into $VIDSCORE_MODELS_DIR under its official name; return that path.

    Every download is checked against a full sha256: the one pinned in REGISTRY, or `sha256` when none is
    pinned (`url` installs of such a file need it); a mismatch leaves nothing installed. It is capped at
    the file's pinned size (WeightFile.size_cap). Skips the download when the file vidscore would use is
    present and verifies, unless `force`. `url` points at a mirror (http, https or file).
    Nothing is ever written elsewhere: not onto a per-file override (the user's own file, which keeps
    precedence; see `override_note`), nor into OpenAI's own cache (~/.cache/clip): a bad file there makes us
    download into $VIDSCORE_MODELS_DIR instead, which then takes precedence.
    """
    spec = get(name)
    digest = expected_sha256(name, url, sha256)
    target = spec.default_path(settings)
    # With an override set, the models folder's copy is the one this command manages.
    present = target if _location(spec, settings) == "override" else spec.path(settings)
    cache_file = sha256_cache_file(settings)
    if not force and present.is_file():
        if file_sha256(present, cache_file=cache_file) == digest:
            log.info("%s weights already present at %s (verified)", name, present)
            return present
        log.warning("%s weights at %s do not match sha256 %s; downloading again", name, present, digest)
    return fetch_url(
        url or spec.url,
        target,
        sha256=digest,
        expected_size=spec.expected_size,
        max_bytes=spec.size_cap,
        progress=progress,
        timeout=timeout,
        cache_file=cache_file,
    )


def override_note(name: str, settings: Settings) -> str | None:
    """When a per-file override is set, a sentence saying vidscore uses it rather than the models folder."""
    spec = get(name)
    if _location(spec, settings) != "override":
        return None
    return (
        f"{spec.env_var} is set, so vidscore uses {spec.path(settings)}, not the official file in "
        f"{spec.default_path(settings).parent}; unset it to use the official file"
    )
