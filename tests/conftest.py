"""Shared test helpers, as pytest fixtures: an offline Hugging Face cache, a fresh interpreter, a real photo, and
`run_cli`, which runs a `timm-msanet` command in a process of its own."""
import atexit
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import pytest

# pytest-xdist workers share the cores, and torch's OpenMP pool starts one thread per core in each: two workers on
# two cores ran four threads that spin waiting on each other. Split the cores between the
# workers instead; set before anything imports torch, so every CLI command a test runs inherits it. Measured on
# the 2-core x86 VM, whole suite with -n 2: 560 s -> 311 s (docs/testing.md).
if os.environ.get('PYTEST_XDIST_WORKER') and 'OMP_NUM_THREADS' not in os.environ:
    os.environ['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1)
                                            // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT') or 1)))


def write_offline_hub_cache(hf_home: Path, repo_id: str, files: Dict[str, Union[Path, bytes]]) -> Path:
    """Lay out files as huggingface_hub's cache does (refs/main -> snapshots/<commit>), as if downloaded."""
    repo_dir = Path(hf_home) / 'hub' / ('models--' + repo_id.replace('/', '--'))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / 'snapshots' / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / 'refs').mkdir(exist_ok=True)
    (repo_dir / 'refs' / 'main').write_text(commit)
    for name, src in files.items():
        dst = snapshot / name
        if isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            shutil.copyfile(src, dst)
    return snapshot


def write_folded_resnet18(folder: Path):
    """A BN-folded ResNet-18 export made the way torchvision's was folded (examples/convert_tv_in1k.py reads it):
    a ResNet-18 with non-trivial BNs, each folded into its conv (weight scaled per output channel, the shift
    as a bias), one float32 .npy per conv1..layer2 tensor in `folder`. Returns the unfolded network (eval)."""
    import numpy as np
    import timm
    import torch
    torch.manual_seed(0)
    net = timm.create_model('resnet18', num_classes=0).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        convs = ['conv1'] + [f'{s}.{b}.conv{i}' for s in ('layer1', 'layer2') for b in (0, 1) for i in (1, 2)]
        for conv_name in convs + ['layer2.0.downsample.0']:
            bn_name = conv_name.replace('downsample.0', 'downsample.1').replace('conv', 'bn')
            conv, bn = net.get_submodule(conv_name), net.get_submodule(bn_name)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            np.save(folder / f'{conv_name}.weight.npy', (conv.weight * scale[:, None, None, None]).numpy())
            np.save(folder / f'{conv_name}.bias.npy', (bn.bias - bn.running_mean * scale).numpy())
    return net


def _run_python(code: str, env_overrides: Dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_overrides)
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)


# Variables the interpreter or its native libraries read when they start (a forked child would ignore them).
_STARTUP_VARS = ('PYTHON', 'OMP_', 'MKL_', 'KMP_', 'LD_', 'MALLOC_', 'TORCH_CPP_', 'ATEN_')
_ZYGOTES = {'lock': threading.Lock()}
# what the zygotes start with: the test process's own, before any test changes them
_ZYGOTE_ENV, _ZYGOTE_CWD = dict(os.environ), os.getcwd()


def _zygote(kind: str) -> dict:
    """The running zygote of `kind` ('cold' or 'warm', see tests/cli_zygote.py), started on first use. A warm one
    that cannot start clean (its imports printed something) leaves its place to the cold one for the session."""
    if kind == 'warm' and _ZYGOTES.get('no_warm'):
        kind = 'cold'
    z = _ZYGOTES.get(kind)
    if z is None or z['proc'].poll() is not None:
        argv = [sys.executable, str(Path(__file__).with_name('cli_zygote.py'))] + (['--warm'] if kind == 'warm' else [])
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                env=_ZYGOTE_ENV, cwd=_ZYGOTE_CWD)
        z = _ZYGOTES[kind] = dict(proc=proc, buf=bytearray())
        if kind == 'warm':
            try:
                _reply(z, 300)  # {"ready": true} once the imports are done
            except RuntimeError:
                _ZYGOTES['no_warm'] = True
                return _zygote('cold')
    return z


@atexit.register
def _stop_zygotes():
    for kind in ('cold', 'warm'):
        z = _ZYGOTES.get(kind)
        if z is not None and z['proc'].poll() is None:
            z['proc'].stdin.close()
            z['proc'].wait(timeout=30)


def _startup_env(env: Dict[str, str]) -> Dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_VARS)}


# Set in the test process while it runs, and read by no import: the running test's name (pytest), the default
# cache folder torch's compiler writes into os.environ when a test compiles (a child computes the same), and
# FFmpeg's log level, which reading a video sets as a default (timm_msanet/inference/video.py) and OpenCV reads
# when it opens one.
_SET_BY_THE_RUN = ('PYTEST_CURRENT_TEST', 'TORCHINDUCTOR_CACHE_DIR', 'OPENCV_FFMPEG_LOGLEVEL')


def _as_started(env: Dict[str, str]) -> Dict[str, str]:
    """`env` less what the test process's own imports changed in it. Importing OpenCV prepends its wheel's
    library folder to LD_LIBRARY_PATH in os.environ (for the processes it starts); without this, every command
    after the first test that imports cv2 would be taken for one with another start-up environment."""
    env = {k: v for k, v in env.items() if k not in _SET_BY_THE_RUN}
    kept = [p for p in env.pop('LD_LIBRARY_PATH', '').split(os.pathsep) if p and '/cv2/' not in p]
    if kept:
        env['LD_LIBRARY_PATH'] = os.pathsep.join(kept)
    return env


_ZYGOTE_STARTED = _as_started(_ZYGOTE_ENV)


def run_cli(argv: Sequence, env: Optional[Dict[str, str]] = None, cwd: Optional[Union[str, Path]] = None,
            timeout: float = 300, errors: Optional[str] = None, preexec_fn=None) -> subprocess.CompletedProcess:
    """`timm-msanet ARGV` in a process of its own, as `subprocess.run([python, '-m', 'timm_msanet.cli', ...],
    capture_output=True, text=True)` would run it: its exit status, stdout and stderr, killed (with its
    children) and `subprocess.TimeoutExpired` raised after `timeout` s. The process is forked from one that has
    imported torch and torchvision (tests/cli_zygote.py), which saves the interpreter start; one that has also
    imported timm and the package when `env` and `cwd` are the test process's own. A fresh interpreter
    runs it instead when `env` differs in what an interpreter reads at start-up, or with a `preexec_fn` (a
    limit set before the new process starts)."""
    cmd = [sys.executable, '-m', 'timm_msanet.cli', *map(str, argv)]
    env = dict(os.environ if env is None else env)
    cwd = str(cwd or os.getcwd())
    with _ZYGOTES['lock']:
        started = _as_started(env)
        if preexec_fn is not None or _startup_env(started) != _startup_env(_ZYGOTE_STARTED):
            return subprocess.run(cmd, capture_output=True, text=True, errors=errors, env=env, cwd=cwd,
                                  timeout=timeout, preexec_fn=preexec_fn)
        z = _zygote('warm' if started == _ZYGOTE_STARTED and cwd == _ZYGOTE_CWD else 'cold')
        proc = z['proc']
        with tempfile.TemporaryDirectory(prefix='run_cli_') as streams:
            out, err = os.path.join(streams, 'stdout'), os.path.join(streams, 'stderr')
            proc.stdin.write(json.dumps({'argv': cmd[3:], 'env': env, 'cwd': cwd, 'stdout': out, 'stderr': err}) + '\n')
            proc.stdin.flush()
            pid = _reply(z, None)['pid']
            try:
                status = _reply(z, timeout)['status']
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended (or had not yet made its group) as the time ran out
                    os.kill(pid, signal.SIGKILL)
                _reply(z, None)
                raise subprocess.TimeoutExpired(cmd, timeout) from None
            return subprocess.CompletedProcess(cmd, status, _read_text(out, errors), _read_text(err, errors))


def _reply(zygote: dict, timeout: Optional[float]) -> dict:
    """The zygote's next reply line. Read from the pipe's file descriptor with our own buffer: a buffered
    readline could take both replies at once and leave select() waiting on an empty pipe."""
    buf = zygote['buf']
    fd = zygote['proc'].stdout.fileno()
    deadline = None if timeout is None else time.monotonic() + timeout
    while b'\n' not in buf:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], left)[0]:
            raise subprocess.TimeoutExpired('cli_zygote', timeout)
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError('tests/cli_zygote.py ended without replying; its stderr is in the test output')
        buf += chunk
    line, _, rest = bytes(buf).partition(b'\n')
    buf[:] = rest
    return json.loads(line)


def _read_text(path: str, errors: Optional[str]) -> str:
    # as text=True decodes a pipe: the locale's encoding, universal newlines
    with open(path, errors=errors, newline=None) as f:
        return f.read()


@pytest.fixture
def make_offline_hub_cache():
    """`make_offline_hub_cache(hf_home, repo_id, files)`: a repo laid out as huggingface_hub's cache lays it out,
    so `HF_HUB_OFFLINE=1` loads find it as if it had been downloaded (no network in any test)."""
    return write_offline_hub_cache


@pytest.fixture
def run_python():
    """`run_python(code, env_overrides)`: run code in a fresh interpreter (import hooks, env vars, offline mode)."""
    return _run_python


@pytest.fixture(scope='session')
def astronaut():
    """scikit-image's astronaut portrait (HWC uint8), a real photo installed with its wheel (no download)."""
    skdata = pytest.importorskip('skimage.data')
    return skdata.astronaut()


@pytest.fixture
def framed_faces(astronaut):
    """`framed_faces(folder, framing, n)`: n real face images framed as `framing` (the astronaut's face turned
    -10..10 degrees, aligned by dlib, saved at 96-... px), sorted paths. Skips without the landmarks extra."""
    pytest.importorskip('dlib')
    from PIL import Image
    from timm_msanet.inference.faces import aligned_face, locate_faces, require_detector
    require_detector('dlib')
    photo = Image.fromarray(astronaut)

    def make(folder, framing, n):
        folder.mkdir(parents=True, exist_ok=True)
        # at most 9 turns, each located once (0.2 s a detection on the full photo); with the 8 saved sizes
        # below, every file still differs from every other up to 72 faces
        turns = min(n, 9)
        crops = {}
        for i in range(n):
            k = i % turns
            if k not in crops:
                turned = photo.rotate(-10 + 20 * k / max(1, turns - 1), resample=Image.Resampling.BICUBIC)
                crops[k] = aligned_face(turned, locate_faces(turned, 'dlib')[0].landmarks, framing)[0]
            side = 96 + 8 * (i % 8)
            crops[k].resize((side, side), Image.Resampling.BICUBIC).save(folder / f'{i:03d}.png')
        return sorted(folder.iterdir())
    return make
