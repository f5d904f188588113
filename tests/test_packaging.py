"""The wheel a release ships (pyproject.toml, hatchling): built for real, its file list checked."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    pytest.importorskip('hatchling')  # the build backend, in the test extras
    out = tmp_path_factory.mktemp('dist')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                           '--disable-pip-version-check', '-w', str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (whl,) = out.glob('timm_msanet-*.whl')
    return whl


def test_wheel_holds_the_hook_the_package_and_the_packaged_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # the autoload hook sits at the top of site-packages, where a .pth line can reach it
    assert {'_timm_msanet_autoload.py', 'timm_msanet_autoload.pth'} <= names
    pth = zipfile.ZipFile(wheel).read('timm_msanet_autoload.pth').decode()
    assert pth.strip() == 'import _timm_msanet_autoload; _timm_msanet_autoload.install()'
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / 'timm_msanet').glob('*.py')}
    modules -= {'timm_msanet/_autoload.py'}  # installed once, at the top of site-packages
    assert modules <= names, sorted(modules - names)
    weights = 'timm_msanet/weights/msanet_r18_fer2013.safetensors'
    assert weights in names
    assert zipfile.ZipFile(wheel).getinfo(weights).file_size == (ROOT / weights).stat().st_size
    assert not any(n.startswith(('tests/', 'examples/', 'docs/')) for n in names)
    entry_points = next(n for n in names if n.endswith('entry_points.txt'))
    assert 'timm-msanet = timm_msanet.cli:main' in zipfile.ZipFile(wheel).read(entry_points).decode()
