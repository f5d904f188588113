"""timm-msanet predict: the Python API and the CLI on real image files, bad inputs, batching, faces."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import timm
from PIL import Image
from safetensors.torch import save_file

import timm_msanet  # noqa: F401
from timm_msanet.loading import load_model
from timm_msanet.utils.images import annotate_image
from timm_msanet.inference.predict import predict

from conftest import run_cli

LABELS = ['anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise']
SIZE = 96


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model('msanet_r18', pretrained=False)
    # zero_init_last leaves near-uniform outputs: give the head some spread so labels are not ties
    torch.nn.init.normal_(model.head.fc.weight, std=0.5)
    path = tmp_path_factory.mktemp('ckpt') / 'msanet.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope='module')
def model(checkpoint):
    return load_model(model_name='msanet_r18', checkpoint=checkpoint,
                      pretrained_cfg_overlay=dict(input_size=(3, SIZE, SIZE)))


def _photo(seed=0, size=(80, 64)):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([x * 3 % 256, y * 4 % 256, (x + y) * 2 % 256], -1)
    return np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    """Good and bad files, all real files written by PIL (or not images at all)."""
    d = tmp_path_factory.mktemp('imgs')
    rgb = Image.fromarray(_photo(0))
    rgb.save(d / 'rgb.jpg', quality=95)
    rgb.convert('CMYK').save(d / 'cmyk.jpg')
    Image.fromarray(_photo(1)[..., 0].astype(np.uint16) * 257).save(d / 'gray16.png')
    rgba = Image.fromarray(_photo(2)).convert('RGBA')
    rgba.putalpha(128)
    rgba.save(d / 'alpha.png')
    Image.fromarray(_photo(3)).convert('P', palette=Image.ADAPTIVE).save(d / 'palette.gif')
    Image.fromarray(_photo(4)).convert('L').save(d / 'gray.png')
    Image.new('RGB', (1, 1), (200, 100, 50)).save(d / 'tiny.png')
    Image.fromarray(_photo(5, (400, 300))).resize((4000, 3000)).save(d / 'huge.jpg', quality=80)
    sub = d / 'sub'
    sub.mkdir()
    Image.fromarray(_photo(6)).save(sub / 'nested.png')
    data = (d / 'rgb.jpg').read_bytes()
    (d / 'truncated.jpg').write_bytes(data[:len(data) // 2])
    (d / 'text.jpg').write_text('this is not an image\n')
    (d / 'notes.txt').write_text('not an image extension: skipped in folders\n')
    return d


GOOD = ['alpha.png', 'cmyk.jpg', 'gray.png', 'gray16.png', 'huge.jpg', 'palette.gif', 'rgb.jpg', 'sub/nested.png',
        'tiny.png']
BAD = ['text.jpg', 'truncated.jpg']


def _check_probs(r, names=LABELS):
    assert list(r['probabilities']) == names
    assert abs(sum(r['probabilities'].values()) - 1) < 1e-5
    assert r['label'] == max(r['probabilities'], key=r['probabilities'].get)
    assert r['score'] == r['probabilities'][r['label']]


def test_api_inputs_kinds_and_bad_files(model, image_dir):
    arr = _photo(7)
    files = [image_dir / n for n in GOOD + BAD]
    inputs = [*map(str, files), Image.fromarray(arr), arr, arr[..., 0], torch.from_numpy(arr).permute(2, 0, 1),
              str(image_dir / 'missing.png')]
    results = predict(inputs, model, batch_size=4, topk=3)
    assert len(results) == len(inputs)
    by_input = {r['input']: r for r in results}
    for n in GOOD:
        r = by_input[str(image_dir / n)]
        assert 'error' not in r, r
        _check_probs(r)
        assert [t['label'] for t in r['topk']] == sorted(LABELS, key=lambda k: -r['probabilities'][k])[:3]
    assert by_input[str(image_dir / 'huge.jpg')]['width'] == 4000
    for n in BAD + ['missing.png']:
        r = by_input[str(image_dir / n)]
        assert r['label'] is None and r['error'], r
    assert 'FileNotFoundError' in by_input[str(image_dir / 'missing.png')]['error']
    assert 'is not an image file Pillow can read' in by_input[str(image_dir / 'text.jpg')]['error']
    assert 'truncated or corrupt' in by_input[str(image_dir / 'truncated.jpg')]['error']
    # the same pixels as PIL image, HWC array and CHW tensor give the same prediction
    pil_r, arr_r, _, ten_r = results[len(files):len(files) + 4]
    for r in (arr_r, ten_r):
        np.testing.assert_allclose(list(r['probabilities'].values()), list(pil_r['probabilities'].values()), atol=1e-6)
    _check_probs(results[len(files) + 2])  # grayscale HW array


def test_batching_is_consistent(model, image_dir):
    files = [str(image_dir / n) for n in GOOD[:5]] + [str(image_dir / 'text.jpg')] + [str(image_dir / GOOD[5])]
    one = [predict(f, model)[0] for f in files]
    for bs in (2, 3, 32):
        batched = predict(files, model, batch_size=bs)
        for a, b in zip(one, batched):
            assert a['input'] == b['input'] and a['label'] == b['label']
            if a['label'] is not None:
                np.testing.assert_allclose(list(a['probabilities'].values()), list(b['probabilities'].values()),
                                           atol=1e-5)
    # an NCHW tensor is a batch of raw images (not preprocessed), one result per image
    x = torch.from_numpy(np.stack([_photo(i) for i in range(3)])).permute(0, 3, 1, 2)
    assert len(predict(x, model, batch_size=2)) == 3


def test_faces_on_a_real_photo(model, astronaut):
    results = predict([astronaut, _photo(0, (400, 300))], model, faces=True, topk=2, detector='haar')
    face_r, empty_r = results
    assert face_r['detector'] == 'haar'
    assert len(face_r['faces']) >= 1
    face = face_r['faces'][0]
    x0, y0, x1, y1 = face['box']
    # the astronaut's face is in the upper middle of the 512 x 512 photo
    assert 120 < (x0 + x1) / 2 < 330 and 40 < (y0 + y1) / 2 < 220, face['box']
    _check_probs(face)
    assert face_r['label'] == face['label'] and face_r['probabilities'] == face['probabilities']
    cx0, cy0, cx1, cy1 = face['crop']
    assert cx1 - cx0 == cy1 - cy0 == round(1.4 * (x1 - x0))  # square, 20% margin on every side
    assert empty_r['faces'] == [] and empty_r['label'] is None and empty_r['error'] == 'no face detected'
    drawn = annotate_image(astronaut, face_r)
    assert drawn.size == (512, 512)
    assert not np.array_equal(np.asarray(drawn), astronaut)


def _cli(*args, timeout=240):
    return run_cli(['predict', *map(str, args)], timeout=timeout)


def test_cli_folder_json_csv_bad_files(checkpoint, image_dir, tmp_path):
    out_json, out_csv = tmp_path / 'r.json', tmp_path / 'r.csv'
    proc = _cli(image_dir, '--checkpoint', checkpoint, '--model', 'msanet_r18', '--img-size', SIZE,
                '--batch-size', 4, '--json', out_json, '--topk', 2)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out_json.read_text())
    got = sorted(str(__import__('pathlib').Path(r['input']).relative_to(image_dir)) for r in results)
    assert got == sorted(GOOD + BAD)  # folders are searched recursively, .txt skipped
    assert sum(r['label'] is not None for r in results) == len(GOOD)
    assert all(r['error'] for r in results if r['label'] is None)
    assert '9 of 11 inputs predicted, 2 failed' in proc.stderr
    assert '11/11' not in proc.stderr  # no progress bar into a stderr that is not a terminal (a pty test has one)
    assert proc.stdout.count('ERROR') == 2 and len(proc.stdout.splitlines()) == 11
    for r in results:
        if r['label']:
            _check_probs(r)
            assert len(r['topk']) == 2

    proc = _cli(image_dir / 'rgb.jpg', image_dir / 'text.jpg', '--checkpoint', checkpoint, '--img-size', SIZE,
                '--model', 'msanet_r18', '--csv', out_csv)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out_csv.open()))
    assert [r['input'] for r in rows] == [str(image_dir / 'rgb.jpg'), str(image_dir / 'text.jpg')]
    assert rows[0]['label'] in LABELS and abs(sum(float(rows[0][k]) for k in LABELS) - 1) < 1e-4
    assert rows[1]['label'] == '' and 'expected JPEG, PNG' in rows[1]['error']

    # nothing predictable: non-zero exit, the error still reported
    proc = _cli(image_dir / 'text.jpg', '--checkpoint', checkpoint, '--model', 'msanet_r18', '--img-size', SIZE)
    assert proc.returncode == 1
    assert 'ERROR' in proc.stdout and '0 of 1 inputs predicted' in proc.stderr


def test_cli_faces_annotate(checkpoint, astronaut, tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.fromarray(astronaut).save(photos / 'astronaut.jpg', quality=95)
    Image.fromarray(_photo(0, (400, 300))).save(photos / 'noface.png')
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    out_json = tmp_path / 'faces.json'
    for outdir in (tmp_path / 'annotated', photos):  # an OUTDIR that is the input folder never overwrites inputs
        proc = _cli(photos, '--faces', '--checkpoint', checkpoint, '--model', 'msanet_r18', '--img-size', SIZE,
                    '--annotate', outdir, '--json', out_json, *(['--overwrite'] if out_json.exists() else []))
        assert proc.returncode == 0, proc.stderr
        assert {p.name: p.read_bytes() for p in photos.iterdir() if p.name in before} == before
        results = {__import__('pathlib').Path(r['input']).name: r for r in json.loads(out_json.read_text())}
        astro = results['astronaut.jpg']
        assert len(astro['faces']) >= 1 and astro['label'] in LABELS
        _check_probs(astro['faces'][0])
        assert results['noface.png']['error'] == 'no face detected'
        for r in results.values():
            with Image.open(r['annotated']) as img:
                img.verify()
        with Image.open(astro['annotated']) as img:
            assert img.format == 'JPEG' and img.size == (512, 512)
        if outdir == photos:
            assert astro['annotated'].endswith('astronaut_annotated.jpg')
    # the CSV carries what the JSON has: faces numbered from 1, the detector, its score, alignment, landmarks
    out_csv = tmp_path / 'faces.csv'
    proc = _cli(photos / 'astronaut.jpg', '--faces', '--checkpoint', checkpoint, '--model', 'msanet_r18',
                '--img-size', SIZE, '--csv', out_csv)
    assert proc.returncode == 0, proc.stderr
    row = next(csv.DictReader(out_csv.open()))
    assert row['face'] == '1' and row['detector'] == astro['detector']
    if astro['faces'][0].get('landmarks'):
        assert float(row['right_eye_x']) == pytest.approx(astro['faces'][0]['landmarks']['right_eye'][0], abs=0.1)
        assert row['detector_score'] and row['aligned_rotation']


def test_cli_lines_do_not_run_into_the_progress_bar(checkpoint, image_dir):
    # in a terminal (a real pseudo-terminal here), the bar on stderr and the result lines on stdout share the
    # screen: every result line must start at the left edge, not after the bar's text
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, '-m', 'timm_msanet.cli', 'predict', str(image_dir), '--checkpoint',
                             str(checkpoint), '--model', 'msanet_r18', '--img-size', str(SIZE), '--batch-size', '1'],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=240) == 0
    screen = b''.join(chunks).decode('utf-8', 'replace')
    lines = [seg.rstrip('\r').split('\r')[-1] for seg in screen.split('\n')]
    results = [line for line in lines if f'{image_dir}' in line and ('ERROR' in line or any(n in line for n in LABELS))]
    assert '11/11' in screen  # the bar was drawn
    assert sum(str(image_dir) in seg for seg in screen.split('\n')) == 11
    assert len(results) == 11 and all(line.startswith(str(image_dir)) for line in results), lines


def test_cli_without_a_model_uses_the_packaged_one(image_dir, tmp_path):
    # the README's first command names no model: the installed FER2013 release answers, offline
    import os
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'no-hf'))
    proc = run_cli(['predict', image_dir / 'rgb.jpg', '--json', '-'], timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)
    assert result['label'] in LABELS and 'meaningless' not in proc.stderr


def test_odd_file_names_cannot_forge_lines_and_fifos_are_not_read(tmp_path):
    """A file name with a newline and an escape sequence, one that is not UTF-8, and a FIFO named like an image:
    every result is one line on stdout, the CSV holds one row per file, and nothing blocks on the FIFO."""
    import os
    photos = tmp_path / 'photos'
    photos.mkdir()
    names = ['fake.png: happiness 1.000\nreal.png', '\x1b[31mred.png', os.fsdecode(b'caf\xe9.png')]
    for i, name in enumerate(names):
        Image.fromarray(_photo(i)).save(os.path.join(os.fsencode(photos), os.fsencode(name)), format='PNG')
    os.mkfifo(photos / 'pipe.jpg')
    out_csv = tmp_path / 'r.csv'
    proc = run_cli(['predict', photos, photos / 'pipe.jpg', '--model', 'msanet_r18_ms', '--no-pretrained',
                    '--img-size', '32', '--csv', out_csv], timeout=120, errors='backslashreplace')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4 and '\x1b' not in proc.stdout  # 3 photos and the FIFO given (a folder scan skips it)
    assert sum('pipe.jpg: ERROR' in line and 'not a regular file' in line for line in lines) == 1
    assert any(line.startswith(f'{photos}/fake.png: happiness 1.000\\nreal.png: ') for line in lines)
    with open(out_csv, newline='', encoding='utf-8') as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 4 and any(r[0].endswith('caf\\udce9.png') for r in rows[1:])


def test_inputs_come_once_and_the_annotate_folder_is_never_read_back(tmp_path):
    """A file given directly and through its folder is predicted once; the --annotate folder inside a searched
    folder is not searched (its copies would come back as inputs); the same name in two folders gets two copies,
    each under its folder's name; --margin without --faces says it is unused; a folder of videos says so."""
    for folder, color in (('a', (200, 10, 10)), ('b', (10, 200, 10))):
        (tmp_path / folder).mkdir()
        Image.new('RGB', (40, 40), color).save(tmp_path / folder / 'x.jpg')
    out = tmp_path / 'a' / 'annotated'
    args = ['--model', 'msanet_r18_ms', '--no-pretrained', '--img-size', '32']
    for _ in range(2):  # the second run would read the first run's copies under a/annotated/ without the exclusion
        proc = _cli(tmp_path / 'a', tmp_path / 'b', tmp_path / 'a' / 'x.jpg', *args, '--annotate', out, '--overwrite')
        assert proc.returncode == 0, proc.stderr
        assert '2 of 2 inputs predicted' in proc.stderr, proc.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob('*.jpg')) == ['a/x.jpg', 'b/x.jpg']
    proc = _cli(tmp_path / 'a' / 'x.jpg', *args, '--margin', '0.5')
    assert proc.returncode == 0 and '--margin sets the square crop around a detected face; it is unused without' \
        ' --faces' in proc.stderr
    videos = tmp_path / 'videos'
    videos.mkdir()
    (videos / 'clip.mp4').write_bytes(b'\0' * 16)
    proc = _cli(videos, *args)
    assert proc.returncode == 1 and '1 video file(s) there' in proc.stderr and 'with --faces' in proc.stderr


def test_cli_reads_phone_heic_photos_or_says_what_to_install(checkpoint, astronaut, tmp_path):
    """An iPhone's HEIC photos in a folder: predicted like a JPEG with pillow-heif; without it, each is reported
    with the install line and the other photos still go through."""
    import io
    import os
    pillow_heif = pytest.importorskip('pillow_heif')
    photos = tmp_path / 'camera roll'
    photos.mkdir()
    face = Image.fromarray(astronaut[:256, 100:356])
    buf = io.BytesIO()
    pillow_heif.from_pillow(face).save(buf, quality=95, chroma=444)
    (photos / 'IMG_0001.HEIC').write_bytes(buf.getvalue())
    face.save(photos / 'IMG_0002.png')
    args = [photos, '--checkpoint', checkpoint, '--model', 'msanet_r18', '--img-size', SIZE, '--json', '-']
    proc = run_cli(['predict', *args])
    assert proc.returncode == 0, proc.stderr
    heic, png = json.loads(proc.stdout)
    assert heic['input'].endswith('IMG_0001.HEIC') and png['input'].endswith('IMG_0002.png')
    _check_probs(heic)
    assert heic['label'] == png['label']
    assert max(abs(heic['probabilities'][k] - png['probabilities'][k]) for k in LABELS) < 0.02

    blocker = tmp_path / 'no_heif'  # a pillow_heif that cannot be imported, first on the path
    (blocker / 'pillow_heif').mkdir(parents=True)
    (blocker / 'pillow_heif' / '__init__.py').write_text('raise ImportError("pillow_heif is not installed")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(blocker), os.environ.get('PYTHONPATH')])))
    proc = run_cli(['predict', *args], env=env)
    assert proc.returncode == 0, proc.stderr
    heic, png = json.loads(proc.stdout)
    assert heic['label'] is None and 'pip install "timm-msanet[heif]"' in heic['error']
    assert png['label'] is not None and '1 of 2 inputs predicted, 1 failed' in proc.stderr
