"""What an export is asked to do and what it did: ExportOptions, ExportResult, the export errors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional


from .parsers import ExportError
from ..labels import labels_for
from .leakage import DEFAULT_THRESHOLD, MAX_THRESHOLD


MANIFEST_FORMAT = 'timm-msanet-export/1'
MAX_LISTED_PER_REASON = 10_000
MODES = ('link', 'copy', 'encode')
DEDUPE_METHODS = (None, 'drop-from-train')
IMAGE_FORMATS = ('auto', 'png', 'jpg')


class OutputError(ExportError):
    """OUTPUT cannot be (re)placed where asked; nothing was written."""


class OptionsError(ExportError):
    """Options that contradict each other or the dataset."""


class SystemExportError(ExportError):
    """Reading SOURCE or writing OUTPUT failed midway (disk full, permissions); no partial OUTPUT is left."""

    exit_status = 1


class NothingExportedError(ExportError):
    """Every entry was skipped: no OUTPUT was written. `manifest` says why."""

    exit_status = 1

    def __init__(self, message: str, manifest: Dict[str, Any]):
        super().__init__(message)
        self.manifest = manifest


@dataclass(frozen=True)
class ExportOptions:
    mode: str = 'link'  # link: absolute symlinks; copy: byte copies; encode: decode, crop/resize, re-encode
    classes: int = 7  # 7 or 8 (adds contempt)
    size: Optional[int] = None  # encode: resize to size x size (faces are aligned: plain resize, no crop)
    crop_face: bool = False  # AffectNet legacy CSV: crop to the face box first (encode only)
    verify: bool = False  # decode every image; undecodable or truncated ones are skipped
    image_format: str = 'auto'  # encode: auto keeps png/jpg sources as they are, others become png
    quality: int = 95  # JPEG quality in encode mode
    balance: Optional[str] = None  # None or 'oversample' (train split only)
    workers: Optional[int] = None  # processes for CPU-bound work; None: all cores
    overwrite: bool = False
    progress: bool = False  # tqdm bar on stderr (only shown on a terminal)
    chunk_size: int = 256  # records per task sent to a worker
    leak_check: bool = True  # content + perceptual hash of every image; cross-split pairs in the manifest
    dedupe: Optional[str] = None  # None (report only) or 'drop-from-train'
    leak_threshold: int = DEFAULT_THRESHOLD  # perceptual hash bits (of 64) within which two images pair

    def validate(self, dataset: str) -> None:
        if self.mode not in MODES:
            raise OptionsError(f'mode must be one of {", ".join(MODES)}, got {self.mode!r}')
        labels_for(self.classes)  # ValueError names the allowed values
        if self.mode != 'encode':
            if self.size is not None:
                raise OptionsError(f'--size resizes images, which needs --mode encode (got --mode {self.mode})')
            if self.crop_face:
                raise OptionsError(f'--crop-face crops images, which needs --mode encode (got --mode {self.mode})')
        if self.crop_face and dataset != 'affectnet':
            raise OptionsError('--crop-face applies to AffectNet (its CSV face boxes) only')
        if self.size is not None and not 1 <= self.size <= 4096:
            raise OptionsError(f'--size must be in 1..4096, got {self.size}')
        if self.image_format not in IMAGE_FORMATS:
            raise OptionsError(f'image format must be one of {", ".join(IMAGE_FORMATS)}, got {self.image_format!r}')
        if not 1 <= self.quality <= 100:
            raise OptionsError(f'--quality must be in 1..100, got {self.quality}')
        if self.balance not in (None, 'oversample'):
            raise OptionsError(f'balance must be None or "oversample", got {self.balance!r}')
        if self.workers is not None and self.workers < 1:
            raise OptionsError(f'--workers must be at least 1, got {self.workers}')
        if self.chunk_size < 1:
            raise OptionsError(f'chunk_size must be at least 1, got {self.chunk_size}')
        if self.dedupe not in DEDUPE_METHODS:
            raise OptionsError(f'dedupe must be one of {", ".join(map(str, DEDUPE_METHODS))}, got {self.dedupe!r}')
        if self.dedupe and not self.leak_check:
            raise OptionsError('--dedupe needs the leak check (it drops what the check finds); '
                               'drop --no-leak-check')
        if not 0 <= self.leak_threshold <= MAX_THRESHOLD:
            raise OptionsError(f'--leak-threshold must be in 0..{MAX_THRESHOLD} bits, got {self.leak_threshold}: '
                               f'beyond about 10 bits distinct faces pair (docs/datasets.md), so a larger '
                               f'threshold no longer finds duplicates')


@dataclass
class ExportResult:
    output: str
    manifest: Dict[str, Any]
    elapsed_s: float

    @property
    def exported(self) -> int:
        return int(self.manifest['exported'])

    @property
    def skipped(self) -> int:
        return int(self.manifest['skipped']['total'])

    def counts(self, split: str) -> Dict[str, int]:
        return dict(self.manifest['splits'][split]['classes'])
