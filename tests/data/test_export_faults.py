"""Fault injection for `timm-msanet export`: signals at random points of real link, copy and encode runs
(2 worker processes or threads), SIGKILL, and the leftovers a killed run leaves.

Each interrupted run must end promptly with one line, remove its partial folder, leave the earlier OUTPUT
byte-identical and leave no process behind. A signal that lands once the finished tree is being put in
place does not stop the run: it ends with status 0 and a complete new OUTPUT. Timings are drawn from a seeded generator; the signal is sent
once the run's partial folder exists, so it lands inside the export rather than in interpreter start-up.
"""
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from timm_msanet.data.export import PARTIAL_MARKER, clean_leftovers

CLASSES = ('angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise')
END_WITHIN_S = 30  # after the last signal; a run that hangs on its workers never ends


@pytest.fixture(scope='module')
def source(tmp_path_factory) -> Path:
    """FER2013 as an image-folder redistribution: 3,000 real 48x48 grey JPEGs in train/ validation/ test/."""
    root = tmp_path_factory.mktemp('fer2013_src')
    rng = np.random.default_rng(0)
    for split, n in (('train', 2000), ('validation', 500), ('test', 500)):
        for i in range(n):
            d = root / split / CLASSES[i % 7]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(d / f'{i}.jpg', quality=90)
    return root


def _export_cmd(src: Path, out: Path, mode: str, *extra: str) -> List[str]:
    return [sys.executable, '-m', 'timm_msanet.cli', 'export', 'fer2013', str(src), str(out), '--mode', mode,
            '--workers', '2', '--quiet', *extra]


def _digest(root: Path) -> Dict[str, str]:
    """Every file's bytes (and every link's target) under root, by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = 'link:' + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _leftover_processes(pgid: int) -> List[str]:
    """Live (non-zombie) processes still in the run's process group."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f'/proc/{entry}/stat').read_text()
        except OSError:
            continue
        fields = stat.rsplit(')', 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != 'Z':
            found.append(stat[:80])
    return found


def _partials(parent: Path, base: str) -> List[Path]:
    return sorted(parent.glob(f'.{base}.partial-*'))


def _wait_for_new_partial(proc: subprocess.Popen, parent: Path, base: str, before: List[Path]) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if set(_partials(parent, base)) - set(before):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


# (who gets the signals, the signals in order)
PATTERNS = {
    'two SIGTERMs 0.2 s apart to the main process': ('main', [signal.SIGTERM, signal.SIGTERM]),
    'two SIGINTs to the process group (Ctrl-C twice)': ('group', [signal.SIGINT, signal.SIGINT]),
    'SIGINT, SIGTERM, SIGINT to the main process': ('main', [signal.SIGINT, signal.SIGTERM, signal.SIGINT]),
}


@pytest.mark.parametrize('mode', ['link', 'copy', 'encode'])
def test_signals_at_random_points_end_the_run_cleanly(source, tmp_path, mode):
    out = tmp_path / 'out'
    subprocess.run(_export_cmd(source, out, 'link'), check=True, capture_output=True, timeout=300)
    earlier = _digest(out)
    rng = random.Random(f'faults-{mode}')
    interrupted = 0
    for name, (target, signals) in PATTERNS.items():
        before = _partials(tmp_path, 'out')
        proc = subprocess.Popen(_export_cmd(source, out, mode, '--overwrite'), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert _wait_for_new_partial(proc, tmp_path, 'out', before), f'{name}: the export never started'
            time.sleep(rng.uniform(0.0, 0.6))
            for i, sig in enumerate(signals):
                if i:
                    time.sleep(0.2)
                if target == 'group':
                    os.killpg(proc.pid, sig)
                else:
                    os.kill(proc.pid, sig)
            _, err = proc.communicate(timeout=END_WITHIN_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f'{mode}, {name}: the run did not end within {END_WITHIN_S} s of the last signal')
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert _partials(tmp_path, 'out') == [], f'{mode}, {name}: partial folder left'
        assert _leftover_processes(proc.pid) == [], f'{mode}, {name}: processes left'
        if proc.returncode == 0:  # the signal came once the new tree was being put in place: a complete run
            assert err.strip() == '' or 'arrived after the export was complete' in err, err[-1500:]
            now = _digest(out)
            assert set(now) == set(earlier) and (out / 'manifest.json').is_file(), f'{mode}, {name}: incomplete'
            earlier = now
            continue
        interrupted += 1
        assert proc.returncode == 130, f'{mode}, {name}: exit {proc.returncode}: {err[-1500:]}'
        assert err.strip().splitlines() == ['interrupted'], f'{mode}, {name}: {err[-1500:]}'
        assert _digest(out) == earlier, f'{mode}, {name}: the earlier OUTPUT changed'
    assert interrupted >= 1, f'{mode}: every run finished before its signal; the source is too small to test this'


def test_a_killed_run_leaves_a_partial_that_the_next_run_removes(source, tmp_path):
    out = tmp_path / 'out'
    proc = subprocess.Popen(_export_cmd(source, out, 'encode'), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert _wait_for_new_partial(proc, tmp_path, 'out', [])
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # no cleanup can run: as after a power loss
    proc.communicate()
    stale = _partials(tmp_path, 'out')
    assert len(stale) == 1 and (stale[0] / PARTIAL_MARKER).is_file()

    # things that look alike but are not a stale partial of ours: all must survive
    decoys = {
        'user folder with the same prefix': tmp_path / f'.out.partial-{proc.pid}-mine',
        'no pid in the name': tmp_path / '.out.partial-abc',
        'partial of another OUTPUT': tmp_path / f'.other.partial-{proc.pid}-x',
        'old folder that is not an export': tmp_path / f'.out.old-{proc.pid}-1',
    }
    for folder in decoys.values():
        folder.mkdir()
        (folder / 'keep.txt').write_text('user data')
    (tmp_path / f'.out.partial-{proc.pid}-link').symlink_to(decoys['no pid in the name'])

    run = subprocess.run(_export_cmd(source, out, 'link'), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f'removed {stale[0]}: the partial folder of an earlier export (pid {proc.pid})' in run.stderr
    assert not stale[0].exists() and (out / 'manifest.json').is_file()
    for what, folder in decoys.items():
        assert (folder / 'keep.txt').read_text() == 'user data', what
    assert (tmp_path / f'.out.partial-{proc.pid}-link').is_symlink()


def test_an_export_moved_aside_by_a_killed_run_is_restored_or_removed(source, tmp_path):
    out = tmp_path / 'out'
    subprocess.run(_export_cmd(source, out, 'link'), check=True, capture_output=True, timeout=300)
    earlier = _digest(out)
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    # killed between moving OUTPUT aside and moving the new tree in: OUTPUT is missing
    aside = tmp_path / f'.out.old-{dead.pid}-123'
    out.rename(aside)
    notes = clean_leftovers(str(out))
    assert notes == [f'restored {out} from {aside}: an earlier export was stopped while replacing it']
    assert _digest(out) == earlier and not aside.exists()
    # killed while removing the replaced export: OUTPUT is complete, the old copy goes
    (tmp_path / 'copy').mkdir()
    subprocess.run(['cp', '-a', str(out) + '/.', str(tmp_path / 'copy')], check=True)
    (tmp_path / 'copy').rename(aside)
    assert clean_leftovers(str(out)) == [f'removed {aside}: an earlier export that a later, completed export '
                                         f'replaced']
    assert _digest(out) == earlier and not aside.exists()
    # a live process's folders are never touched
    live = tmp_path / f'.out.partial-{os.getppid()}-x'
    live.mkdir()
    assert clean_leftovers(str(out)) == [] and live.exists()
