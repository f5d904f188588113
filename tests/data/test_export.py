"""`timm-msanet export`: fixtures that reproduce each official FER dataset layout with real encoded images.

No real dataset is used or shipped: every fixture writes small PIL-encoded images plus the label
files/CSVs of the official layout, including broken entries (corrupt and truncated images, wrong
labels, malformed lines, odd file names). Expected results are computed from the fixture specs,
never typed in by hand.
"""
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from timm_msanet.data import parsers
from timm_msanet.data import export, workers
from timm_msanet.labels import FER7_LABELS, FER8_LABELS

REPO = Path(__file__).resolve().parents[2]
REASONS = set(parsers.SKIP_REASONS)


# ---------------------------------------------------------------------------------------------------
# image and tree helpers

def _image(color: Tuple[int, int, int], size: Tuple[int, int] = (16, 16), box=None, box_color=(255, 255, 255)):
    img = Image.new('RGB', size, color)
    if box is not None:
        x, y, w, h = box
        img.paste(Image.new('RGB', (w, h), box_color), (x, y))
    return img


def _save(path: Path, img: Image.Image, fmt: str = 'JPEG') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, quality=95) if fmt == 'JPEG' else img.save(path, fmt)
    return path


def _jpeg_bytes(color=(10, 20, 30), size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new('RGB', size, color).save(buf, 'JPEG')
    return buf.getvalue()


def _write_truncated(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _jpeg_bytes(size=(64, 64))
    path.write_bytes(data[:len(data) // 2])
    return path


def _write_garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'this is not an image at all' * 10)
    return path


def _color(i: int) -> Tuple[int, int, int]:
    return (37 * i % 256, 91 * i % 256, 53 * i % 256)


def _tree_digest(root: Path) -> Dict[str, str]:
    """Every path under root with the sha256 of its bytes (or its link target): 'unchanged' is exact."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = 'link:' + os.readlink(p)
            elif os.path.isfile(p):
                with open(p, 'rb') as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
            else:
                out[rel] = 'dir'
    return out


def _listing(split_dir: Path) -> Dict[str, List[str]]:
    return {c.name: sorted(p.name for p in c.iterdir()) for c in sorted(split_dir.iterdir())}


def _counts(split_dir: Path) -> Dict[str, int]:
    return {c: len(v) for c, v in _listing(split_dir).items()}


def _expected_counts(labels: Sequence[str], classes=FER7_LABELS) -> Dict[str, int]:
    return {c: sum(1 for l in labels if l == c) for c in classes}


def _no_partials(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if '.partial-' in p.name or '.old-' in p.name]


# ---------------------------------------------------------------------------------------------------
# RAF-DB fixture

RAF_CODES = {'surprise': 1, 'fear': 2, 'disgust': 3, 'happiness': 4, 'sadness': 5, 'anger': 6, 'neutral': 7}


class RafFixture:
    def __init__(self, root: Path):
        self.root = root
        self.good: Dict[str, Tuple[str, str]] = {}  # label-file name -> (split, canonical label)
        self.broken: Dict[str, str] = {}  # label-file name -> 'truncated' | 'garbage'
        self.missing: List[str] = []
        self.bad_lines: Dict[str, str] = {}  # line text -> expected skip reason


def make_rafdb(root: Path) -> RafFixture:
    fx = RafFixture(root)
    aligned = root / 'Image' / 'aligned'
    original = root / 'Image' / 'original'
    lines: List[str] = []
    labels = list(RAF_CODES)
    i = 0
    for split, per_class in (('train', (4, 3, 2, 5, 1, 2, 3)), ('test', (1, 1, 2, 1, 1, 1, 1))):
        for label, n in zip(labels, per_class):
            for _ in range(n):
                i += 1
                name = f'{split}_{i:05d}.jpg'
                if i == 3:
                    name = f'{split}_0 spaced é.jpg'  # spaces and unicode in the name
                _save(aligned / name.replace('.jpg', '_aligned.jpg'), _image(_color(i), (20, 20)))
                _save(original / name, _image(_color(i), (30, 30)))
                fx.good[name] = (split, label)
                lines.append(f'{name} {RAF_CODES[label]}')
    for name, kind in (('train_90001.jpg', 'truncated'), ('test_90002.jpg', 'garbage')):
        writer = _write_truncated if kind == 'truncated' else _write_garbage
        writer(aligned / name.replace('.jpg', '_aligned.jpg'))
        writer(original / name)
        fx.broken[name] = kind
        fx.good[name] = ('train' if name.startswith('train') else 'test', 'happiness')
        lines.append(f'{name} 4')
    fx.missing = ['train_99999.jpg', 'test_\udcff\udcfe missing.jpg']
    lines.append('train_99999.jpg 2')
    fx.bad_lines = {
        'train_80001.jpg 9': 'unknown_label',
        'train_80002.jpg x': 'malformed_entry',
        'justonetoken': 'malformed_entry',
        'val_80003.jpg 3': 'unknown_split',
        'train_../../etc/passwd 3': 'unsafe_path',
    }
    lines[5:5] = list(fx.bad_lines)
    lines.insert(2, '')  # blank lines are not entries
    label_file = root / 'EmoLabel' / 'list_patition_label.txt'
    label_file.parent.mkdir(parents=True)
    label_file.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    # names that are not UTF-8 (a Latin-1 label file): one present, one missing, so one lands in the manifest
    latin1 = 'train_caf' + os.fsdecode(b'\xe9') + '.jpg'
    _save(aligned / latin1.replace('.jpg', '_aligned.jpg'), _image(_color(99), (20, 20)))
    _save(original / latin1, _image(_color(99), (30, 30)))
    fx.good[latin1] = ('train', 'happiness')
    with open(label_file, 'ab') as f:
        f.write(os.fsencode(latin1) + b' 4\n' + os.fsencode(fx.missing[1]) + b' 4\n')
    return fx


@pytest.fixture
def rafdb(tmp_path) -> RafFixture:
    return make_rafdb(tmp_path / 'RAF-DB')


def _timm_dataset(root: Path, class_map: Optional[Path] = None):
    from timm.data import create_dataset
    return create_dataset('', root=str(root), class_map=str(class_map) if class_map else '')


# ---------------------------------------------------------------------------------------------------
# RAF-DB tests

def test_rafdb_link_export_counts_manifest_and_timm(rafdb, tmp_path):
    before = _tree_digest(rafdb.root)
    out = tmp_path / 'out'
    result = export.export_rafdb(rafdb.root, out)
    exported = {n: v for n, v in rafdb.good.items() if n not in rafdb.missing}
    for split in ('train', 'test'):
        expected = _expected_counts([lab for s, lab in exported.values() if s == split])
        assert _counts(out / split) == expected
        assert result.counts(split) == expected
    assert sorted(os.listdir(out)) == ['class_map.txt', 'manifest.json', 'test', 'train']  # RAF-DB has no validation
    assert (out / 'class_map.txt').read_text().splitlines() == list(FER7_LABELS)
    assert sorted(FER7_LABELS) == list(FER7_LABELS) == sorted(os.listdir(out / 'train'))

    # every link is absolute, points into SOURCE's aligned folder, at the image of the right class
    for name, (split, label) in exported.items():
        link = out / split / label / name.replace('.jpg', '_aligned.jpg')
        assert link.is_symlink() and os.path.isabs(os.readlink(link))
        assert Path(os.readlink(link)) == rafdb.root / 'Image' / 'aligned' / link.name

    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['format'] == export.MANIFEST_FORMAT and manifest['dataset'] == 'rafdb'
    from timm_msanet.version import __version__
    assert manifest['package_version'] == __version__
    assert manifest['source'] == str(rafdb.root)
    assert manifest['classes'] == list(FER7_LABELS) and manifest['evaluation_split'] == 'test'
    assert manifest['label_map'] == {str(code): label for label, code in RAF_CODES.items()}
    assert manifest['options']['mode'] == 'link'
    assert manifest['exported'] == len(exported)
    expected_reasons = {}
    for reason in list(rafdb.bad_lines.values()) + ['missing_image'] * len(rafdb.missing):
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert manifest['skipped']['by_reason'] == expected_reasons
    listed = {(s['reason'], s['item']) for s in manifest['skipped_items']}
    assert ('missing_image', 'Image/aligned/train_99999_aligned.jpg') in listed
    assert {r for r, _ in listed} == set(expected_reasons)

    # timm's own ImageFolder reads the tree with the canonical indices
    ds = _timm_dataset(out / 'train')
    assert ds.reader.class_to_idx == {c: i for i, c in enumerate(FER7_LABELS)}
    for path, target in ds.reader.samples:
        assert FER7_LABELS[target] == Path(path).parent.name
    assert len(ds) == sum(1 for s, _ in exported.values() if s == 'train')
    assert _tree_digest(rafdb.root) == before


def test_rafdb_verify_skips_corrupt_and_truncated(rafdb, tmp_path):
    result = export.export_rafdb(rafdb.root, tmp_path / 'out', verify=True, workers=2)
    m = result.manifest
    assert m['skipped']['by_reason']['undecodable_image'] == len(rafdb.broken)
    undecodable = {s['item'] for s in m['skipped_items'] if s['reason'] == 'undecodable_image'}
    assert undecodable == {f'Image/aligned/{n.replace(".jpg", "_aligned.jpg")}' for n in rafdb.broken}
    assert result.exported == len(rafdb.good) - len(rafdb.broken)  # missing images are not in `good`


@pytest.mark.parametrize('mode', ['copy', 'encode'])
def test_rafdb_copy_and_encode_modes(rafdb, tmp_path, mode):
    before = _tree_digest(rafdb.root)
    out = tmp_path / mode
    extra = {'size': 24} if mode == 'encode' else {}
    result = export.export_rafdb(rafdb.root, out, mode=mode, images='original', workers=1, **extra)
    usable = {n: v for n, v in rafdb.good.items() if n not in rafdb.missing
              and (mode == 'copy' or n not in rafdb.broken)}  # encode decodes, so broken files are skipped
    assert result.exported == len(usable)
    for name, (split, label) in usable.items():
        written = out / split / label / name
        assert written.is_file() and not written.is_symlink()
        if mode == 'copy':
            assert written.read_bytes() == (rafdb.root / 'Image' / 'original' / name).read_bytes()
        else:
            with Image.open(written) as img:
                assert img.size == (24, 24)
    assert _tree_digest(rafdb.root) == before


def test_parallel_encode_matches_inline(rafdb, tmp_path):
    one = export.export_rafdb(rafdb.root, tmp_path / 'one', mode='encode', workers=1, chunk_size=3)
    two = export.export_rafdb(rafdb.root, tmp_path / 'two', mode='encode', workers=2, chunk_size=3)
    assert one.manifest['splits'] == two.manifest['splits']
    assert one.manifest['skipped']['by_reason'] == two.manifest['skipped']['by_reason']
    for split in ('train', 'test'):
        assert _listing(tmp_path / 'one' / split) == _listing(tmp_path / 'two' / split)


@pytest.mark.parametrize('mode', ['link', 'copy'])
def test_balance_oversample(rafdb, tmp_path, mode):
    out = tmp_path / 'out'
    result = export.export_rafdb(rafdb.root, out, balance='oversample', mode=mode, workers=1)
    real = result.counts('train')
    target = max(real.values())
    assert _counts(out / 'train') == {c: (target if n else 0) for c, n in real.items()}
    assert _counts(out / 'test') == result.counts('test')  # only train is balanced
    balance = result.manifest['balance']
    assert balance['target_per_class'] == target
    assert balance['added'] == {c: (target - n if n else 0) for c, n in real.items()}
    ds = _timm_dataset(out / 'train')
    assert len(ds) == target * sum(1 for n in real.values() if n)
    for path, _ in ds.reader.samples:  # every extra entry is a link that resolves to a real image
        assert os.path.isfile(path)
        if '.oversample' in path:
            target = os.readlink(path)
            # link mode: the same absolute source; copy mode: a sibling, so OUTPUT can be moved
            assert os.path.isabs(target) if mode == 'link' else os.sep not in target


def test_empty_class_needs_class_map_and_gets_one(rafdb, tmp_path):
    """RAF-DB has no contempt: with --classes 8 the folder is empty, and timm only keeps indices with class_map."""
    out = tmp_path / 'out'
    export.export_rafdb(rafdb.root, out, classes=8)
    assert sorted(os.listdir(out / 'train')) == list(FER8_LABELS)
    assert os.listdir(out / 'train' / 'contempt') == []
    ds = _timm_dataset(out / 'train', class_map=out / 'class_map.txt')
    assert ds.reader.class_to_idx == {c: i for i, c in enumerate(FER8_LABELS)}
    for path, target in ds.reader.samples:
        assert FER8_LABELS[target] == Path(path).parent.name


def test_output_safety(rafdb, tmp_path):
    out = tmp_path / 'out'
    export.export_rafdb(rafdb.root, out)
    first = _tree_digest(out)
    with pytest.raises(export.OutputError, match='already exists'):
        export.export_rafdb(rafdb.root, out)
    assert _tree_digest(out) == first
    result = export.export_rafdb(rafdb.root, out, overwrite=True, mode='copy')
    assert result.manifest['options']['mode'] == 'copy' and not any(p.is_symlink() for p in (out / 'train').rglob('*'))

    unrelated = tmp_path / 'my_thesis'
    unrelated.mkdir()
    (unrelated / 'chapter1.tex').write_text('precious')
    with pytest.raises(export.OutputError, match='not an earlier export'):
        export.export_rafdb(rafdb.root, unrelated, overwrite=True)
    assert (unrelated / 'chapter1.tex').read_text() == 'precious'

    with pytest.raises(export.OutputError, match='inside SOURCE'):
        export.export_rafdb(rafdb.root, rafdb.root / 'export')
    with pytest.raises(export.OutputError, match='inside OUTPUT'):
        export.export_rafdb(rafdb.root, tmp_path, overwrite=True)
    assert not (rafdb.root / 'export').exists()
    assert _no_partials(tmp_path)


def test_failed_export_leaves_no_output_and_keeps_the_old_one(rafdb, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    export.export_rafdb(rafdb.root, out)
    old = _tree_digest(out)
    calls = []
    original = workers.process_chunk

    def failing_chunk(records, cfg):
        calls.append(len(records))
        if len(calls) == 2:  # fails after the first chunk was written into the staging folder
            raise RuntimeError('disk on fire')
        return original(records, cfg)

    monkeypatch.setattr(workers, 'process_chunk', failing_chunk)  # what the pool runs
    with pytest.raises(RuntimeError, match='disk on fire'):
        export.export_rafdb(rafdb.root, out, overwrite=True, chunk_size=2, leak_check=False)
    assert _tree_digest(out) == old  # the old export is untouched
    with pytest.raises(RuntimeError):
        calls.clear()
        export.export_rafdb(rafdb.root, tmp_path / 'fresh', chunk_size=2, leak_check=False)
    assert not (tmp_path / 'fresh').exists()
    assert _no_partials(tmp_path)


def test_nothing_usable_writes_nothing(tmp_path):
    root = tmp_path / 'raf'
    (root / 'Image' / 'aligned').mkdir(parents=True)
    (root / 'EmoLabel').mkdir()
    (root / 'EmoLabel' / 'list_patition_label.txt').write_text('train_00001.jpg 1\ntest_00001.jpg 2\n')
    with pytest.raises(export.NothingExportedError, match='missing_image 2') as info:
        export.export_rafdb(root, tmp_path / 'out')
    assert info.value.manifest['skipped']['by_reason'] == {'missing_image': 2}
    assert not (tmp_path / 'out').exists() and _no_partials(tmp_path)


@pytest.mark.parametrize('exporter, expected', [
    (export.export_rafdb, 'EmoLabel/list_patition_label.txt'),
    (export.export_affectnet, 'Manually_Annotated_file_lists'),
    (export.export_fer2013, 'fer2013.csv'),
    (export.export_ferplus, 'fer2013new.csv'),
])
def test_wrong_source_names_what_was_expected(tmp_path, exporter, expected):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(export.DatasetLayoutError) as info:
        exporter(empty, tmp_path / 'out')
    assert expected in str(info.value)
    assert not (tmp_path / 'out').exists() and _no_partials(tmp_path)


def test_rafdb_missing_aligned_folder_suggests_original(rafdb, tmp_path):
    os.rename(rafdb.root / 'Image' / 'aligned', tmp_path / 'elsewhere')
    with pytest.raises(export.DatasetLayoutError, match='--images original'):
        export.export_rafdb(rafdb.root, tmp_path / 'out')


def test_options_that_cannot_work_are_refused(rafdb, tmp_path):
    with pytest.raises(export.OptionsError, match='needs --mode encode'):
        export.export_rafdb(rafdb.root, tmp_path / 'out', size=64)
    with pytest.raises(export.OptionsError, match='AffectNet'):
        export.export_rafdb(rafdb.root, tmp_path / 'out', mode='encode', crop_face=True)
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------------------------------------------
# CLI through a real subprocess

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, '-m', 'timm_msanet.cli', 'export', *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_export_and_errors(rafdb, tmp_path):
    before = _tree_digest(rafdb.root)
    out = tmp_path / 'cli out'
    proc = _cli('rafdb', str(rafdb.root), str(out), '--balance', 'oversample', '--workers', '1')
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['balance']['method'] == 'oversample'
    for label in FER7_LABELS:  # summary table: one row per class with its train and test counts
        row = f'{label} '
        assert any(line.startswith(row) and line.split()[1:] == [str(manifest['splits']['train']['classes'][label]),
                                                                  str(manifest['splits']['test']['classes'][label])]
                   for line in proc.stdout.splitlines()), proc.stdout
    assert proc.stderr == ''  # not a TTY: no progress bar

    proc = _cli('affectnet', str(rafdb.root), str(tmp_path / 'x'), '--quiet')  # wrong SOURCE
    assert proc.returncode == 2 and 'Manually_Annotated_file_lists' in proc.stderr
    assert 'Traceback' not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert _tree_digest(rafdb.root) == before


def test_cli_exit_codes_in_process(rafdb, tmp_path, capsys):
    from timm_msanet import cli
    out = tmp_path / 'out'
    assert cli.main(['export', 'rafdb', str(rafdb.root), str(out), '--quiet']) == 0
    assert capsys.readouterr().out == ''  # --quiet: no summary
    assert cli.main(['export', 'rafdb', str(rafdb.root), str(out)]) == 2  # exists, no --overwrite
    err = capsys.readouterr().err
    assert 'already exists' in err and '--overwrite' in err
    assert cli.main(['export', 'rafdb', str(rafdb.root), str(tmp_path / 'o2'), '--size', '32']) == 2
    assert 'needs --mode encode' in capsys.readouterr().err
    empty = tmp_path / 'raf-empty'
    (empty / 'EmoLabel').mkdir(parents=True)
    (empty / 'Image' / 'aligned').mkdir(parents=True)
    (empty / 'EmoLabel' / 'list_patition_label.txt').write_text('train_1.jpg 1\n')
    assert cli.main(['export', 'rafdb', str(empty), str(tmp_path / 'o3')]) == 1  # nothing usable
    assert 'nothing usable' in capsys.readouterr().err and not (tmp_path / 'o3').exists()


# ---------------------------------------------------------------------------------------------------
# AffectNet fixtures: legacy CSV release and the train_set/val_set npy release

AFFECT_CODES = {'neutral': 0, 'happiness': 1, 'sadness': 2, 'surprise': 3, 'fear': 4, 'disgust': 5, 'anger': 6,
                'contempt': 7}
AFFECT_HEADER = ('subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,'
                 'arousal')
FACE_BOX = (12, 6, 20, 24)  # x, y, w, h inside a 48x40 image


class AffectFixture:
    def __init__(self, root: Path):
        self.root = root
        self.good: List[Tuple[str, str, str]] = []  # (split, label, output name)
        self.reasons: List[Tuple[str, str]] = []  # (expected skip reason, split) independent of --classes
        self.contempt: List[Tuple[str, str]] = []  # (split, output name): kept with 8 classes, skipped with 7


def make_affectnet_legacy(root: Path) -> AffectFixture:
    fx = AffectFixture(root)
    images = root / 'Manually_Annotated_Images'
    lists = root / 'Manually_Annotated_file_lists'
    lists.mkdir(parents=True)
    landmarks = ';'.join(str(float(v)) for v in range(10))
    counter = 0

    def row(rel: str, code, box=FACE_BOX) -> str:
        return f'{rel},{box[0]},{box[1]},{box[2]},{box[3]},{landmarks},{code},0.1,-0.2'

    def image(rel: str) -> None:
        nonlocal counter
        counter += 1
        _save(images / rel, _image((0, 0, 120 + counter), (48, 40), FACE_BOX))

    for file_name, split, codes in (('training.csv', 'train', [0, 1, 2, 3, 4, 5, 6, 7, 1, 1, 6, 0, 7]),
                                    ('validation.csv', 'validation', [0, 1, 2, 3, 4, 5, 6, 7])):
        rows = [AFFECT_HEADER]
        for i, code in enumerate(codes):
            sub = str(100 + i % 3)
            name = f'img {split} {i}.jpg' if i % 4 else f'ünï_{split}_{i}.jpg'
            image(f'{sub}/{name}')
            rows.append(row(f'{sub}/{name}', code))
            label = next(k for k, v in AFFECT_CODES.items() if v == code)
            if label == 'contempt':
                fx.contempt.append((split, f'{sub}__{name}'))
            else:
                fx.good.append((split, label, f'{sub}__{name}'))
        for code in (8, 9, 10):
            image(f'900/drop_{split}_{code}.jpg')
            rows.append(row(f'900/drop_{split}_{code}.jpg', code))
            fx.reasons.append(('excluded_label', split))
        bad = [(row('900/unknown.jpg', 11), 'unknown_label'),
               (row('900/notanumber.jpg', 'x'), 'malformed_entry'),
               ('900/short.jpg,1,2', 'malformed_entry'),
               (row('900/missing.jpg', 2), 'missing_image'),
               (row('../outside.jpg', 2), 'unsafe_path'),
               (row('/etc/hostname', 2), 'unsafe_path')]
        for text, reason in bad:
            rows.append(text)
            fx.reasons.append((reason, split))
        rows.append(rows[1])  # the same image listed twice: the second is reported, never overwrites the first
        fx.reasons.append(('duplicate', split))
        (lists / file_name).write_text('\n'.join(rows) + '\n', encoding='utf-8')
    return fx


def make_affectnet_npy(root: Path) -> AffectFixture:
    fx = AffectFixture(root)
    for set_dir, split in (('train_set', 'train'), ('val_set', 'validation')):
        (root / set_dir / 'images').mkdir(parents=True)
        ann = root / set_dir / 'annotations'
        ann.mkdir(parents=True)
        for idx, code in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 1, 9]):
            _save(root / set_dir / 'images' / f'{idx}.jpg', _image(_color(idx)))
            value = np.array(str(code)) if idx % 2 else np.array(code)  # the release stores strings
            np.save(ann / f'{idx}_exp.npy', value)
            np.save(ann / f'{idx}_val.npy', np.array('0.5'))  # other annotations are ignored
            label = next((k for k, v in AFFECT_CODES.items() if v == code), None)
            if label is None:
                fx.reasons.append(('excluded_label', split))
            elif label == 'contempt':
                fx.contempt.append((split, f'{idx}.jpg'))
            else:
                fx.good.append((split, label, f'{idx}.jpg'))
        np.save(ann / '50_exp.npy', np.array('3'))  # annotation without its image
        fx.reasons.append(('missing_image', split))
        (ann / '51_exp.npy').write_bytes(b'not a numpy file')
        fx.reasons.append(('malformed_entry', split))
        np.save(ann / '52_exp.npy', np.array([{'a': 1}], dtype=object), allow_pickle=True)  # never unpickled
        fx.reasons.append(('malformed_entry', split))
    return fx


def _reason_counts(pairs) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for reason, _ in pairs:
        out[reason] = out.get(reason, 0) + 1
    return out


@pytest.mark.parametrize('layout', ['legacy', 'npy'])
@pytest.mark.parametrize('classes', [7, 8])
def test_affectnet_layouts_and_class_sets(tmp_path, layout, classes):
    make = make_affectnet_legacy if layout == 'legacy' else make_affectnet_npy
    fx = make(tmp_path / 'AffectNet')
    before = _tree_digest(fx.root)
    out = tmp_path / 'out'
    result = export.export_affectnet(fx.root, out, classes=classes)
    names = FER7_LABELS if classes == 7 else FER8_LABELS
    kept = fx.good + ([(s, 'contempt', n) for s, n in fx.contempt] if classes == 8 else [])
    assert sorted(os.listdir(out)) == ['class_map.txt', 'manifest.json', 'train', 'validation']  # no test/ copy
    for split in ('train', 'validation'):
        assert _listing(out / split) == {c: sorted(n for s, lab, n in kept if s == split and lab == c) for c in names}
    reasons = _reason_counts(fx.reasons + ([('excluded_label', s) for s, _ in fx.contempt] if classes == 7 else []))
    m = result.manifest
    assert m['skipped']['by_reason'] == reasons
    assert m['evaluation_split'] == 'validation' and m['classes'] == list(names)
    assert m['label_map']['7'] == ('contempt' if classes == 8 else None)
    assert m['label_map']['8'] is m['label_map']['9'] is m['label_map']['10'] is None
    assert m['layout'] == ('affectnet-legacy-csv' if layout == 'legacy' else 'affectnet-npy')
    assert (out / 'class_map.txt').read_text().splitlines() == list(names)
    ds = _timm_dataset(out / 'validation', class_map=out / 'class_map.txt')
    for path, target in ds.reader.samples:
        assert names[target] == Path(path).parent.name
    assert _tree_digest(fx.root) == before


def test_affectnet_crop_face_in_encode_mode(tmp_path):
    fx = make_affectnet_legacy(tmp_path / 'AffectNet')
    lists = fx.root / 'Manually_Annotated_file_lists' / 'training.csv'
    _save(fx.root / 'Manually_Annotated_Images' / '900' / 'offimage.jpg', _image((0, 0, 200), (48, 40)))
    with open(lists, 'a', encoding='utf-8') as f:
        f.write('900/offimage.jpg,100,100,10,10,,1,0,0\n')  # box outside the image
        f.write('900/offimage.jpg,0,0,0,10,,1,0,0\n')  # zero-width box
    with pytest.raises(export.OptionsError, match='needs --mode encode'):
        export.export_affectnet(fx.root, tmp_path / 'bad', crop_face=True)
    cropped = export.export_affectnet(fx.root, tmp_path / 'crop', mode='encode', crop_face=True, size=16)
    plain = export.export_affectnet(fx.root, tmp_path / 'plain', mode='encode', size=16)
    assert cropped.manifest['skipped']['by_reason']['bad_face_box'] == 2
    assert 'bad_face_box' not in plain.manifest['skipped']['by_reason']  # boxes are ignored without --crop-face
    split, label, name = fx.good[0]
    for out, white in ((tmp_path / 'crop', True), (tmp_path / 'plain', False)):
        with Image.open(out / split / label / name) as img:
            assert img.size == (16, 16)
            mean = np.asarray(img.convert('L'), dtype=np.float64).mean()
        assert (mean > 230) == white  # the face box is white, the rest dark blue


def test_affectnet_npy_refuses_crop_face(tmp_path):
    fx = make_affectnet_npy(tmp_path / 'AffectNet')
    with pytest.raises(export.DatasetLayoutError, match='no face boxes'):
        export.export_affectnet(fx.root, tmp_path / 'out', mode='encode', crop_face=True)


def test_affectnet_missing_csv_is_named(tmp_path):
    fx = make_affectnet_legacy(tmp_path / 'AffectNet')
    (fx.root / 'Manually_Annotated_file_lists' / 'validation.csv').unlink()
    with pytest.raises(export.DatasetLayoutError, match='validation.csv'):
        export.export_affectnet(fx.root, tmp_path / 'out')
    (fx.root / 'Manually_Annotated_file_lists' / 'validation.csv').write_text('path,label\nx.jpg,1\n')
    with pytest.raises(export.DatasetLayoutError, match='missing subDirectory_filePath'):
        export.export_affectnet(fx.root, tmp_path / 'out')


# ---------------------------------------------------------------------------------------------------
# FER2013 and FERPlus fixtures

FER_CODES = {'anger': 0, 'disgust': 1, 'fear': 2, 'happiness': 3, 'sadness': 4, 'surprise': 5, 'neutral': 6}
USAGE = {'train': 'Training', 'validation': 'PublicTest', 'test': 'PrivateTest'}


def _pixels(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(48, 48), dtype=np.uint8)


def _pixel_text(a: np.ndarray) -> str:
    return ' '.join(str(int(v)) for v in a.reshape(-1))


class FerFixture:
    def __init__(self, csv_path: Path):
        self.csv = csv_path
        self.good: Dict[int, Tuple[str, str, np.ndarray]] = {}  # row index -> (split, label, pixels)
        self.reasons: List[Tuple[str, str]] = []
        self.pixels: Dict[int, np.ndarray] = {}  # every row with well-formed pixels, for FERPlus


def make_fer2013_csv(path: Path) -> FerFixture:
    fx = FerFixture(path)
    rng = np.random.default_rng(0)
    rows = ['emotion,pixels,Usage']
    labels = list(FER_CODES)
    index = 0
    for split, n in (('train', 10), ('validation', 4), ('test', 5)):
        for i in range(n):
            a = _pixels(rng)
            label = labels[(i * 3 + len(split)) % 7]
            rows.append(f'{FER_CODES[label]},{_pixel_text(a)},{USAGE[split]}')
            fx.good[index] = (split, label, a)
            fx.pixels[index] = a
            index += 1
    good_text = _pixel_text(_pixels(rng))
    bad = [(f'7,{good_text},Training', 'unknown_label'),
           (f'x,{good_text},Training', 'malformed_entry'),
           (f'3,{good_text},Holdout', 'unknown_split'),
           ('3,1 2 3,Training', 'bad_pixels'),
           (f'3,{good_text.replace("1", "z", 1)},Training', 'bad_pixels'),  # decided in the worker
           (f'3,300 {good_text.split(" ", 1)[1]},PrivateTest', 'bad_pixels'),
           ('3', 'malformed_entry')]
    for text, reason in bad:
        rows.append(text)
        fx.reasons.append((reason, ''))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(rows) + '\n')
    return fx


def test_fer2013_csv_pixels_round_trip(tmp_path):
    fx = make_fer2013_csv(tmp_path / 'fer2013' / 'fer2013.csv')
    before = _tree_digest(fx.csv.parent)
    out = tmp_path / 'out'
    result = export.export_fer2013(fx.csv.parent, out, workers=2)  # pixels: encoded in worker processes
    for split in ('train', 'validation', 'test'):
        assert result.counts(split) == _expected_counts([lab for s, lab, _ in fx.good.values() if s == split])
    for index, (split, label, a) in fx.good.items():
        png = out / split / label / f'fer{index:07d}.png'
        with Image.open(png) as img:
            assert img.size == (48, 48) and img.mode == 'L'
            assert np.array_equal(np.asarray(img), a)
    assert result.manifest['skipped']['by_reason'] == _reason_counts(fx.reasons)
    assert result.manifest['evaluation_split'] == 'test'
    ds = _timm_dataset(out / 'test', class_map=out / 'class_map.txt')  # not every class occurs in this tiny test/
    assert ds.reader.class_to_idx == {c: i for i, c in enumerate(FER7_LABELS)}
    assert sorted(FER7_LABELS[t] for _, t in ds.reader.samples) == sorted(
        lab for s, lab, _ in fx.good.values() if s == 'test')
    # the file itself may be given as SOURCE; encode mode resizes
    enc = export.export_fer2013(fx.csv, tmp_path / 'enc', mode='encode', size=64, workers=1)
    split, label, _ = fx.good[0]
    with Image.open(tmp_path / 'enc' / split / label / 'fer0000000.png') as img:
        assert img.size == (64, 64)
    assert enc.exported == result.exported
    assert _tree_digest(fx.csv.parent) == before


FOLDER_NAMES = {'anger': 'angry', 'disgust': 'disgust', 'fear': 'fear', 'happiness': 'happy', 'neutral': 'neutral',
                'sadness': 'sad', 'surprise': 'surprise'}


def test_fer2013_image_folder_redistribution(tmp_path):
    root = tmp_path / 'fer2013-folders'
    expected: Dict[str, List[Tuple[str, str]]] = {'train': [], 'test': []}
    for split, per_class in (('train', 3), ('test', 1)):
        for k, (label, folder) in enumerate(FOLDER_NAMES.items()):
            for i in range(per_class + k % 2):
                name = f'{split} {i} ✓.jpg' if i == 0 else f'PrivateTest_{k}{i}.jpg'
                _save(root / split / folder / name, _image(_color(k * 10 + i), (48, 48)).convert('L'))
                expected[split].append((label, name))
    _save(root / 'train' / 'happy' / 'nested' / 'deep.png', _image((1, 2, 3)), 'PNG')
    expected['train'].append(('happiness', 'nested__deep.png'))
    _save(root / 'train' / 'contempt' / 'c.jpg', _image((9, 9, 9)))  # not a FER2013 class folder
    _save(root / 'train' / 'loose.jpg', _image((9, 9, 9)))  # not in a class folder
    (root / 'train' / 'happy' / 'notes.txt').write_text('not an image')
    _write_truncated(root / 'test' / 'sad' / 'broken.jpg')
    result = export.export_fer2013(root, tmp_path / 'out', verify=True, workers=2)
    for split, pairs in expected.items():
        assert _listing(tmp_path / 'out' / split) == {c: sorted(n for lab, n in pairs if lab == c) for c in FER7_LABELS}
    assert result.manifest['skipped']['by_reason'] == {'unknown_label': 2, 'not_an_image': 1, 'undecodable_image': 1}
    assert result.manifest['layout'] == 'fer2013-folders'
    assert sorted(os.listdir(tmp_path / 'out')) == ['class_map.txt', 'manifest.json', 'test', 'train']



def test_the_extensions_timm_reads_are_timms():
    from timm.data.readers.img_extensions import get_img_extensions
    from timm_msanet.data.records import TIMM_IMAGE_EXTENSIONS
    assert TIMM_IMAGE_EXTENSIONS == get_img_extensions(as_set=True)


@pytest.mark.parametrize('mode,leak_check', [('link', False), ('link', True), ('copy', True)])
def test_images_timm_does_not_read_are_written_as_png_in_link_and_copy_mode(tmp_path, mode, leak_check):
    """timm's ImageFolder reader passes over .webp, .bmp, .gif, ... without a word: linked as they are, train.py
    would train on part of the export. They are decoded and written as PNG with their pixels unchanged, counted in
    the manifest and the summary; JPEG and PNG sources are still linked or copied, byte for byte."""
    from timm.data.readers.reader_image_folder import find_images_and_targets
    root = tmp_path / 'fer2013-folders'
    sources = {}
    for split in ('train', 'test'):
        for k, (fmt, ext) in enumerate((('JPEG', 'jpg'), ('PNG', 'png'), ('WEBP', 'webp'), ('BMP', 'bmp'),
                                        ('GIF', 'gif'), ('JPEG', 'jfif'))):
            img = _image(_color(k + 1), (48, 48)).convert('L')
            kw = {'lossless': True} if fmt == 'WEBP' else {'quality': 100} if fmt == 'JPEG' else {}
            path = root / split / 'happy' / f'{split}_{k}.{ext}'
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, fmt, **kw)
            sources[f'{split}/happiness/{path.stem}'] = path
    _save(root / 'train' / 'happy' / 'train_0.webp', _image((5, 5, 5), (48, 48)), 'WEBP')  # same name as train_0.jpg
    out = tmp_path / 'out'
    result = export.export_fer2013(root, out, mode=mode, leak_check=leak_check, workers=1)
    manifest = result.manifest
    assert manifest['converted_to_png'] == {'.bmp': 2, '.gif': 2, '.jfif': 2, '.webp': 3}
    assert manifest['skipped']['by_reason'] == {}  # train_0.webp -> train_0.png: no clash with train_0.jpg
    found, _ = find_images_and_targets(str(out / 'train'))
    assert len(found) == manifest['splits']['train']['total'] == 7
    for split in ('train', 'test'):
        assert _listing(out / split)['happiness'] == sorted(
            [f'{split}_{k}.{ext}' for k, ext in enumerate(('jpg', 'png', 'png', 'png', 'png', 'png'))]
            + (['train_0.png'] if split == 'train' else []))
    for key, src in sources.items():
        written = out / (key + ('.png' if src.suffix not in ('.jpg', '.png') else src.suffix))
        if src.suffix in ('.jpg', '.png'):
            assert written.read_bytes() == src.read_bytes() and written.is_symlink() == (mode == 'link')
        else:
            assert not written.is_symlink()
            with Image.open(written) as a, Image.open(src) as b:
                assert a.format == 'PNG' and np.array_equal(np.asarray(a.convert('L')), np.asarray(b.convert('L')))
    assert (f'note: 9 images (2 .bmp, 2 .gif, 2 .jfif, 3 .webp) were written as PNG, not '
            f'{"linked" if mode == "link" else "copied"}') in export.format_summary(manifest)


def test_fer2013_folders_with_validation_keep_the_official_split(tmp_path):
    """train/ + validation/ (PublicTest) + test/ (PrivateTest): three splits, PublicTest never merged into test."""
    root = tmp_path / 'fer2013-3split'
    for split, prefix in (('train', 'Training'), ('validation', 'PublicTest'), ('test', 'PrivateTest')):
        for k, folder in enumerate(FOLDER_NAMES.values()):
            _save(root / split / folder / f'{prefix}_{k}.jpg', _image(_color(k), (48, 48)).convert('L'))
    result = export.export_fer2013(root, tmp_path / 'out', workers=1)
    assert result.manifest['split_map'] == {'train/': 'train', 'validation/': 'validation', 'test/': 'test'}
    assert any('validation/ -> validation (PublicTest)' in r for r in result.manifest['rules'])
    assert result.manifest['evaluation_split'] == 'test'
    for split, prefix in (('train', 'Training'), ('validation', 'PublicTest'), ('test', 'PrivateTest')):
        listing = _listing(tmp_path / 'out' / split)
        assert listing == {c: [f'{prefix}_{k}.jpg'] for k, c in enumerate(FOLDER_NAMES)}
    assert sorted(os.listdir(tmp_path / 'out')) == ['class_map.txt', 'manifest.json', 'test', 'train', 'validation']


@pytest.mark.parametrize('name', ['val', 'valid'])
def test_fer2013_folders_named_val_or_valid_are_the_validation_split(tmp_path, name):
    """Other redistributions call PublicTest val/ or valid/: it becomes validation/, never silently dropped (train.py
    would then select checkpoints on the root folder); two validation folders are refused."""
    root = tmp_path / 'fer2013-3split'
    for split in ('train', name, 'test'):
        for k, folder in enumerate(FOLDER_NAMES.values()):
            _save(root / split / folder / f'{split}_{k}.jpg', _image(_color(k), (48, 48)).convert('L'))
    result = export.export_fer2013(root, tmp_path / 'out', workers=1)
    assert result.manifest['split_map'][f'{name}/'] == 'validation'
    assert any(f'{name}/ -> validation (PublicTest)' in r for r in result.manifest['rules'])
    assert _listing(tmp_path / 'out' / 'validation') == {c: [f'{name}_{k}.jpg'] for k, c in enumerate(FOLDER_NAMES)}
    (root / 'validation').mkdir()
    with pytest.raises(parsers.DatasetLayoutError, match=f'has validation/ and {name}/: both name the validation'):
        export.export_fer2013(root, tmp_path / 'out2', workers=1)

def test_fer2013_class_folders_that_are_links_are_read(tmp_path):
    """A tree assembled with `ln -s` (train/happy -> elsewhere/happy): the linked class folders are part of SOURCE;
    an image link inside them that leaves the linked folder is still not read."""
    root, elsewhere = tmp_path / 'fer2013-linked', tmp_path / 'elsewhere'
    for split in ('train', 'test'):
        for k, folder in enumerate(FOLDER_NAMES.values()):
            target = elsewhere / split / folder
            _save(target / f'{split}_{k}.jpg', _image(_color(k), (48, 48)).convert('L'))
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / split / folder).symlink_to(target, target_is_directory=True)
    secret = _save(tmp_path / 'secret.jpg', _image(_color(9), (48, 48)))
    (elsewhere / 'train' / 'happy' / 'leak.jpg').symlink_to(secret)
    result = export.export_fer2013(root, tmp_path / 'out', workers=1, mode='copy')
    for split in ('train', 'test'):
        assert _listing(tmp_path / 'out' / split) == {c: [f'{split}_{k}.jpg'] for k, c in enumerate(FOLDER_NAMES)}
    assert result.manifest['skipped']['by_reason'] == {'outside_source': 1}


def test_a_class_no_entry_carries_is_named_in_the_summary(tmp_path):
    """FER2013 has no contempt: with --classes 8 the folder is empty, and the summary says so and what timm needs."""
    root = tmp_path / 'fer2013-folders'
    for split in ('train', 'test'):
        for k, folder in enumerate(FOLDER_NAMES.values()):
            _save(root / split / folder / f'{split}_{k}.jpg', _image(_color(k), (48, 48)).convert('L'))
    eight = export.export_fer2013(root, tmp_path / 'eight', classes=8, workers=1)
    assert sorted(os.listdir(tmp_path / 'eight' / 'train')) == list(FER8_LABELS)
    summary = export.format_summary(eight.manifest)
    assert 'note: contempt has no image in any split (no fer2013 entry carries that label)' in summary
    assert f"--class-map {tmp_path / 'eight' / 'class_map.txt'}" in summary
    seven = export.export_fer2013(root, tmp_path / 'seven', classes=7, workers=1)
    assert 'note:' not in export.format_summary(seven.manifest)


FERPLUS_HEADER = 'Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF'
VOTE_ORDER = ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust', 'fear', 'contempt', 'unknown', 'NF')


def _votes(**kw: int) -> List[int]:
    return [kw.get(k, 0) for k in VOTE_ORDER]


def make_ferplus(root: Path, fer: FerFixture) -> List[Tuple[str, str, object]]:
    """fer2013new.csv over the FER2013 fixture rows; returns (split, name, label or skip reason) per row."""
    cases = [(_votes(happiness=10), 'happiness'), (_votes(neutral=6, happiness=4), 'neutral'),
             (_votes(contempt=7, unknown=3), 'contempt'), (_votes(sadness=5, anger=5), 'vote_tie'),
             (_votes(unknown=6, NF=4), 'vote_unknown'), (_votes(NF=10), 'vote_not_face'), (_votes(), 'no_votes'),
             (_votes(fear=4, surprise=3, disgust=3), 'fear'), (_votes(anger=9, NF=1), 'anger'),
             (_votes(surprise=8), 'surprise'), (_votes(disgust=5), 'disgust'), (_votes(sadness=2), 'sadness')]
    spec: List[Tuple[str, str, object]] = []
    rows = [FERPLUS_HEADER]
    indices = sorted(fer.good)
    for n, index in enumerate(indices):
        votes, expected = cases[n % len(cases)]
        split = fer.good[index][0]
        name = f'fer{index:07d}.png'
        rows.append(f'{USAGE[split]},{name},' + ','.join(map(str, votes)))
        spec.append((split, name, expected))
    rows.append('Training,,' + ','.join(map(str, _votes(happiness=10))))
    spec.append(('train', '', 'no_image'))
    rows.append('Training,fer0000001.png,' + ','.join(['x'] * 10))
    spec.append(('train', 'fer0000001.png', 'malformed_entry'))
    rows.append('Holdout,fer0000002.png,' + ','.join(map(str, _votes(happiness=10))))
    spec.append(('train', 'fer0000002.png', 'unknown_split'))
    # out of fer2013.csv order (the reader re-reads from the start) and a row past its end
    rows.append(f'PublicTest,fer{indices[0]:07d}.png,' + ','.join(map(str, _votes(surprise=3))))
    spec.append(('validation', f'fer{indices[0]:07d}.png', 'duplicate-or-surprise'))
    rows.append('PrivateTest,fer0999999.png,' + ','.join(map(str, _votes(fear=3))))
    spec.append(('test', 'fer0999999.png', 'missing_image'))
    root.mkdir(parents=True, exist_ok=True)
    (root / 'fer2013new.csv').write_text('\n'.join(rows) + '\n')
    return spec


def test_ferplus_majority_from_csv_and_from_folders(tmp_path):
    fer = make_fer2013_csv(tmp_path / 'fer2013' / 'fer2013.csv')
    spec = make_ferplus(tmp_path / 'FERPlus', fer)
    folders = tmp_path / 'FERPlus-images'
    for index, a in fer.pixels.items():
        split = fer.good[index][0]
        folder = {'train': 'FER2013Train', 'validation': 'FER2013Valid', 'test': 'FER2013Test'}[split]
        _save(folders / folder / f'fer{index:07d}.png', Image.fromarray(a), 'PNG')
    inputs = (tmp_path / 'FERPlus', fer.csv.parent, folders)
    before = [_tree_digest(p) for p in inputs]
    # the out-of-order row re-labels image 0 into validation/surprise: it exists in fer2013.csv but not in
    # FER2013Valid/ (the folder layout keeps it under FER2013Train/), so the two sources differ only there
    moved_split = 'validation'
    for classes in (7, 8):
        names = FER7_LABELS if classes == 7 else FER8_LABELS
        from_csv = export.export_ferplus(tmp_path / 'FERPlus', tmp_path / f'csv{classes}', classes=classes,
                                           fer2013_csv=fer.csv, workers=2)
        from_dir = export.export_ferplus(tmp_path / 'FERPlus', tmp_path / f'dir{classes}', classes=classes,
                                           images_dir=folders, workers=1)
        labelled = [(s, n, e) for s, n, e in spec if e in names]
        for split in ('train', 'validation', 'test'):
            expected = {c: sorted(n for s, n, e in labelled if s == split and e == c) for c in names}
            assert _listing(tmp_path / f'dir{classes}' / split) == expected
            if split == moved_split:
                expected['surprise'] = sorted(expected['surprise'] + [spec[-2][1]])
            assert _listing(tmp_path / f'csv{classes}' / split) == expected
        for s, n, e in labelled:  # the pixels are those of fer2013.csv row N
            with Image.open(tmp_path / f'csv{classes}' / s / str(e) / n) as img:
                assert np.array_equal(np.asarray(img), fer.pixels[int(n[3:10])])
        reasons = _reason_counts([(e, s) for s, n, e in spec[:-2] if e not in names and e not in VOTE_ORDER])
        if classes == 7:
            reasons['excluded_label'] = sum(1 for s, n, e in spec if e == 'contempt')
        csv_reasons = dict(reasons, missing_image=1)
        dir_reasons = dict(reasons, missing_image=2)  # + the out-of-order row: no such file in FER2013Valid/
        assert from_csv.manifest['skipped']['by_reason'] == csv_reasons
        assert from_dir.manifest['skipped']['by_reason'] == dir_reasons
        assert any(FERPLUS_RULE_WORD in r for r in from_csv.manifest['rules'])
    assert [_tree_digest(p) for p in inputs] == before


FERPLUS_RULE_WORD = 'strictly the most votes'


def test_ferplus_finds_images_next_to_its_csv(tmp_path):
    fer = make_fer2013_csv(tmp_path / 'FERPlus' / 'fer2013.csv')
    make_ferplus(tmp_path / 'FERPlus', fer)
    result = export.export_ferplus(tmp_path / 'FERPlus' / 'fer2013new.csv', tmp_path / 'out', workers=1)
    assert result.manifest['layout'] == 'ferplus-fer2013-csv' and result.exported > 0
    with pytest.raises(export.DatasetLayoutError, match='FER2013Train'):
        (tmp_path / 'FERPlus' / 'fer2013.csv').unlink()
        export.export_ferplus(tmp_path / 'FERPlus', tmp_path / 'out2')


def _ferplus_generator_tree(root: Path) -> Dict[str, Dict[str, List[str]]]:
    """FERPlus as its own generator writes it: data/FER2013{Train,Valid,Test}/ with images and label.csv (no
    header: name, face box, 10 votes), plus fer2013new.csv with the same votes; returns the expected listing."""
    votes = {'train': [('happiness', _votes(happiness=9, neutral=1)), ('neutral', _votes(neutral=6, sadness=4)),
                       ('contempt', _votes(contempt=5, neutral=3)), (None, _votes(anger=4, fear=4))],
             'validation': [('surprise', _votes(surprise=7, fear=3)), ('fear', _votes(fear=6))],
             'test': [('sadness', _votes(sadness=8)), ('anger', _votes(anger=5, disgust=4)), (None, _votes(NF=10))]}
    folders = {'train': 'FER2013Train', 'validation': 'FER2013Valid', 'test': 'FER2013Test'}
    csv_rows, expected, n = [FERPLUS_HEADER], {}, 0
    for split, cases in votes.items():
        lines = []
        for label, v in cases:
            name = f'fer{n:07d}.png'
            _save(root / 'data' / folders[split] / name, _image(_color(n), (48, 48)).convert('L'), 'PNG')
            lines.append(f'{name},"(0, 0, 48, 48)",' + ','.join(map(str, v)))
            csv_rows.append(f'{ {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}[split]},'
                            f'{name},' + ','.join(map(str, v)))
            if label is not None:
                expected.setdefault(split, {}).setdefault(label, []).append(name)
            n += 1
        (root / 'data' / folders[split] / 'label.csv').write_text('\n'.join(lines) + '\n')
    (root / 'fer2013new.csv').write_text('\n'.join(csv_rows) + '\n')
    return expected


def test_ferplus_reads_its_generator_layout_data_folder_and_label_csv_votes(tmp_path):
    """fer2013new.csv beside data/ finds the images in data/; data/ (or its parent) without fer2013new.csv takes
    each split folder's label.csv votes: the same export either way."""
    root = tmp_path / 'FERPlus'
    expected = _ferplus_generator_tree(root)
    names = list(FER8_LABELS)

    def listing(out):
        return {split: {c: v for c, v in _listing(out / split).items() if v} for split in expected}
    from_csv = export.export_ferplus(root, tmp_path / 'csv', classes=8, workers=1)
    assert from_csv.manifest['layout'] == 'ferplus-folders' and listing(tmp_path / 'csv') == expected
    (root / 'fer2013new.csv').unlink()
    for source in (root, root / 'data'):
        out = tmp_path / f'labels-{source.name}'
        result = export.export_ferplus(source, out, classes=8, workers=1)
        assert result.manifest['layout'] == 'ferplus-label-csv' and listing(out) == expected
        assert result.manifest['skipped']['by_reason'] == {'vote_tie': 1, 'vote_not_face': 1}
        assert sorted(os.listdir(out / 'train')) == names
    seven = export.export_ferplus(root, tmp_path / 'seven', classes=7, workers=1)
    assert seven.manifest['skipped']['by_reason'] == {'vote_tie': 1, 'vote_not_face': 1, 'excluded_label': 1}
    (root / 'data' / 'FER2013Train' / 'label.csv').write_text('fer0000000.png,"(0, 0, 48, 48)",1,2\n')
    bad = export.export_ferplus(root, tmp_path / 'short', classes=8, workers=1)
    assert bad.manifest['skipped']['by_reason']['malformed_entry'] == 1  # a short row is skipped, not a crash
    for label_csv in (root / 'data').glob('*/label.csv'):
        label_csv.unlink()
    with pytest.raises(export.DatasetLayoutError, match='fer2013new.csv .the FERPlus votes., or split folders'):
        export.export_ferplus(root, tmp_path / 'none')


# ---------------------------------------------------------------------------------------------------
# property-based tests of the parsers: arbitrary input is parsed or skipped with a reason, never a crash

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
any_text = st.text(max_size=60)
file_text = st.text(alphabet=st.characters(blacklist_categories=('Cs',)), max_size=60)


def _check_entry(entry, classes=FER8_LABELS, splits=parsers.SPLITS) -> None:
    assert isinstance(entry, (parsers.Record, parsers.Skip))
    if isinstance(entry, parsers.Skip):
        assert entry.reason in REASONS and entry.split in (None,) + tuple(splits)
        return
    assert entry.split in splits and entry.label in classes
    assert entry.name and '/' not in entry.name and entry.name not in ('.', '..') and '\x00' not in entry.name


rafdb_like = st.builds(lambda p, n, lab: f'{p}_{n} {lab}', st.sampled_from(['train', 'test', 'val', '']), any_text,
                       st.one_of(st.integers(-2, 12).map(str), any_text))


@PROPERTY
@given(st.one_of(any_text, rafdb_like))
def test_property_rafdb_line(line):
    entry = parsers.parse_rafdb_line(line, 'list:1', '/data/Image/aligned')
    if entry is None:
        assert not line.strip()
        return
    _check_entry(entry, FER7_LABELS, ('train', 'test'))
    if isinstance(entry, parsers.Record):
        assert os.path.dirname(entry.path) == '/data/Image/aligned'


csv_field = st.one_of(any_text, st.integers(-3, 12).map(str),
                      st.sampled_from(['Training', 'PublicTest', 'PrivateTest']))


@PROPERTY
@given(st.one_of(st.none(), st.lists(csv_field, max_size=12)), st.booleans(), st.sampled_from([7, 8]))
def test_property_affectnet_row(fields, crop, classes):
    columns = {c: i for i, c in enumerate(parsers.AFFECTNET_COLUMNS)}
    names = FER7_LABELS if classes == 7 else FER8_LABELS
    entry = parsers.parse_affectnet_row(fields, columns, 'training.csv:2', '/data/imgs', 'train', names, crop)
    _check_entry(entry, names)
    if isinstance(entry, parsers.Record):
        assert os.path.commonpath([entry.path, '/data/imgs']) == '/data/imgs'
        assert (entry.box is not None) == crop


@PROPERTY
@given(st.one_of(st.none(), st.lists(csv_field, max_size=5)), st.integers(0, 10 ** 6))
def test_property_fer2013_row(fields, index):
    entry = parsers.parse_fer2013_row(fields, {'emotion': 0, 'pixels': 1, 'Usage': 2}, index, 'fer2013.csv:2')
    _check_entry(entry, FER7_LABELS)
    if isinstance(entry, parsers.Record):
        assert entry.name == f'fer{index:07d}.png' and len(entry.pixels.split()) == 2304


@PROPERTY
@given(st.one_of(st.none(), st.lists(csv_field, max_size=14)), st.sampled_from([7, 8]), st.booleans())
def test_property_ferplus_row(fields, classes, folder):
    columns = {c: i for i, c in enumerate(parsers.FERPLUS_COLUMNS)}
    names = FER7_LABELS if classes == 7 else FER8_LABELS
    entry = parsers.parse_ferplus_row(fields, columns, 'fer2013new.csv:2', names, '/imgs' if folder else None)
    _check_entry(entry, names)
    if isinstance(entry, parsers.Record):
        votes = [int(fields[columns[c]]) for c in VOTE_ORDER]
        winner = VOTE_ORDER.index(entry.label)
        assert all(votes[winner] > v for i, v in enumerate(votes) if i != winner)


@PROPERTY
@given(st.lists(st.integers(0, 5), min_size=10, max_size=10))
def test_property_ferplus_majority(votes):
    label, reason = parsers.ferplus_majority(votes)
    top = max(votes)
    assert (label is None) == bool(reason)
    if label is not None:
        assert votes[VOTE_ORDER.index(label)] == top and votes.count(top) == 1
    else:
        assert reason in REASONS


@PROPERTY
@given(st.lists(st.one_of(file_text, rafdb_like.filter(lambda s: '\x00' not in s)), max_size=15))
def test_property_label_and_csv_files_never_crash(tmp_path_factory, lines):
    """Whole files of arbitrary lines: every entry is a Record or a Skip with a known reason."""
    root = tmp_path_factory.mktemp('prop')
    (root / 'EmoLabel').mkdir()
    (root / 'Image' / 'aligned').mkdir(parents=True)
    body = '\n'.join(l.replace('\r', ' ').replace('\x0b', ' ').replace('\x0c', ' ') for l in lines)
    (root / 'EmoLabel' / 'list_patition_label.txt').write_text(body, encoding='utf-8', errors='surrogateescape')
    entries = list(parsers.plan_rafdb(str(root)).entries)
    assert len(entries) == sum(1 for l in body.split('\n') if l.strip())  # the file is read by \n, not splitlines()
    for e in entries:
        _check_entry(e, FER7_LABELS, ('train', 'test'))
    csv_body = '\n'.join(lines)
    (root / 'fer2013.csv').write_text('emotion,pixels,Usage\n' + csv_body, encoding='utf-8')
    for e in parsers.plan_fer2013(str(root)).entries:
        _check_entry(e, FER7_LABELS)
    (root / 'fer2013new.csv').write_text(FERPLUS_HEADER + '\n' + csv_body, encoding='utf-8')
    for e in parsers.plan_ferplus(str(root)).entries:
        _check_entry(e, FER7_LABELS)


# ---------------------------------------------------------------------------------------------------
# leak check: real photo crops copied across splits (identical bytes, re-encoded, resized)

def _photo_crops(n: int) -> List[Image.Image]:
    skdata = pytest.importorskip('skimage.data')
    out = []
    for name in ('astronaut', 'camera', 'coffee', 'rocket', 'coins', 'moon', 'horse', 'brick'):
        im = Image.fromarray(np.asarray(getattr(skdata, name)(), dtype=np.uint8)).convert('RGB')
        w, h = im.size
        s = min(w, h) // 2
        for fx, fy in ((0, 0), (1, 1)):
            out.append(im.crop((fx * (w - s), fy * (h - s), fx * (w - s) + s, fy * (h - s) + s)).resize((64, 64)))
    return out[:n]


def _jpeg_file(path: Path, img: Image.Image, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, 'JPEG', quality=quality)
    return path


@pytest.fixture
def leaky_fer2013(tmp_path) -> Path:
    """FER2013 folders whose train/ holds two byte copies of test images (one under another label), a half-size
    re-encoded copy of a validation image, and five unrelated photos."""
    root = tmp_path / 'leaky'
    crops = _photo_crops(16)
    a = _jpeg_file(root / 'test' / 'happy' / 'a.jpg', crops[0])
    b = _jpeg_file(root / 'test' / 'sad' / 'b.jpg', crops[1])
    _jpeg_file(root / 'validation' / 'neutral' / 'c.jpg', crops[2])
    _jpeg_file(root / 'test' / 'fear' / 'other.jpg', crops[3])
    (root / 'train' / 'happy').mkdir(parents=True)
    (root / 'train' / 'angry').mkdir(parents=True)
    (root / 'train' / 'happy' / 'a_copy.jpg').write_bytes(a.read_bytes())
    (root / 'train' / 'angry' / 'b_copy.jpg').write_bytes(b.read_bytes())
    _jpeg_file(root / 'train' / 'neutral' / 'c_small.jpg', crops[2].resize((32, 32), Image.Resampling.BICUBIC), 75)
    for i, im in enumerate(crops[4:9]):
        _jpeg_file(root / 'train' / ('surprise', 'disgust')[i % 2] / f'u{i}.jpg', im)
    return root


def test_export_reports_cross_split_copies(leaky_fer2013, tmp_path):
    before = _tree_digest(leaky_fer2013)
    proc = _cli('fer2013', str(leaky_fer2013), str(tmp_path / 'out'), '--workers', '2')
    assert proc.returncode == 0, proc.stderr
    leaks = json.loads((tmp_path / 'out' / 'manifest.json').read_text())['leak_check']
    assert leaks['cross_split'] == {
        'train~validation': {'pairs': 1, 'identical_pairs': 0, 'label_disagreements': 0,
                             'identical_label_disagreements': 0, 'images': {'train': 1, 'validation': 1}},
        'train~test': {'pairs': 2, 'identical_pairs': 2, 'label_disagreements': 1,
                       'identical_label_disagreements': 1, 'images': {'train': 2, 'test': 2}},
    }
    listed = {(p['a']['file'], p['b']['file']) for p in leaks['pairs']}
    assert listed == {('train/happiness/a_copy.jpg', 'test/happiness/a.jpg'),
                      ('train/anger/b_copy.jpg', 'test/sadness/b.jpg'),
                      ('train/neutral/c_small.jpg', 'validation/neutral/c.jpg')}
    assert leaks['hashed'] == 12 and leaks['not_decodable'] == 0 and leaks['dedupe'] is None
    assert 'leak check train~test: 2 pairs (2 byte-identical), 1 with different labels; 2 test images have a ' \
           'copy in train' in proc.stdout
    assert len(list((tmp_path / 'out' / 'train').rglob('*.jpg'))) == 8  # the default only reports
    assert _tree_digest(leaky_fer2013) == before


def test_dedupe_drops_training_copies_only(leaky_fer2013, tmp_path):
    before = _tree_digest(leaky_fer2013)
    result = export.export_fer2013(leaky_fer2013, tmp_path / 'out', dedupe='drop-from-train', workers=2,
                                   balance='oversample')
    dedupe = result.manifest['leak_check']['dedupe']
    assert dedupe['dropped'] == 3 and dedupe['by_class'] == {'anger': 1, 'happiness': 1, 'neutral': 1}
    assert {d['file']: d['copy_of'] for d in dedupe['items']} == {
        'train/anger/b_copy.jpg': ['test/sadness/b.jpg'], 'train/happiness/a_copy.jpg': ['test/happiness/a.jpg'],
        'train/neutral/c_small.jpg': ['validation/neutral/c.jpg']}
    train = tmp_path / 'out' / 'train'
    kept = sorted(p.name for p in train.rglob('*.jpg') if '.oversample' not in p.name)
    assert kept == [f'u{i}.jpg' for i in range(5)]
    assert result.counts('train') == {**{c: 0 for c in FER7_LABELS}, 'surprise': 3, 'disgust': 2}
    assert result.manifest['balance']['counts_after'] == {**{c: 0 for c in FER7_LABELS}, 'surprise': 3, 'disgust': 3}
    assert result.counts('test')['happiness'] == 1 and result.counts('validation')['neutral'] == 1
    assert 'dedupe: dropped 3 training copies' in export.format_summary(result.manifest)
    assert _tree_digest(leaky_fer2013) == before


def test_no_leak_check_keeps_plain_link_mode_threaded(leaky_fer2013, tmp_path):
    result = export.export_fer2013(leaky_fer2013, tmp_path / 'out', leak_check=False)
    assert result.manifest['leak_check'] is None
    assert result.manifest['options']['workers_used']['kind'] == 'thread'
    assert not any(line.startswith('leak check') for line in export.format_summary(result.manifest).splitlines())
    with pytest.raises(export.ExportError, match='--dedupe needs the leak check'):
        export.export_fer2013(leaky_fer2013, tmp_path / 'x', leak_check=False, dedupe='drop-from-train')
    with pytest.raises(export.ExportError, match='--leak-threshold must be in 0..12 bits, got 32'):
        export.export_fer2013(leaky_fer2013, tmp_path / 'x', leak_threshold=32)  # 7.6 GB of pairs on FER2013 before
    assert not (tmp_path / 'x').exists()


def test_the_pairs_a_leak_check_keeps_are_bounded(monkeypatch):
    """More pairs than MAX_GROUP_PAIRS within the threshold: one line, before they are all kept."""
    from timm_msanet.data import leakage
    monkeypatch.setattr(leakage, 'MAX_GROUP_PAIRS', 10)
    images = [leakage.HashedImage(split, 'anger', f'{split}/anger/{i}.png', f'{split}{i}', f'{split}{i}', i)
              for split in ('train', 'test') for i in range(5)]  # hashes 0-4: all within 3 bits of each other
    with pytest.raises(leakage.LeakCheckError, match='more than 10 pairs of images within 12 bits'):
        leakage.cross_split_pairs(images, ('train', 'test'), 12)
    assert len(leakage.cross_split_pairs(images, ('train', 'test'), 0)) == 5  # the same hashes: 5 pairs kept


def test_fer2013_csv_duplicate_pixel_rows_are_identical_pairs(tmp_path):
    rng = np.random.default_rng(3)
    crops = [np.asarray(im.convert('L').resize((48, 48))) for im in _photo_crops(3)]
    shared, other = crops[0], crops[1]
    rows = ['emotion,pixels,Usage',
            f'3,{_pixel_text(shared)},Training',
            f'3,{_pixel_text(shared)},PrivateTest',  # the FER2013 kind of leak: the same pixels in both
            f'4,{_pixel_text(other)},Training',
            f'6,{_pixel_text(crops[2])},PublicTest',
            f'0,{_pixel_text(rng.integers(0, 256, (48, 48), dtype=np.uint8))},PrivateTest']
    csv_path = tmp_path / 'fer2013.csv'
    csv_path.write_text('\n'.join(rows) + '\n')
    result = export.export_fer2013(csv_path, tmp_path / 'out', workers=1)
    leaks = result.manifest['leak_check']
    assert list(leaks['cross_split']) == ['train~test']
    assert leaks['cross_split']['train~test']['identical_pairs'] == 1
    assert [(p['a']['item'], p['b']['item']) for p in leaks['pairs']] == [('fer2013.csv:2', 'fer2013.csv:3')]


# ---------------------------------------------------------------------------------------------------
# OUTPUT races and SOURCE confinement: outputs never destroy user files, inputs never leave SOURCE

def _records(src: Path, n: int, during=None):
    """Records of src/0.png ... ; `during()` runs half-way, while the export is running."""
    for i in range(n):
        if i == n // 2 and during is not None:
            during()
        yield parsers.Record('train', 'happiness', f'{i}.png', f'{i}.png', path=str(src / f'{i}.png'))


@pytest.fixture
def source(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # noise: about 7 KB per PNG, more than the write limit of the copy test
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(src / f'{i}.png')
    return src


def test_export_never_deletes_a_file_put_into_output_while_it_runs(source, tmp_path):
    out = tmp_path / 'out'

    def user_adds_a_file():
        out.mkdir()
        (out / 'notes.txt').write_text('my notes')
    with pytest.raises(Exception, match='changed while the export ran'):
        export.export_records(_records(source, 6, user_adds_a_file), str(out), dataset='fer2013',
                              inputs=[str(source)], splits=('train',), mode='copy', progress=False)
    assert (out / 'notes.txt').read_text() == 'my notes' and sorted(os.listdir(out)) == ['notes.txt']
    assert sorted(os.listdir(tmp_path)) == ['out', 'src']  # no staging folder, no lock left behind


def test_an_overwrite_never_deletes_a_file_put_deep_inside_the_old_export_while_it_runs(source, tmp_path):
    """`export ... --overwrite` over an earlier export, and the user saves OUTPUT/train/happiness/notes.txt while it
    runs: the replace stops, the old export and the notes stay."""
    out = tmp_path / 'out'
    export.export_records(_records(source, 6), str(out), dataset='fer2013', inputs=[str(source)], splits=('train',),
                          mode='copy', progress=False)
    before = sorted(os.listdir(out / 'train' / 'happiness'))

    def user_adds_a_file():
        (out / 'train' / 'happiness' / 'notes.txt').write_text('my notes')
    with pytest.raises(Exception, match='changed while the export ran'):
        export.export_records(_records(source, 6, user_adds_a_file), str(out), dataset='fer2013',
                              inputs=[str(source)], splits=('train',), mode='copy', progress=False, overwrite=True)
    assert (out / 'train' / 'happiness' / 'notes.txt').read_text() == 'my notes'
    assert sorted(os.listdir(out / 'train' / 'happiness')) == sorted(before + ['notes.txt'])
    assert sorted(os.listdir(tmp_path)) == ['out', 'src']


def test_two_exports_to_one_output_one_wins_the_other_says_why(source, tmp_path):
    out = tmp_path / 'out'
    second = {}

    def another_export():
        try:
            export.export_records(_records(source, 6), str(out), dataset='fer2013', inputs=[str(source)],
                                  splits=('train',), progress=False)
        except Exception as e:
            second['error'] = str(e)
    first = export.export_records(_records(source, 6, another_export), str(out), dataset='fer2013',
                                  inputs=[str(source)], splits=('train',), progress=False)
    assert 'is writing' in second['error'] and 'lock' in second['error']
    assert first.manifest['splits']['train']['total'] == 6 and (out / 'manifest.json').is_file()
    # a lock left by a killed export (its pid is gone) does not block the next one
    (tmp_path / '.out.lock').write_text(json.dumps({'pid': 2 ** 22 + 12345, 'host': os.uname().nodename}))
    export.export_records(_records(source, 6), str(out), dataset='fer2013', inputs=[str(source)],
                          splits=('train',), progress=False, overwrite=True)


def test_export_reads_nothing_outside_source_and_no_fifo_or_device(source, tmp_path):
    secret = tmp_path / 'private.png'
    Image.new('RGB', (48, 48), (9, 9, 9)).save(secret)
    (source / 'link_out.png').symlink_to(secret)
    (source / 'zero.png').symlink_to('/dev/zero')
    os.mkfifo(source / 'fifo.png')
    (source / 'inside.png').symlink_to(source / '0.png')  # a link that stays inside SOURCE is fine

    def entries():
        for name in ('0.png', 'link_out.png', 'zero.png', 'fifo.png', 'inside.png'):
            yield parsers.Record('train', 'happiness', name, name, path=str(source / name))
    for mode in ('link', 'copy', 'encode'):
        out = tmp_path / f'out_{mode}'
        done = []
        t = threading.Thread(target=lambda: done.append(export.export_records(
            entries(), str(out), dataset='fer2013', inputs=[str(source)], splits=('train',), mode=mode,
            progress=False)))
        t.start()
        t.join(120)
        assert not t.is_alive(), f'{mode}: the export hangs on the FIFO'
        manifest = done[0].manifest
        assert manifest['skipped']['by_reason'] == {'outside_source': 2, 'not_a_file': 1}, mode
        assert sorted(os.listdir(out / 'train' / 'happiness')) == ['0.png', 'inside.png']
        if mode != 'link':
            assert secret.read_bytes() not in [p.read_bytes() for p in (out / 'train' / 'happiness').iterdir()]


def test_a_failed_copy_leaves_no_truncated_file(source, tmp_path):
    """Copy mode under a file size limit smaller than the images: every write fails (EFBIG); none of the
    partial files stays in the tree that the manifest calls skipped."""
    code = f'''
import resource, signal, json
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from timm_msanet.data.export import export_records
from timm_msanet.data.parsers import Record
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
recs = [Record('train', 'happiness', f'{{i}}.png', f'{{i}}.png', path=f'{source}/{{i}}.png') for i in range(6)]
try:
    export_records(recs, '{tmp_path / "out"}', dataset='fer2013', inputs=['{source}'], splits=('train',),
                   mode='copy', progress=False, leak_check=False)
except Exception as e:
    print(type(e).__name__, e)
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert 'NothingExportedError' in proc.stdout and 'write_error' in proc.stdout, proc.stdout + proc.stderr
    assert not (tmp_path / 'out').exists()
    assert sorted(os.listdir(tmp_path)) == ['src']


def test_fer2013_class_folders_in_capitals_and_skips_named_in_the_summary(tmp_path):
    """Angry/ is angry/; a skip reason in the summary comes with one example of what was found and expected."""
    root = tmp_path / 'fer'
    for split in ('train', 'test'):
        for k, folder in enumerate(('Angry', 'HAPPY', 'Joy')):
            _save(root / split / folder / f'{k}.png', _image(_color(k), (48, 48)).convert('L'), 'PNG')
    result = export.export_fer2013(root, tmp_path / 'out', workers=1)
    assert result.manifest['splits']['train']['classes']['anger'] == 1
    assert result.manifest['splits']['train']['classes']['happiness'] == 1
    summary = export.format_summary(result.manifest)
    assert "unknown_label: e.g. train/Joy/2.png: class folder 'Joy' is not one of angry, disgust" in summary, summary
