"""Shared test helpers, as pytest fixtures: an offline Hugging Face cache, a fresh interpreter, a real photo."""
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Union

import pytest


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


def _run_python(code: str, env_overrides: Dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_overrides)
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)


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
    from timm_msanet.faces import aligned_face, locate_faces, require_detector
    require_detector('dlib')
    photo = Image.fromarray(astronaut)

    def make(folder, framing, n):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            turned = photo.rotate(-10 + 20 * i / max(1, n - 1), resample=Image.Resampling.BICUBIC)
            crop, _ = aligned_face(turned, locate_faces(turned, 'dlib')[0].landmarks, framing)
            side = 96 + 8 * (i % 8)
            crop.resize((side, side), Image.Resampling.BICUBIC).save(folder / f'{i:03d}.png')
        return sorted(folder.iterdir())
    return make
