"""Putting an export in place safely: OUTPUT checks, a lock, a partial folder beside OUTPUT, oversampling,
the leak check, the manifest, the final swap, and the clean-up of what a killed export left."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple


from .parsers import SKIP_REASONS, ExportPlan
from ..utils import safe_json
from ..utils.outputs import usual_permissions
from .leakage import cross_split_pairs, leak_report, train_copies
from ..version import __version__
from .export_options import (ExportOptions, ExportResult, MANIFEST_FORMAT, MAX_LISTED_PER_REASON, NothingExportedError,
                             OutputError)
from .workers import WorkerConfig, NoProgress, Tally, record_chunks, make_executor, is_within, progress_bar, run_pipeline



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
        if os.path.isdir(real_src) and is_within(real_out, real_src):
            raise OutputError(f'OUTPUT {output} is inside SOURCE {src}: an export never writes inside its source')
        if is_within(real_src, real_out):
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


def check_leaks(staging: str, plan: ExportPlan, options: ExportOptions, tally: Tally) -> Dict[str, Any]:
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


def _build_manifest(plan: ExportPlan, output: str, options: ExportOptions, tally: Tally,
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
        # link/copy mode: images in formats timm's reader passes over, written as PNG (source extension -> count)
        'converted_to_png': dict(sorted(tally.converted.items())),
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


def _output_state(output: str) -> Optional[Tuple[Tuple[Tuple[str, int, int], ...], bytes]]:
    """What OUTPUT looks like: absent (None), or every entry of its tree (relative path, size, mtime; without
    following links) and its manifest bytes. Compared at the start and just before an --overwrite replaces it: a
    file the user put anywhere inside (`OUTPUT/train/anger/notes.txt`), or changed, stops the replace. A walk of
    a 35,000-file export takes a fraction of a second."""
    if not os.path.lexists(output):
        return None
    try:
        with open(os.path.join(output, 'manifest.json'), 'rb') as f:
            manifest = f.read(1 << 26)
    except OSError:
        manifest = b''
    entries = []
    if os.path.isdir(output) and not os.path.islink(output):
        for folder, dirs, files in os.walk(output):
            for name in dirs + files:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue  # gone meanwhile: the names of the next walk differ
                entries.append((os.path.relpath(path, output), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries)), manifest


def _export_locked(plan: ExportPlan, output: str, options: ExportOptions,
                   state: Optional[Tuple[Tuple[str, ...], bytes]]) -> ExportResult:
    started = time.perf_counter()
    staging = _make_staging(output)
    bar = NoProgress()
    try:
        for split in plan.splits:
            for label in plan.classes:
                os.makedirs(os.path.join(staging, split, label))
        tally = Tally(plan.splits, plan.classes)
        cfg = WorkerConfig(staging, options.mode, options.size, options.crop_face, options.verify,
                           options.image_format, options.quality, options.leak_check, _source_roots(plan))
        kind, workers = make_executor(options, plan)
        bar = progress_bar(options.progress, plan.count_hint, f'export {plan.dataset}')
        chunks = record_chunks(plan.entries, set(plan.classes), tally, bar, options.chunk_size)
        run_pipeline(chunks, cfg, kind, workers, tally, bar)
        bar.close()
        leaks = check_leaks(staging, plan, options, tally) if options.leak_check else None
        balance = None
        if options.balance == 'oversample' and 'train' in plan.splits and tally.exported:
            balance = oversample(os.path.join(staging, 'train'), plan.classes)
        manifest = _build_manifest(plan, output, options, tally, balance, {'kind': kind, 'count': workers}, leaks)
        if tally.exported == 0:
            raise NothingExportedError(
                f'nothing usable was exported from {plan.inputs[0]}: {tally.skipped} entries skipped '
                f'({reason_summary(tally.by_reason) or "no entries found"}); {output} was not written', manifest)
        _write_metadata(staging, plan.classes, manifest)
        os.remove(os.path.join(staging, PARTIAL_MARKER))
        if _output_state(output) != state:
            raise OutputError(f'{output} changed while the export ran (something was put there or removed); the new '
                              f'export was not put in place and {output} was left as it is')
        usual_permissions(staging)  # mkdtemp made it 0700
        COMMIT_STATE.active = True  # from here the export is finished: the CLI defers signals instead of unwinding
        _publish(staging, output)
    except BaseException:
        COMMIT_STATE.active = False
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(output, manifest, time.perf_counter() - started)



# ---------------------------------------------------------------------------------------------------
# summary and CLI

def reason_summary(by_reason: Mapping[str, int]) -> str:
    return ', '.join(f'{r} {n}' for r, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))


class _CommitState:
    """Set once the finished tree is being put in place. A signal then would leave a complete new OUTPUT
    behind an "interrupted" exit (or tear the swap of old and new), so the CLI handler records it and lets the
    last step finish; the run ends normally and says a signal came too late to stop it."""
    active = False
    deferred: Optional[int] = None


COMMIT_STATE = _CommitState()
