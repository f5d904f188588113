"""The export of one image (read inside the source, decode, crop, encode, write a new file, hash) and the
pool of threads or processes that runs it over chunks of records with bounded memory and clean stops."""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np
from PIL import Image

from .parsers import Entry, ExportPlan, Record, Skip
from .records import TIMM_IMAGE_EXTENSIONS
from ..utils.images import MAX_IMAGE_BYTES, ImageFileError, open_image_bytes, open_image_file, read_image_file
from .leakage import HashedImage, content_hash, perceptual_hash
from .export_options import ExportOptions, MAX_LISTED_PER_REASON



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
        if not any(is_within(real, root) for root in roots):
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
        img = open_image_bytes(data)
        img.load()
        if img.mode not in ('L', 'RGB'):
            img = img.convert('RGB')
        return img
    except ImageFileError as e:  # a HEIF photo without pillow-heif says what to install; the rest cannot decode
        raise _ItemError('needs_heif' if e.reason == 'needs_heif' else 'undecodable_image', str(e)) from None
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
    if os.path.splitext(rec.name)[1].lower() not in TIMM_IMAGE_EXTENSIONS:
        # a linked .webp or .bmp would be passed over by timm's reader (and so by train.py) without a word
        data = _read(rec.path, cfg.source_roots)
        img = _decode_bytes(data)
        name, fmt = _encoded_name(rec.name, 'png')
        _save(img, os.path.join(class_dir, name), fmt, cfg.quality)
        return name, (content_hash(data), perceptual_hash(img)) if cfg.hash_images else (None, None)
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


# split, label, file name, item, sha256, phash, and the source's extension when link or copy mode wrote it as PNG
Done = Tuple[str, str, str, str, Optional[str], Optional[int], Optional[str]]
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
            converted = (os.path.splitext(rec.name)[1].lower() if cfg.mode != 'encode' and rec.path is not None
                         and name != rec.name else None)
            done.append((rec.split, rec.label, name, rec.item, sha, phash, converted))
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

class Tally:
    """Counts per split and class, and skips per reason with a bounded list of examples."""

    def __init__(self, splits: Sequence[str], classes: Sequence[str]):
        self.counts: Dict[str, Dict[str, int]] = {s: {c: 0 for c in classes} for s in splits}
        self.by_reason: Counter = Counter()
        self.by_split: Dict[str, Counter] = {}
        self.listed: List[Dict[str, Any]] = []
        self._listed_per_reason: Counter = Counter()
        self.not_listed = 0
        self.hashed: List[HashedImage] = []
        self.converted: Counter = Counter()  # source extension -> images link or copy mode wrote as PNG

    @property
    def exported(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def skipped(self) -> int:
        return sum(self.by_reason.values())

    def add_done(self, done: Iterable[Done]) -> None:
        for split, label, name, item, sha, phash, converted in done:
            self.counts[split][label] += 1
            if converted:
                self.converted[converted] += 1
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


class NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, total: Optional[Callable[[], int]], desc: str) -> Any:
    if not enabled or not sys.stderr.isatty():
        return NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return NoProgress()

    class _Bar(tqdm):  # type: ignore[misc,valid-type]
        monitor_interval = 0  # no monitor thread: worker processes are forked

    return _Bar(total=total() if total else None, desc=desc, unit='img', file=sys.stderr, dynamic_ncols=True)


def record_chunks(entries: Iterable[Entry], classes: Set[str], tally: Tally, bar: Any, size: int) -> Iterator[List[Record]]:
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


def _collect(result: ChunkResult, tally: Tally, bar: Any) -> None:
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


def make_executor(options: ExportOptions, plan: ExportPlan) -> Tuple[str, int]:
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


WAIT_STATE = _WaitState()


def _wait_for_one(futures: Set[Future]) -> Tuple[Set[Future], Set[Future]]:
    """`wait(futures, return_when=FIRST_COMPLETED)`, polled, so that an interrupt is raised here (`_WaitState`)."""
    WAIT_STATE.active = True
    try:
        while True:
            done, rest = wait(futures, timeout=0.1, return_when=FIRST_COMPLETED)
            if done or WAIT_STATE.interrupted:
                break
    finally:
        WAIT_STATE.active = False
    if WAIT_STATE.interrupted:  # checked after `active` is cleared: a signal from then on raises in the handler
        raise KeyboardInterrupt
    return done, rest


def run_pipeline(chunks: Iterator[List[Record]], cfg: WorkerConfig, kind: str, workers: int, tally: Tally,
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

def is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
