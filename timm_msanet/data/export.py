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
  'RGB', and resizes with bicubic filtering; link/copy keep the source file name and format, except
  for images in a format timm's ImageFolder reader does not read (it reads .jpg/.jpeg/.png and passes over
  the rest without a word, so train.py would never see them): those (.webp, .bmp, .gif, .tif, ...) are
  decoded and written as PNG (lossless), counted in the manifest's `converted_to_png` and the summary.
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
import os
import signal
import sys
from dataclasses import replace
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence


from .parsers import SPLITS, Entry, ExportPlan, plan_affectnet, plan_fer2013, plan_ferplus, plan_rafdb
from ..labels import labels_for
from ..utils.options import positive_int
from ..utils.outputs import printable
from .leakage import DEFAULT_THRESHOLD, summary_lines
from .export_options import ExportOptions, ExportResult, IMAGE_FORMATS, MODES, OptionsError, SystemExportError
from .workers import WAIT_STATE
from .staging import COMMIT_STATE, reason_summary, export_plan

# The export's public API lives here whatever module holds it: the options and results, the errors a caller
# catches, and the pieces tests and tools reach for (the manifest format, the clean-up of a killed export).
from .export_options import MANIFEST_FORMAT, NothingExportedError, OutputError  # noqa: E402
from .parsers import DatasetLayoutError, ExportError, Record, Skip  # noqa: E402
from .staging import PARTIAL_MARKER, clean_leftovers  # noqa: E402

__all__ = [
    'ExportOptions', 'ExportResult', 'ExportError', 'DatasetLayoutError', 'OutputError', 'OptionsError',
    'NothingExportedError', 'SystemExportError', 'MANIFEST_FORMAT', 'PARTIAL_MARKER', 'Record', 'Skip',
    'clean_leftovers', 'export_records', 'export_plan', 'export_rafdb', 'export_affectnet', 'export_fer2013',
    'export_ferplus', 'format_summary', 'configure_parser', 'run',
]



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
    empty = [c for c in classes if not any(manifest['splits'][s]['classes'][c] for s in splits)]
    if empty:  # e.g. contempt with --classes 8 on FER2013 or RAF-DB, which have no contempt label
        lines.append(f'note: {", ".join(empty)} has no image in any split (no {manifest.get("dataset", "source")} '
                     f'entry carries that label); the empty folder keeps the {len(classes)}-class order, and timm '
                     f'needs --class-map {os.path.join(manifest["output"], "class_map.txt")} to keep it too')
    converted = manifest.get('converted_to_png')
    if converted:
        kinds = ', '.join(f'{n} {ext}' for ext, n in converted.items())
        lines.append(f'note: {sum(converted.values())} images ({kinds}) were written as PNG, not '
                     f'{"linked" if manifest["options"]["mode"] == "link" else "copied"}: timm\'s ImageFolder '
                     f'reader (train.py, validate.py) reads .png, .jpg and .jpeg only and would pass over them')
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
    reasons = f' ({reason_summary(skipped["by_reason"])})' if skipped['total'] else ''
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


@contextlib.contextmanager
def _interrupts_unwind_once() -> Iterator[None]:
    """The first SIGINT or SIGTERM unwinds like Ctrl-C, so workers are stopped and the staging folder is
    removed; every later one is ignored, because interrupting that cleanup is what left partial folders,
    hung on workers or printed a traceback. After an interrupt the ignoring handler stays: the process is
    on its way out, and a signal arriving while it prints its one line must not raise again. Once the
    finished tree is being put in place (`COMMIT_STATE`), signals are deferred and then ignored: the run is
    complete, and exiting "interrupted" with a new OUTPUT in place would tell the user the opposite."""
    fired = False
    # an earlier export in this process (the Python API) leaves the commit state of its finished run
    COMMIT_STATE.active, COMMIT_STATE.deferred = False, None

    def handler(signum: int, frame: Any) -> None:
        nonlocal fired
        if COMMIT_STATE.active:
            COMMIT_STATE.deferred = signum
        elif not fired:
            fired = True
            if WAIT_STATE.active:  # inside a pool wait: `_wait_for_one` raises it outside the Condition's lock
                WAIT_STATE.interrupted = True
            else:
                raise KeyboardInterrupt

    WAIT_STATE.interrupted = False
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        completed = COMMIT_STATE.active
        COMMIT_STATE.active, COMMIT_STATE.deferred = False, None
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
            if COMMIT_STATE.deferred is not None:
                print(f'timm-msanet export: a signal ({signal.Signals(COMMIT_STATE.deferred).name}) arrived after the '
                      f'export was complete; {args.output} holds the new export', file=sys.stderr)
    except ValueError as e:  # an option value the exporter refuses
        raise OptionsError(str(e)) from None
    except OSError as e:  # a disk full or unreadable source midway: the partial output is already gone
        raise SystemExportError(str(e)) from None
    return 0


EXPORTERS: Dict[str, Callable[..., ExportResult]] = {
    'rafdb': export_rafdb, 'affectnet': export_affectnet, 'fer2013': export_fer2013, 'ferplus': export_ferplus,
}
