"""The three model files vidscore needs: where they live, where they come from, how to check them.

Paths follow the public contract (DESIGN.md): `$VIDSCORE_MODELS_DIR` with the upstream file names, and a
per-file override env var for each. Downloads are plain HTTP GETs from the publishers' own URLs (or a
mirror given by the user), written to a temp file next to the target, verified, then renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidscore_core.lineage import file_sha256, package_version, record_sha256, sha256_cache_file
from vidscore_core.settings import AESTHETIC_FILE, CLIP_FILE, UNIMATCH_FILE, Settings

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightFile:
    """One model file: where vidscore looks for it and where the publisher serves it."""

    name: str
    description: str
    relative_path: str  # below $VIDSCORE_MODELS_DIR
    env_var: str  # per-file override
    settings_field: str  # the Settings field that env var fills
    locate: Callable[[Settings], Path]  # the Settings accessor resolving the path in use
    url: str
    sha256: str | None = None  # full digest, when the publisher states one
    sha256_prefix: str | None = None  # leading hex digits, torch.hub's file-name convention
    expected_size: int | None = None  # bytes, when the publisher states it
    approx_size: str = ""  # for messages only

    def path(self, settings: Settings) -> Path:
        return self.locate(settings)

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


# OpenAI's clip package names each download by its sha256 and checks it after download; we do the same.
_CLIP_SHA256 = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"

REGISTRY: dict[str, WeightFile] = {
    "clip": WeightFile(
        name="clip",
        description="OpenAI CLIP ViT-L/14 (TorchScript archive), image/text encoder for aesthetic and matching",
        relative_path=CLIP_FILE,
        env_var="VIDSCORE_CLIP_WEIGHTS",
        settings_field="clip_weights_override",
        locate=Settings.clip_weights,
        url=f"https://openaipublic.azureedge.net/clip/models/{_CLIP_SHA256}/ViT-L-14.pt",
        sha256=_CLIP_SHA256,
        approx_size="about 890 MB",
    ),
    "aesthetic": WeightFile(
        name="aesthetic",
        description="LAION improved aesthetic predictor MLP (sac+logos+ava1-l14-linearMSE) on CLIP ViT-L/14",
        relative_path=AESTHETIC_FILE,
        env_var="VIDSCORE_AESTHETIC_WEIGHTS",
        settings_field="aesthetic_weights_override",
        locate=Settings.aesthetic_weights,
        url=(
            "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
            "sac+logos+ava1-l14-linearMSE.pth"
        ),
        # The publisher states no checksum, so a present file is trusted as is.
        approx_size="about 3.7 MB",
    ),
    "unimatch": WeightFile(
        name="unimatch",
        description="UniMatch GMFlow scale2 regrefine6 (mixdata, 320x576) optical flow model",
        relative_path=UNIMATCH_FILE,
        env_var="VIDSCORE_UNIMATCH_WEIGHTS",
        settings_field="unimatch_weights_override",
        locate=Settings.unimatch_weights,
        url=(
            "https://s3.eu-central-1.amazonaws.com/avg-projects/unimatch/pretrained/"
            "gmflow-scale2-regrefine6-mixdata-train320x576-4e7b215d.pth"
        ),
        # torch.hub convention: the hex suffix of the file name is the start of its sha256.
        sha256_prefix="4e7b215d",
        approx_size="about 30 MB",
    ),
}

NAMES: tuple[str, ...] = tuple(REGISTRY)


class WeightsMissingError(FileNotFoundError):
    """A model file is not where vidscore looks for it. The message says where and how to fetch it."""

    def __init__(self, name: str, path: Path, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.path = path

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
    """Which rule chose the path: an override, the models dir, or OpenAI's own cache (clip only)."""
    if getattr(settings, spec.settings_field):
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
        raise WeightsMissingError(name, path, _missing_message(spec, settings, path))
    return path


def verify(name: str, settings: Settings) -> bool | None:
    """True/False against the published digest, None when missing or no digest is published."""
    spec = get(name)
    path = spec.path(settings)
    if not path.is_file():
        return None
    return spec.check_digest(file_sha256(path, cache_file=sha256_cache_file(settings)))


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
    progress: bool = True,
    timeout: float = 60.0,
    cache_file: Path | None = None,
) -> Path:
    """Stream `url` to `target` atomically: temp file in the same directory, verify, then os.replace.

    On any failure the temp file is removed and `target` is left as it was (absent or the old file).
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
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
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

        if expected_size is not None and received != expected_size:
            raise WeightsDownloadError(
                f"{url} served {received} bytes, expected {expected_size}; {target} was left unchanged"
            )
        got = digest.hexdigest()
        if (sha256 and got != sha256.lower()) or (
            sha256_prefix and not got.startswith(sha256_prefix.lower())
        ):
            raise ChecksumMismatchError(
                f"sha256 mismatch for {url}: expected {_expected(sha256, sha256_prefix)}, got {got}; "
                f"the download was discarded and {target} was left unchanged"
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


def download(
    name: str,
    settings: Settings,
    *,
    url: str | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Fetch a model file to where vidscore looks for it, and return its path.

    Skips the download when the file is present and verifies (or is present and has no published digest),
    unless `force`. `url` points at a mirror; the mirror's bytes are still checked against the official
    digest. OpenAI's own cache (~/.cache/clip) is never overwritten: a bad file there makes us download
    into $VIDSCORE_MODELS_DIR instead, which then takes precedence.
    """
    spec = get(name)
    current = spec.path(settings)
    cache_file = sha256_cache_file(settings)
    if not force and current.is_file():
        verdict = spec.check_digest(file_sha256(current, cache_file=cache_file))
        if verdict is not False:
            log.info("%s weights already present at %s (verified: %s)", name, current, verdict)
            return current
        log.warning("%s weights at %s do not match the published sha256; downloading again", name, current)
    target = spec.default_path(settings) if _location(spec, settings) == "openai_cache" else current
    return fetch_url(
        url or spec.url,
        target,
        sha256=spec.sha256,
        sha256_prefix=spec.sha256_prefix,
        expected_size=spec.expected_size,
        progress=progress,
        timeout=timeout,
        cache_file=cache_file,
    )
