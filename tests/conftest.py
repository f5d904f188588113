import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Union


def make_offline_hub_cache(hf_home: Path, repo_id: str, files: Dict[str, Union[Path, bytes]]) -> Path:
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


def run_python(code: str, env_overrides: Dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_overrides)
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)
