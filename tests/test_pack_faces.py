"""examples/pack_faces.py: a grey 48 x 48 export packed into one file and unpacked into the same tree, pixel for
pixel, by real subprocesses on real PNG and JPEG files."""
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / 'examples' / 'pack_faces.py'


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_pack_and_unpack_give_back_the_export(tmp_path):
    export = tmp_path / 'export'
    rng = np.random.default_rng(0)
    faces = {}
    for split in ('train', 'validation', 'test'):
        for label in ('anger', 'happiness'):
            (export / split / label).mkdir(parents=True)
            for i in range(3):
                face = rng.integers(0, 256, (48, 48), dtype=np.uint8)
                Image.fromarray(face, 'L').save(export / split / label / f'fer{i:07d}.png')
                faces[f'{split}/{label}/fer{i:07d}.png'] = face
    (export / 'manifest.json').write_text('{"format": "timm-msanet-export/1", "dataset": "ferplus"}')
    (export / 'class_map.txt').write_text('anger\nhappiness\n')
    proc = _run('pack', export, tmp_path / 'f.faces')
    assert proc.returncode == 0 and 'packed 18 faces' in proc.stdout, proc.stderr
    proc = _run('unpack', tmp_path / 'f.faces', tmp_path / 'back')
    assert proc.returncode == 0 and 'unpacked 18 faces' in proc.stdout, proc.stderr
    back = {str(p.relative_to(tmp_path / 'back')): np.asarray(Image.open(p))
            for p in (tmp_path / 'back').glob('*/*/*.png')}
    assert back.keys() == faces.keys() and all(np.array_equal(back[k], faces[k]) for k in faces)
    for name in ('manifest.json', 'class_map.txt'):
        assert (tmp_path / 'back' / name).read_text() == (export / name).read_text()
    # never over an existing folder; a colour or other-size image is refused, not packed grey
    assert _run('unpack', tmp_path / 'f.faces', tmp_path / 'back').returncode != 0
    Image.new('RGB', (48, 48), (200, 30, 30)).save(export / 'test' / 'anger' / 'colour.png')
    proc = _run('pack', export, tmp_path / 'g.faces')
    assert proc.returncode != 0 and 'grey faces only' in proc.stderr and not (tmp_path / 'g.faces').exists()
