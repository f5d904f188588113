"""Export RAF-DB, AffectNet, FER2013 and FERPlus to ImageFolder trees that timm reads as they are.

    timm-msanet export {rafdb,affectnet,fer2013,ferplus} SOURCE OUTPUT [options]

Every FER dataset ships its own layout and its own class order; getting the order wrong silently
ruins a model. Every export therefore writes the same canonical class folders
(`timm_msanet.labels`), so ImageFolder's sorted order is the class index order for every dataset:

    OUTPUT/{train,validation,test}/<class>/<image>   only the splits the dataset defines
    OUTPUT/class_map.txt                             one class per line: timm's --class-map
    OUTPUT/manifest.json                             counts, skips with reasons, rules, options, leak check

Decisions where the datasets leave room (also in docs/datasets.md):

* All class folders are created, even empty ones. timm's folder reader only indexes folders that
  hold images, so when a class can be empty (e.g. contempt with `--classes 8` on RAF-DB) pass
  `--class-map OUTPUT/class_map.txt` to timm to pin the indices.
* Splits: RAF-DB train_/test_ prefixes -> train/test. AffectNet training -> train and the official
  validation set -> validation only (it is the usual test set; it is not duplicated as test/, and
  the manifest's `evaluation_split` says so). FER2013 csv Usage Training/PublicTest/PrivateTest ->
  train/validation/test; the FER2013 folder redistribution has train/ and test/ only.
* FERPlus: the label is the column with strictly the most votes among all 10 columns; ties,
  unknown or NF winning, rows without votes and rows without an image name are dropped; with
  `--classes 7` a contempt winner is dropped too (votes are not re-counted without contempt).
* AffectNet: 8 None, 9 Uncertain, 10 No-Face are always dropped; `--classes 7` drops 7 contempt.
  `--crop-face` (legacy CSV release only) needs `--mode encode`: a link or copy cannot crop, and
  switching modes silently would surprise, so it is an error.
* FER2013 csv pixels are always written as PNG (nothing to link); `--size` applies in encode mode.
* `--mode link` writes absolute symlinks. Link mode without `--verify` checks only that each image
  exists (in up to 4 threads: a stat and a symlink are system calls that overlap with CSV parsing);
  `--verify`, copy and encode work, and FER2013 pixel rows, run in worker processes (`--workers`,
  default all cores), fed in chunks with at most 2 chunks per worker in flight, so memory does not
  grow with the dataset.
* `--balance oversample` adds symlinks in train/ (`<stem>.oversampleN<ext>`) until every non-empty
  class has as many entries as the largest; empty classes stay empty. Split counts in the manifest
  are the real images; `balance` records what was added.
* Skips are counted by reason; each reason lists its first 10,000 items (memory stays bounded).
  Blank lines are not entries. A path from a label file or CSV that is absolute or contains `..`
  is skipped (unsafe_path): data never makes the exporter read outside its image folder.
  AffectNet `.npy` annotations are loaded with allow_pickle=False. Two entries with the same
  output name in one class folder: the second is skipped as duplicate (files are created
  exclusively, never overwritten).
* Encode mode keeps JPEG/PNG sources in their format (`--format` to force one), writes 'L' or
  'RGB', and resizes with bicubic filtering; link/copy keep the source file name and format (timm
  reads .jpg/.jpeg/.png only).
* Leak check (on unless `--no-leak-check`): every image gets a content hash (source bytes) and a perceptual
  hash (leakage.py); images of different splits within `--leak-threshold` bits (default 4) are reported
  per split pair in the summary and `manifest.json` (`leak_check`), with label disagreements.
  `--dedupe drop-from-train` removes the training copies (before `--balance`); validation and test are
  never changed. Hashing decodes every image, so link mode then runs in worker processes; without it,
  plain link mode keeps its threads. An undecodable image is still linked/copied without `--verify`, as
  before; the check counts it as `not_decodable` and pairs it by its bytes only.
* Safety: SOURCE is only read. OUTPUT is built in a `.OUTPUT.partial-PID-*` folder beside it and
  renamed at the end; on any failure (or Ctrl-C, SIGTERM) the workers are stopped at once and the
  partial folder is removed, later signals being ignored until that is done. What a SIGKILL or power
  loss leaves (the partial folder; an earlier OUTPUT moved aside) is cleared or restored by the next
  export to the same OUTPUT (`clean_leftovers`), which touches nothing else. An
  existing OUTPUT is refused without `--overwrite`, and even with it only an earlier export (or an
  empty folder) is replaced, after the new one is complete. OUTPUT inside SOURCE, or SOURCE inside
  OUTPUT, is refused. When nothing could be exported, no OUTPUT is written and the exit status is 1;
  a wrong SOURCE or option exits with status 2 and a one-line message naming what was expected.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np
from PIL import Image

from ._dataset_parsers import (
    SKIP_REASONS, SPLITS, DatasetLayoutError, Entry, ExportError, ExportPlan, Record, Skip, plan_affectnet,
    plan_fer2013, plan_ferplus, plan_rafdb)
from . import safe_json
from .images import MAX_IMAGE_BYTES, ImageFileError, open_image_file, read_image_file
from .labels import labels_for
from .options import positive_int
from .outputs import printable, usual_permissions
from .leakage import (DEFAULT_THRESHOLD, HashedImage, content_hash, cross_split_pairs, leak_report, perceptual_hash,
                      summary_lines, train_copies)
from .version import __version__

__all__ = [
    'ExportOptions', 'ExportResult', 'ExportError', 'DatasetLayoutError', 'OutputError', 'NothingExportedError',
    'Record', 'Skip', 'export_records', 'export_plan', 'export_rafdb', 'export_affectnet', 'export_fer2013',
    'export_ferplus', 'format_summary', 'configure_parser', 'run',
]

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
        if not 0 <= self.leak_threshold <= 32:
            raise OptionsError(f'--leak-threshold must be in 0..32 bits, got {self.leak_threshold}')


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


# ---------------------------------------------------------------------------------------------------
# per-item work: runs in worker processes (or inline), so it only sees picklable arguments

class WorkerConfig(NamedTuple):
    staging: str
    mode: str
    size: Optional[int]
    crop_face: bool
    verify: bool
    image_format: str
    quality: int
    hash_images: bool = False  # the leak check: content and perceptual hash of every image
    source_roots: Tuple[str, ...] = ()  # real paths of the SOURCE folders: images must resolve inside one of them


class _ItemError(Exception):
    def __init__(self, reason: str, detail: str = ''):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _describe(e: BaseException) -> str:
    return f'{type(e).__name__}: {e}'[:300]


def _check_inside(path: str, roots: Sequence[str]) -> None:
    """A source image must resolve inside SOURCE: a link in SOURCE that points elsewhere is not followed."""
    if roots:
        real = os.path.realpath(path)
        if not any(_is_within(real, root) for root in roots):
            raise _ItemError('outside_source', f'{path} resolves to {real}, outside SOURCE: not read')


def _open_source(path: str, roots: Sequence[str]) -> int:
    """A descriptor of one source image, inside SOURCE and passing `images.open_image_file` (a regular file,
    bounded size), or _ItemError."""
    _check_inside(path, roots)
    try:
        return open_image_file(path, MAX_IMAGE_BYTES)
    except ImageFileError as e:
        raise _ItemError(e.reason, str(e)) from None


def _read(path: str, roots: Sequence[str] = ()) -> bytes:
    _check_inside(path, roots)
    try:
        return read_image_file(path, MAX_IMAGE_BYTES)
    except ImageFileError as e:
        raise _ItemError(e.reason, str(e)) from None


def _decode_bytes(data: bytes) -> Image.Image:
    """Fully decode (not just `verify()`), so truncated files are caught."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        if img.mode not in ('L', 'RGB'):
            img = img.convert('RGB')
        return img
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise _ItemError('undecodable_image', _describe(e)) from None


def pixels_to_image(pixels: str) -> Image.Image:
    """FER2013's 2304 space-separated grey values -> 48x48 'L' image."""
    try:
        values = np.array(pixels.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise _ItemError('bad_pixels', 'pixel values must be integers') from None
    if values.size != 48 * 48 or values.min() < 0 or values.max() > 255:
        raise _ItemError('bad_pixels', f'expected 2304 values in 0..255, got {values.size}')
    return Image.fromarray(values.astype(np.uint8).reshape(48, 48))


def _crop_box(img: Image.Image, box: Tuple[int, int, int, int]) -> Image.Image:
    x, y, w, h = box
    left, top, right, bottom = max(0, x), max(0, y), min(img.width, x + w), min(img.height, y + h)
    if right <= left or bottom <= top:
        raise _ItemError('bad_face_box', f'face box {box} lies outside the {img.width}x{img.height} image')
    return img.crop((left, top, right, bottom))


def _transform(img: Image.Image, rec: Record, cfg: WorkerConfig) -> Image.Image:
    if cfg.crop_face and rec.box is not None:
        img = _crop_box(img, rec.box)
    if cfg.size is not None and img.size != (cfg.size, cfg.size):
        img = img.resize((cfg.size, cfg.size), Image.Resampling.BICUBIC)
    return img


def _encoded_name(name: str, image_format: str) -> Tuple[str, str]:
    """Output file name and PIL format for an encoded image (extensions timm's reader accepts)."""
    stem, ext = os.path.splitext(name)
    ext = ext.lower()
    if image_format == 'jpg' or (image_format == 'auto' and ext in ('.jpg', '.jpeg')):
        return (name if ext in ('.jpg', '.jpeg') else stem + '.jpg'), 'JPEG'
    return (name if ext == '.png' else stem + '.png'), 'PNG'


@contextlib.contextmanager
def _new_file(dst: str) -> Iterator[Any]:
    """Exclusive create (a second entry with the same name is a duplicate, never a silent overwrite); a write
    that fails removes the partial file, so the tree never holds a truncated image the manifest calls skipped."""
    f = open(dst, 'xb')
    try:
        with f:
            yield f
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dst)
        raise


def _write_new(dst: str, data: bytes) -> None:
    with _new_file(dst) as f:
        f.write(data)


def _save(img: Image.Image, dst: str, fmt: str, quality: int) -> None:
    buf = io.BytesIO()  # encode fully before creating the file: no empty file on an encoder error
    if fmt == 'JPEG':
        img.save(buf, 'JPEG', quality=quality)
    else:
        img.save(buf, 'PNG')
    _write_new(dst, buf.getvalue())


def _copy_new(src: str, dst: str, roots: Sequence[str] = ()) -> None:
    with os.fdopen(_open_source(src, roots), 'rb') as fsrc, _new_file(dst) as fdst:
        copied = 0
        while True:
            chunk = fsrc.read(1 << 20)
            if not chunk:
                break
            copied += len(chunk)
            if copied > MAX_IMAGE_BYTES:  # grew after the check
                raise _ItemError('too_large', f'{src} has more than {MAX_IMAGE_BYTES:,} bytes: not copied')
            fdst.write(chunk)


Hashes = Tuple[Optional[str], Optional[int]]  # content sha256, perceptual hash (None: not computed / undecodable)


def _perceptual_or_none(data: bytes) -> Optional[int]:
    """Link and copy mode do not skip undecodable images without --verify; the leak check only notes them."""
    try:
        return perceptual_hash(_decode_bytes(data))
    except _ItemError:
        return None


def export_one(rec: Record, cfg: WorkerConfig) -> Tuple[str, Hashes]:
    """Write one record into the staging tree; returns the file name written and, with `cfg.hash_images`, its
    hashes. Raises _ItemError (or OSError) when it cannot."""
    class_dir = os.path.join(cfg.staging, rec.split, rec.label)
    box = repr(rec.box).encode() if cfg.crop_face and rec.box is not None else b''
    if rec.pixels is not None:
        source = pixels_to_image(rec.pixels)
        img = _transform(source, rec, cfg) if cfg.mode == 'encode' else source
        name, fmt = _encoded_name(rec.name, 'png' if cfg.mode != 'encode' else cfg.image_format)
        _save(img, os.path.join(class_dir, name), fmt, cfg.quality)
        hashes = (content_hash(source.tobytes()), perceptual_hash(img)) if cfg.hash_images else (None, None)
        return name, hashes
    assert rec.path is not None
    if cfg.mode == 'encode':
        data = _read(rec.path, cfg.source_roots)
        img = _transform(_decode_bytes(data), rec, cfg)
        name, fmt = _encoded_name(rec.name, cfg.image_format)
        _save(img, os.path.join(class_dir, name), fmt, cfg.quality)
        hashes = (content_hash(data, box), perceptual_hash(img)) if cfg.hash_images else (None, None)
        return name, hashes
    dst = os.path.join(class_dir, rec.name)
    data: Optional[bytes] = None
    hashes: Hashes = (None, None)
    if cfg.hash_images or cfg.verify:
        data = _read(rec.path, cfg.source_roots)
        img = _decode_bytes(data) if cfg.verify else None  # --verify: an undecodable image is skipped
        if cfg.hash_images:
            hashes = (content_hash(data), perceptual_hash(img) if img is not None else _perceptual_or_none(data))
    elif cfg.mode == 'link':
        os.close(_open_source(rec.path, cfg.source_roots))  # the same checks as a read, without reading
    if cfg.mode == 'link':
        os.symlink(rec.path, dst)
    elif data is not None:
        _write_new(dst, data)
    else:
        _copy_new(rec.path, dst, cfg.source_roots)
    return rec.name, hashes


Done = Tuple[str, str, str, str, Optional[str], Optional[int]]  # split, label, file name, item, sha256, phash
ChunkResult = Tuple[List[Done], List[Skip]]


def process_chunk(records: Sequence[Record], cfg: WorkerConfig) -> ChunkResult:
    """Export a chunk; per-item failures become Skips so one bad image never fails the export."""
    done: List[Done] = []
    skipped: List[Skip] = []
    for rec in records:
        try:
            name, (sha, phash) = export_one(rec, cfg)
        except _ItemError as e:
            skipped.append(Skip(rec.item, e.reason, e.detail, rec.split))
        except FileExistsError:
            where = f'{rec.split}/{rec.label}/{rec.name}'
            skipped.append(Skip(rec.item, 'duplicate', f'{where} already written', rec.split))
        except (OSError, ValueError) as e:  # ENAMETOOLONG, EACCES, disk full, NUL in a name, ...
            skipped.append(Skip(rec.item, 'write_error', _describe(e), rec.split))
        else:
            done.append((rec.split, rec.label, name, rec.item, sha, phash))
    return done, skipped


_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _worker_init() -> None:
    # Ctrl-C goes to the whole process group; the parent handles it and shuts the pool down
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a forked worker inherits the CLI's unwinding SIGTERM handler: the parent's terminate() must simply end it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, 'pthread_sigmask'):  # forked while the parent held these signals (_spawning_workers)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)


@contextlib.contextmanager
def _spawning_workers(kind: str) -> Iterator[None]:
    """Hold SIGINT and SIGTERM while a process pool forks its workers. A Ctrl-C that lands between a fork and
    the pool recording the new process left a worker nobody stopped: it kept the run's stdout open and the
    command never ended. Held, the signal is delivered once every worker is known, and unwinds as usual."""
    if kind != 'process' or not hasattr(signal, 'pthread_sigmask'):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# ---------------------------------------------------------------------------------------------------
# the parent side: streaming, bounded parallelism, counting

class _Tally:
    """Counts per split and class, and skips per reason with a bounded list of examples."""

    def __init__(self, splits: Sequence[str], classes: Sequence[str]):
        self.counts: Dict[str, Dict[str, int]] = {s: {c: 0 for c in classes} for s in splits}
        self.by_reason: Counter = Counter()
        self.by_split: Dict[str, Counter] = {}
        self.listed: List[Dict[str, Any]] = []
        self._listed_per_reason: Counter = Counter()
        self.not_listed = 0
        self.hashed: List[HashedImage] = []

    @property
    def exported(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def skipped(self) -> int:
        return sum(self.by_reason.values())

    def add_done(self, done: Iterable[Done]) -> None:
        for split, label, name, item, sha, phash in done:
            self.counts[split][label] += 1
            if sha is not None:
                self.hashed.append(HashedImage(split, label, f'{split}/{label}/{name}', item, sha, phash))

    def add_skip(self, skip: Skip) -> None:
        self.by_reason[skip.reason] += 1
        self.by_split.setdefault(skip.split or 'unknown', Counter())[skip.reason] += 1
        if self._listed_per_reason[skip.reason] < MAX_LISTED_PER_REASON:
            self._listed_per_reason[skip.reason] += 1
            self.listed.append({'item': skip.item, 'reason': skip.reason, 'detail': skip.detail, 'split': skip.split})
        else:
            self.not_listed += 1


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(enabled: bool, total: Optional[Callable[[], int]], desc: str) -> Any:
    if not enabled or not sys.stderr.isatty():
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()

    class _Bar(tqdm):  # type: ignore[misc,valid-type]
        monitor_interval = 0  # no monitor thread: worker processes are forked

    return _Bar(total=total() if total else None, desc=desc, unit='img', file=sys.stderr, dynamic_ncols=True)


def _chunks(entries: Iterable[Entry], classes: Set[str], tally: _Tally, bar: Any, size: int) -> Iterator[List[Record]]:
    """Records in chunks of `size`; Skips from the readers go straight into the tally."""
    chunk: List[Record] = []
    for entry in entries:
        if isinstance(entry, Skip):
            tally.add_skip(entry)
            bar.update(1)
            continue
        if entry.label not in classes:  # readers already filter; this keeps custom record streams honest
            tally.add_skip(Skip(entry.item, 'excluded_label', f'{entry.label} is not an export class', entry.split))
            bar.update(1)
            continue
        chunk.append(entry)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _collect(result: ChunkResult, tally: _Tally, bar: Any) -> None:
    done, skipped = result
    tally.add_done(done)
    for skip in skipped:
        tally.add_skip(skip)
    bar.update(len(done) + len(skipped))


def _pool_context() -> Any:
    """fork where it is safe (Linux): workers need not re-import the package (and torch with it)."""
    if sys.platform.startswith('linux') and 'fork' in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context('fork')
    return multiprocessing.get_context()


LINK_THREADS = 4


def _executor(options: ExportOptions, plan: ExportPlan) -> Tuple[str, int]:
    """('process', n) for CPU-bound work (decode, encode, hashing); ('thread', n) for plain link mode
    (`--no-leak-check`).

    A link is a stat and a symlink: system calls that release the GIL, so threads overlap them with
    CSV parsing in the main thread, without the pickling cost of a process pool.
    """
    if options.mode == 'link' and not options.verify and not plan.has_pixels and not options.leak_check:
        return 'thread', min(LINK_THREADS, options.workers or LINK_THREADS)
    return 'process', options.workers or os.cpu_count() or 1


class _WaitState:
    """Set while the main thread waits for pool results. `concurrent.futures.wait` sleeps in a
    `threading.Condition`, which releases and re-takes its lock in Python code: a KeyboardInterrupt raised
    there by the signal handler can strike between the two and surface as `RuntimeError: release unlocked
    lock` instead (seen with Ctrl-C twice). So while waiting the handler only records the signal, and
    `_wait_for_one` raises the KeyboardInterrupt itself, outside the lock."""
    active = False
    interrupted = False


_WAIT = _WaitState()


def _wait_for_one(futures: Set[Future]) -> Tuple[Set[Future], Set[Future]]:
    """`wait(futures, return_when=FIRST_COMPLETED)`, polled, so that an interrupt is raised here (`_WaitState`)."""
    _WAIT.active = True
    try:
        while True:
            done, rest = wait(futures, timeout=0.1, return_when=FIRST_COMPLETED)
            if done or _WAIT.interrupted:
                break
    finally:
        _WAIT.active = False
    if _WAIT.interrupted:  # checked after `active` is cleared: a signal from then on raises in the handler
        raise KeyboardInterrupt
    return done, rest


def _run_pipeline(chunks: Iterator[List[Record]], cfg: WorkerConfig, kind: str, workers: int, tally: _Tally,
                  bar: Any) -> None:
    if workers <= 1:
        for chunk in chunks:
            _collect(process_chunk(chunk, cfg), tally, bar)
        return
    before = set(multiprocessing.active_children())
    if kind == 'thread':
        pool: Any = ThreadPoolExecutor(max_workers=workers)
    else:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_worker_init)
    in_flight: Set[Future] = set()
    started = False
    try:
        for chunk in chunks:
            if len(in_flight) >= 2 * workers:  # bounded: memory does not grow with the dataset
                done, in_flight = _wait_for_one(in_flight)
                for future in done:
                    _collect(future.result(), tally, bar)
            if started:
                in_flight.add(pool.submit(process_chunk, chunk, cfg))
            else:  # the first submit forks the workers (fork context)
                with _spawning_workers(kind):
                    in_flight.add(pool.submit(process_chunk, chunk, cfg))
                started = True
        while in_flight:
            done, in_flight = _wait_for_one(in_flight)
            for future in done:
                _collect(future.result(), tally, bar)
    except BaseException:
        _stop_pool(pool, kind, before)
        raise
    pool.shutdown(wait=True)


def _stop_pool(pool: Any, kind: str, before: Set[Any]) -> None:
    """Stop a pool at once on an error or interrupt: nothing may write into the staging folder once it is
    being removed. Threads only run short link/copy chunks and finish them; worker processes are terminated
    (waiting for their chunks is what made an interrupted encode export hang), then killed if they linger."""
    recorded = list((getattr(pool, '_processes', None) or {}).values())  # shutdown() drops the pool's record
    call_queue = getattr(pool, '_call_queue', None)
    pool.shutdown(wait=False, cancel_futures=True)
    if kind == 'process':
        terminate = getattr(pool, 'terminate_workers', None)  # Python 3.14+
        if terminate is not None:
            terminate()
        # the pool's workers are the multiprocessing children that did not exist before it (and, to be sure,
        # the processes the pool itself records)
        workers = [p for p in multiprocessing.active_children() if p not in before]
        workers += [p for p in recorded if p not in workers]
        if terminate is None:
            for proc in workers:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in workers:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)
        if call_queue is not None:
            # with the workers gone nobody reads the task queue: its feeder thread can block on a full pipe, and
            # the pool's manager thread (joined at interpreter exit) would wait for it forever
            call_queue.cancel_join_thread()
    pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------
# OUTPUT: safety checks, staging, balancing, metadata, publishing

def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _source_roots(plan: ExportPlan) -> Tuple[str, ...]:
    """The real paths of the SOURCE folders every image must resolve inside (none: no confinement, as for
    `export_records` given no inputs)."""
    return tuple(os.path.realpath(p) for p in plan.inputs if os.path.isdir(p))


def _looks_like_export(path: str) -> bool:
    try:
        with open(os.path.join(path, 'manifest.json'), encoding='utf-8') as f:
            return str(safe_json.loads(f.read(1 << 26)).get('format', '')).startswith('timm-msanet-export/')
    except (OSError, ValueError, AttributeError):
        return False


def check_output(output: str, inputs: Sequence[str], overwrite: bool) -> None:
    """Refuse every OUTPUT that could damage SOURCE or an unrelated folder, before any work starts."""
    real_out = os.path.realpath(output)
    for src in inputs:
        real_src = os.path.realpath(src)
        if os.path.isdir(real_src) and _is_within(real_out, real_src):
            raise OutputError(f'OUTPUT {output} is inside SOURCE {src}: an export never writes inside its source')
        if _is_within(real_src, real_out):
            raise OutputError(f'SOURCE {src} is inside OUTPUT {output}: replacing OUTPUT would delete the source')
    if not os.path.lexists(output):
        return
    if not overwrite:
        raise OutputError(f'OUTPUT {output} already exists; pass --overwrite to replace it '
                          f'(the old one is replaced only once the new export is complete)')
    if os.path.islink(output) or not os.path.isdir(output):
        raise OutputError(f'OUTPUT {output} exists and is not a folder; refusing to replace it')
    if os.listdir(output) and not _looks_like_export(output):
        raise OutputError(f'OUTPUT {output} exists and is not an earlier export (no timm-msanet manifest.json); '
                          f'refusing to replace it even with --overwrite')


def _dup_name(class_dir: str, name: str, rep: int) -> str:
    stem, ext = os.path.splitext(name)
    candidate = f'{stem}.oversample{rep}{ext}'  # keeps the extension: timm's reader filters on it
    while os.path.lexists(os.path.join(class_dir, candidate)):
        stem += '_'
        candidate = f'{stem}.oversample{rep}{ext}'
    return candidate


def oversample(split_dir: str, classes: Sequence[str]) -> Dict[str, Any]:
    """Add links so each non-empty class has as many entries as the largest (cycling in name order)."""
    names = {c: sorted(os.listdir(os.path.join(split_dir, c))) for c in classes}
    target = max((len(v) for v in names.values()), default=0)
    added: Dict[str, int] = {}
    for label, files in names.items():
        class_dir = os.path.join(split_dir, label)
        need = target - len(files) if files else 0
        for j in range(need):
            name = files[j % len(files)]
            src = os.path.join(class_dir, name)
            # link mode: point at the same source (one hop); copy/encode: relative link to the sibling
            target_path = os.readlink(src) if os.path.islink(src) else name
            os.symlink(target_path, os.path.join(class_dir, _dup_name(class_dir, name, j // len(files) + 1)))
        added[label] = need
    return {
        'method': 'oversample', 'split': os.path.basename(split_dir), 'target_per_class': target, 'added': added,
        'counts_after': {c: len(names[c]) + added[c] for c in classes},
        'empty_classes': [c for c in classes if not names[c]],
    }


def check_leaks(staging: str, plan: ExportPlan, options: ExportOptions, tally: _Tally) -> Dict[str, Any]:
    """Cross-split pairs of the exported images (leakage.py); with `--dedupe drop-from-train`, the training
    copies of validation/test images are removed from the staging tree (before any oversampling)."""
    started = time.perf_counter()
    groups = cross_split_pairs(tally.hashed, plan.splits, options.leak_threshold)
    report = leak_report(tally.hashed, groups, plan.splits, options.leak_threshold)
    report['dedupe'] = None
    if options.dedupe == 'drop-from-train':
        copies = train_copies(tally.hashed, groups)
        dropped = []
        by_class: Counter = Counter()
        for i in sorted(copies):
            im = tally.hashed[i]
            os.remove(os.path.join(staging, *im.file.split('/')))
            tally.counts[im.split][im.label] -= 1
            by_class[im.label] += 1
            dropped.append({'file': im.file, 'item': im.item, 'label': im.label,
                            'copy_of': [tally.hashed[j].file for j in copies[i]][:5]})
        report['dedupe'] = {'method': options.dedupe, 'dropped': len(dropped),
                            'by_class': dict(sorted(by_class.items())), 'items': dropped[:MAX_LISTED_PER_REASON],
                            'items_not_listed': max(0, len(dropped) - MAX_LISTED_PER_REASON)}
    report['seconds'] = round(time.perf_counter() - started, 3)
    return report


def _build_manifest(plan: ExportPlan, output: str, options: ExportOptions, tally: _Tally,
                    balance: Optional[Dict[str, Any]], workers: Dict[str, Any],
                    leaks: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {
        'format': MANIFEST_FORMAT,
        'package': 'timm-msanet',
        'package_version': __version__,
        'created_utc': datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        'dataset': plan.dataset,
        'layout': plan.layout,
        'source': plan.inputs[0] if plan.inputs else None,
        'inputs': list(plan.inputs),
        'output': output,
        'classes': list(plan.classes),
        'class_to_idx': {c: i for i, c in enumerate(plan.classes)},
        'label_map': dict(plan.label_map),
        'split_map': dict(plan.split_map),
        'evaluation_split': plan.evaluation_split,
        'rules': list(plan.rules),
        'options': {**asdict(options), 'workers_used': workers},  # {'kind': 'thread'|'process', 'count': n}
        'exported': tally.exported,
        'splits': {s: {'total': sum(c.values()), 'classes': dict(c)} for s, c in tally.counts.items()},
        'balance': balance,
        'skipped': {
            'total': tally.skipped,
            'by_reason': dict(sorted(tally.by_reason.items())),
            'by_split': {s: dict(sorted(c.items())) for s, c in sorted(tally.by_split.items())},
            'reasons': {r: SKIP_REASONS.get(r, '') for r in sorted(tally.by_reason)},
        },
        'skipped_items': tally.listed,
        'skipped_items_not_listed': tally.not_listed,
        'leak_check': leaks,  # None with --no-leak-check
    }


def _write_metadata(staging: str, classes: Sequence[str], manifest: Dict[str, Any]) -> None:
    with open(os.path.join(staging, 'class_map.txt'), 'w', encoding='utf-8') as f:
        f.write(''.join(f'{c}\n' for c in classes))
    # file names that are not valid UTF-8 arrive as lone surrogates (surrogateescape); backslashreplace
    # writes them as JSON \\udcXX escapes instead of failing the export at its last step
    with open(os.path.join(staging, 'manifest.json'), 'w', encoding='utf-8', errors='backslashreplace') as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write('\n')


def _publish(staging: str, output: str) -> None:
    """Rename the finished tree into place; an old OUTPUT is moved aside first and removed last."""
    if not os.path.lexists(output):
        os.rename(staging, output)
        return
    parent, base = os.path.split(output)
    old = os.path.join(parent, f'.{base}.old-{os.getpid()}-{time.monotonic_ns()}')
    os.rename(output, old)
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


PARTIAL_MARKER = '.timm-msanet-partial'


def _make_staging(output: str) -> str:
    """`.OUTPUT.partial-PID-XXXX` beside OUTPUT, marked as ours, so a later run can tell it from anything else."""
    parent, base = os.path.split(output)
    staging = tempfile.mkdtemp(prefix=f'.{base}.partial-{os.getpid()}-', dir=parent)
    with open(os.path.join(staging, PARTIAL_MARKER), 'w', encoding='utf-8') as f:
        json.dump({'pid': os.getpid(), 'host': socket.gethostname(), 'output': output}, f)
    return staging


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _is_our_partial(path: str, pid: int) -> bool:
    try:
        with open(os.path.join(path, PARTIAL_MARKER), encoding='utf-8') as f:
            marker = safe_json.loads(f.read(1 << 16))
    except FileNotFoundError:
        return not os.listdir(path)  # killed between creating the folder and marking it
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get('pid') == pid and marker.get('host') == socket.gethostname()


def clean_leftovers(output: str) -> List[str]:
    """Clear what an export stopped without cleanup (SIGKILL, power loss) left beside OUTPUT; returns notes.

    Only two kinds of folder are touched, and only when the process that made them is gone:
    `.OUTPUT.partial-PID-*` holding this package's marker (or nothing), removed; `.OUTPUT.old-PID-*`
    holding an earlier export, removed when OUTPUT exists (the replacement finished) and renamed back to
    OUTPUT when it does not (the run died between moving the old export aside and moving the new one in).
    Folders of a live process (another export to the same OUTPUT) and anything else are left alone.
    """
    parent, base = os.path.split(output)
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    notes = []
    pattern = re.compile(re.escape(f'.{base}.') + r'(partial|old)-(\d+)-[^/]+')
    for name in names:
        match = pattern.fullmatch(name)
        path = os.path.join(parent, name)
        if match is None or os.path.islink(path) or not os.path.isdir(path):
            continue
        kind, pid = match.group(1), int(match.group(2))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if kind == 'partial' and _is_our_partial(path, pid):
            shutil.rmtree(path)
            notes.append(f'removed {path}: the partial folder of an earlier export (pid {pid}) that was stopped '
                         f'before it could clean up')
        elif kind == 'old' and _looks_like_export(path):
            if os.path.lexists(output):
                shutil.rmtree(path)
                notes.append(f'removed {path}: an earlier export that a later, completed export replaced')
            else:
                os.rename(path, output)
                notes.append(f'restored {output} from {path}: an earlier export was stopped while replacing it')
    return notes


def export_plan(plan: ExportPlan, output: str, options: ExportOptions) -> ExportResult:
    """The common core: stream `plan.entries` into a staging tree beside OUTPUT, then publish it.

    One export at a time writes an OUTPUT (`.OUTPUT.lock` beside it; a second fails at once), and OUTPUT must
    look at the end as it did at the start (absent, or the same earlier export): a file someone put there
    meanwhile is never deleted by the final rename."""
    options.validate(plan.dataset)
    output = os.path.abspath(output)
    parent = os.path.dirname(output)
    check_output(output, plan.inputs, options.overwrite)
    os.makedirs(parent, exist_ok=True)
    lock = _take_lock(output)
    try:
        for note in clean_leftovers(output):
            warnings.warn(note, UserWarning, stacklevel=2)
        check_output(output, plan.inputs, options.overwrite)  # again, now that no other export can change it
        return _export_locked(plan, output, options, _output_state(output))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)


def _take_lock(output: str) -> str:
    parent, base = os.path.split(output)
    lock = os.path.join(parent, f'.{base}.lock')
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(lock, encoding='utf-8') as f:
                    holder = safe_json.loads(f.read(1 << 16))
                pid, host = int(holder['pid']), holder['host']
            except (OSError, ValueError, KeyError, TypeError):
                pid, host = None, None
            if attempt == 0 and host == socket.gethostname() and pid is not None and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):  # the lock of an export that was killed
                    os.unlink(lock)
                continue
            who = f'another export (pid {pid} on {host})' if pid is not None else 'another export'
            raise OutputError(f'{who} is writing {output} (lock {lock}); wait for it to finish or choose another '
                              f'OUTPUT. If no export is running, remove the lock file.') from None
        except OSError as e:
            raise OutputError(f'cannot create the lock {lock} beside OUTPUT: {e.strerror or e}') from None
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump({'pid': os.getpid(), 'host': socket.gethostname(), 'output': output}, f)
        return lock
    raise OutputError(f'cannot take the lock {lock} beside OUTPUT')


def _output_state(output: str) -> Optional[Tuple[Tuple[str, ...], bytes]]:
    """What OUTPUT looks like: absent (None), or its names and manifest bytes (an earlier export)."""
    if not os.path.lexists(output):
        return None
    try:
        with open(os.path.join(output, 'manifest.json'), 'rb') as f:
            manifest = f.read(1 << 26)
    except OSError:
        manifest = b''
    return tuple(sorted(os.listdir(output))) if os.path.isdir(output) else (), manifest


def _export_locked(plan: ExportPlan, output: str, options: ExportOptions,
                   state: Optional[Tuple[Tuple[str, ...], bytes]]) -> ExportResult:
    started = time.perf_counter()
    staging = _make_staging(output)
    bar = _NoProgress()
    try:
        for split in plan.splits:
            for label in plan.classes:
                os.makedirs(os.path.join(staging, split, label))
        tally = _Tally(plan.splits, plan.classes)
        cfg = WorkerConfig(staging, options.mode, options.size, options.crop_face, options.verify,
                           options.image_format, options.quality, options.leak_check, _source_roots(plan))
        kind, workers = _executor(options, plan)
        bar = _progress_bar(options.progress, plan.count_hint, f'export {plan.dataset}')
        chunks = _chunks(plan.entries, set(plan.classes), tally, bar, options.chunk_size)
        _run_pipeline(chunks, cfg, kind, workers, tally, bar)
        bar.close()
        leaks = check_leaks(staging, plan, options, tally) if options.leak_check else None
        balance = None
        if options.balance == 'oversample' and 'train' in plan.splits and tally.exported:
            balance = oversample(os.path.join(staging, 'train'), plan.classes)
        manifest = _build_manifest(plan, output, options, tally, balance, {'kind': kind, 'count': workers}, leaks)
        if tally.exported == 0:
            raise NothingExportedError(
                f'nothing usable was exported from {plan.inputs[0]}: {tally.skipped} entries skipped '
                f'({_reason_summary(tally.by_reason) or "no entries found"}); {output} was not written', manifest)
        _write_metadata(staging, plan.classes, manifest)
        os.remove(os.path.join(staging, PARTIAL_MARKER))
        if _output_state(output) != state:
            raise OutputError(f'{output} changed while the export ran (something was put there or removed); the new '
                              f'export was not put in place and {output} was left as it is')
        usual_permissions(staging)  # mkdtemp made it 0700
        _COMMIT.active = True  # from here the export is finished: the CLI defers signals instead of unwinding
        _publish(staging, output)
    except BaseException:
        _COMMIT.active = False
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(output, manifest, time.perf_counter() - started)


def export_records(entries: Iterable[Entry], output: str, *, dataset: str, classes: int = 7,
                   splits: Sequence[str] = SPLITS, inputs: Sequence[str] = (), options: Optional[ExportOptions] = None,
                   label_map: Optional[Mapping[str, Optional[str]]] = None, rules: Sequence[str] = (),
                   evaluation_split: str = 'test', has_pixels: bool = False, **overrides: Any) -> ExportResult:
    """Export any stream of `Record`/`Skip` entries (e.g. a dataset this module has no reader for)."""
    opts = replace(options or ExportOptions(), classes=classes, **overrides)
    plan = ExportPlan(
        dataset=dataset, layout='records', classes=labels_for(classes), splits=tuple(splits),
        evaluation_split=evaluation_split, entries=entries, inputs=tuple(os.path.abspath(p) for p in inputs),
        label_map=dict(label_map or {}), split_map={}, rules=tuple(rules),
        has_pixels=has_pixels)  # True: records carry pixels, worth a process pool even in link mode
    return export_plan(plan, output, opts)


def _options(options: Optional[ExportOptions], overrides: Mapping[str, Any]) -> ExportOptions:
    return replace(options or ExportOptions(), **overrides)


def export_rafdb(source: str, output: str, *, images: str = 'aligned', options: Optional[ExportOptions] = None,
                 **overrides: Any) -> ExportResult:
    """RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned/ (or Image/original/)."""
    opts = _options(options, overrides)
    opts.validate('rafdb')
    return export_plan(plan_rafdb(source, images, opts.classes), output, opts)


def export_affectnet(source: str, output: str, *, images_dir: Optional[str] = None,
                     options: Optional[ExportOptions] = None, **overrides: Any) -> ExportResult:
    """AffectNet legacy CSV release or the train_set/val_set npy release (detected from SOURCE)."""
    opts = _options(options, overrides)
    opts.validate('affectnet')
    return export_plan(plan_affectnet(source, opts.classes, opts.crop_face, images_dir), output, opts)


def export_fer2013(source: str, output: str, *, options: Optional[ExportOptions] = None,
                   **overrides: Any) -> ExportResult:
    """FER2013: fer2013.csv (SOURCE or SOURCE/fer2013.csv) or the train/ + test/ folder redistribution."""
    opts = _options(options, overrides)
    opts.validate('fer2013')
    return export_plan(plan_fer2013(source, opts.classes), output, opts)


def export_ferplus(source: str, output: str, *, fer2013_csv: Optional[str] = None, images_dir: Optional[str] = None,
                   options: Optional[ExportOptions] = None, **overrides: Any) -> ExportResult:
    """FERPlus: fer2013new.csv votes + images from fer2013.csv or FER2013Train/-style folders."""
    opts = _options(options, overrides)
    opts.validate('ferplus')
    return export_plan(plan_ferplus(source, opts.classes, fer2013_csv, images_dir), output, opts)


# ---------------------------------------------------------------------------------------------------
# summary and CLI

def _reason_summary(by_reason: Mapping[str, int]) -> str:
    return ', '.join(f'{r} {n}' for r, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))


def format_summary(manifest: Mapping[str, Any], elapsed_s: Optional[float] = None) -> str:
    """Class x split table of exported images, then skips by reason."""
    splits = list(manifest['splits'])
    classes = list(manifest['classes'])
    width = max(len(c) for c in classes + ['total'])
    cols = [max(len(s), len(str(manifest['splits'][s]['total']))) for s in splits]
    lines = [f'{"class":<{width}}  ' + '  '.join(f'{s:>{w}}' for s, w in zip(splits, cols))]
    for c in classes:
        counts = (manifest['splits'][s]['classes'][c] for s in splits)
        lines.append(f'{c:<{width}}  ' + '  '.join(f'{n:>{w}}' for n, w in zip(counts, cols)))
    totals = (manifest['splits'][s]['total'] for s in splits)
    lines.append(f'{"total":<{width}}  ' + '  '.join(f'{n:>{w}}' for n, w in zip(totals, cols)))
    balance = manifest.get('balance')
    if balance:
        lines.append(f'balance: oversampled {balance["split"]} to {balance["target_per_class"]} per class '
                     f'(+{sum(balance["added"].values())} links)')
    leaks = manifest.get('leak_check')
    if leaks:
        lines.extend(summary_lines(leaks))
        if leaks.get('dedupe'):
            lines.append(f'dedupe: dropped {leaks["dedupe"]["dropped"]} training copies of validation/test images '
                         f'(listed in manifest.json)')
    skipped = manifest['skipped']
    reasons = f' ({_reason_summary(skipped["by_reason"])})' if skipped['total'] else ''
    lines.append(f'skipped: {skipped["total"]}{reasons}')
    for reason in sorted(skipped['by_reason'], key=lambda r: -skipped['by_reason'][r])[:6]:
        # one example per reason, with what was found and what was expected (all of them in manifest.json)
        example = next((i for i in manifest.get('skipped_items') or () if i['reason'] == reason), None)
        if example is not None:
            detail = f": {example['detail']}" if example.get('detail') else ''
            lines.append(printable(f'  {reason}: e.g. {example["item"]}{detail}'[:300]))
    rate = f' in {elapsed_s:.1f} s ({manifest["exported"] / max(elapsed_s, 1e-9):,.0f} images/s)' if elapsed_s else ''
    lines.append(f'exported {manifest["exported"]} images ({manifest["options"]["mode"]} mode, '
                 f'{len(classes)} classes){rate} -> {manifest["output"]}')
    lines.append(f'evaluate on {manifest["evaluation_split"]}/; pass --class-map '
                 f'{os.path.join(manifest["output"], "class_map.txt")} to timm to pin class indices')
    return '\n'.join(lines)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('source', metavar='SOURCE', help='the dataset as distributed (only ever read)')
    common.add_argument('output', metavar='OUTPUT', help='ImageFolder tree to create')
    common.add_argument('--classes', type=int, choices=(7, 8), default=7,
                        help='7 classes, or 8 with contempt (default 7)')
    common.add_argument('--mode', choices=MODES, default='link',
                        help='link: absolute symlinks (default); copy: byte copies; encode: decode, '
                             'crop/resize, re-encode')
    common.add_argument('--size', type=positive_int, help='encode mode: resize every image to SIZE x SIZE')
    common.add_argument('--format', dest='image_format', choices=IMAGE_FORMATS, default='auto',
                        help='encode mode: output format (auto keeps png/jpg, others become png)')
    common.add_argument('--quality', type=int, default=95, help='encode mode: JPEG quality (default 95)')
    common.add_argument('--verify', action='store_true', help='decode every image; skip corrupt or truncated ones')
    common.add_argument('--balance', choices=('oversample',),
                        help='oversample: add links in train/ until every class has as many entries as the largest')
    common.add_argument('--workers', type=positive_int,
                        help='processes for encode/copy/verify work (default: all cores); '
                             'threads for plain link mode (default 4)')
    common.add_argument('--overwrite', action='store_true',
                        help='replace an existing OUTPUT (an earlier export) once the new one is complete')
    common.add_argument('--no-leak-check', dest='leak_check', action='store_false',
                        help='skip hashing every image for train/test leakage (faster; the manifest then has no '
                             'leak_check block)')
    common.add_argument('--dedupe', choices=('drop-from-train',),
                        help='drop-from-train: remove training images that pair with a validation/test image '
                             '(default: only report the pairs)')
    common.add_argument('--leak-threshold', type=int, default=DEFAULT_THRESHOLD, metavar='BITS',
                        help=f'perceptual hash bits (of 64) within which two images count as copies '
                             f'(default {DEFAULT_THRESHOLD})')
    common.add_argument('--quiet', '-q', action='store_true', help='no progress bar and no summary table')
    return common


def configure_parser(parser: argparse.ArgumentParser) -> None:
    common = _common_options()
    sub = parser.add_subparsers(dest='dataset', metavar='DATASET')
    sub.required = True
    p = sub.add_parser('rafdb', parents=[common], help='RAF-DB basic (EmoLabel/list_patition_label.txt + Image/)',
                       description='RAF-DB basic: labels 1..7 from EmoLabel/list_patition_label.txt, split from '
                                   'the train_/test_ prefix.')
    p.add_argument('--images', choices=('aligned', 'original'), default='aligned',
                   help='Image/aligned/<name>_aligned.jpg (default) or Image/original/<name>')
    p = sub.add_parser('affectnet', parents=[common], help='AffectNet legacy CSV or train_set/val_set release',
                       description='AffectNet: Manually_Annotated_file_lists/{training,validation}.csv with '
                                   'Manually_Annotated_Images/, or train_set/ + val_set/ with images/ and '
                                   'annotations/{idx}_exp.npy.')
    p.add_argument('--crop-face', action='store_true',
                   help='legacy CSV: crop to face_x/face_y/face_width/face_height (needs --mode encode)')
    p.add_argument('--images-dir', help='legacy CSV: image root (default SOURCE/Manually_Annotated_Images)')
    sub.add_parser('fer2013', parents=[common], help='FER2013 fer2013.csv or train/ + test/ image folders',
                   description='FER2013: SOURCE is fer2013.csv, a folder holding it, or a folder with train/ and '
                               'test/ class folders.')
    p = sub.add_parser('ferplus', parents=[common], help='FERPlus fer2013new.csv (majority vote) + FER2013 images',
                       description='FERPlus: SOURCE is fer2013new.csv or its folder; images from fer2013.csv or '
                                   'FER2013Train/ FER2013Valid/ FER2013Test/.')
    p.add_argument('--fer2013-csv', help='take pixels from this fer2013.csv (default: next to fer2013new.csv)')
    p.add_argument('--images-dir', help='folder holding FER2013Train/ FER2013Valid/ FER2013Test/')


class _CommitState:
    """Set once the finished tree is being put in place. A signal then would leave a complete new OUTPUT
    behind an "interrupted" exit (or tear the swap of old and new), so the CLI handler records it and lets the
    last step finish; the run ends normally and says a signal came too late to stop it."""
    active = False
    deferred: Optional[int] = None


_COMMIT = _CommitState()


@contextlib.contextmanager
def _interrupts_unwind_once() -> Iterator[None]:
    """The first SIGINT or SIGTERM unwinds like Ctrl-C, so workers are stopped and the staging folder is
    removed; every later one is ignored, because interrupting that cleanup is what left partial folders,
    hung on workers or printed a traceback. After an interrupt the ignoring handler stays: the process is
    on its way out, and a signal arriving while it prints its one line must not raise again. Once the
    finished tree is being put in place (`_COMMIT`), signals are deferred and then ignored: the run is
    complete, and exiting "interrupted" with a new OUTPUT in place would tell the user the opposite."""
    fired = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal fired
        if _COMMIT.active:
            _COMMIT.deferred = signum
        elif not fired:
            fired = True
            if _WAIT.active:  # inside a pool wait: `_wait_for_one` raises it outside the Condition's lock
                _WAIT.interrupted = True
            else:
                raise KeyboardInterrupt

    _WAIT.interrupted = False
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        completed = _COMMIT.active
        _COMMIT.active, _COMMIT.deferred = False, None
        if completed:  # the export is in place and the process is about to exit 0: nothing left to stop
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
        elif not fired:
            for sig, old in previous.items():
                signal.signal(sig, old)


def run(args: argparse.Namespace) -> int:
    options = ExportOptions(
        mode=args.mode, classes=args.classes, size=args.size, crop_face=getattr(args, 'crop_face', False),
        verify=args.verify, image_format=args.image_format, quality=args.quality, balance=args.balance,
        workers=args.workers, overwrite=args.overwrite, progress=not args.quiet, leak_check=args.leak_check,
        dedupe=args.dedupe, leak_threshold=args.leak_threshold)
    dataset_kwargs: Dict[str, Any] = {
        'rafdb': lambda: {'images': args.images},
        'affectnet': lambda: {'images_dir': args.images_dir},
        'fer2013': lambda: {},
        'ferplus': lambda: {'fer2013_csv': args.fer2013_csv, 'images_dir': args.images_dir},
    }[args.dataset]()
    exporter = EXPORTERS[args.dataset]
    try:
        with _interrupts_unwind_once():
            result = exporter(args.source, args.output, options=options, **dataset_kwargs)
            if not args.quiet:
                print(format_summary(result.manifest, result.elapsed_s))
            if _COMMIT.deferred is not None:
                print(f'timm-msanet export: a signal ({signal.Signals(_COMMIT.deferred).name}) arrived after the '
                      f'export was complete; {args.output} holds the new export', file=sys.stderr)
    except ValueError as e:  # an option value the exporter refuses
        raise OptionsError(str(e)) from None
    except OSError as e:  # a disk full or unreadable source midway: the partial output is already gone
        raise SystemExportError(str(e)) from None
    return 0


EXPORTERS: Dict[str, Callable[..., ExportResult]] = {
    'rafdb': export_rafdb, 'affectnet': export_affectnet, 'fer2013': export_fer2013, 'ferplus': export_ferplus,
}
