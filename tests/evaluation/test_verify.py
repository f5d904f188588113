"""The eval protocol block and `timm-msanet verify`: the packaged FER2013 weights, a release folder written by
`publish --dry-run` from them, and the same release in an offline Hugging Face cache, re-evaluated on a small
ImageFolder split of real photo crops (scikit-image). Agreement, a relabelled image, re-encoded bytes, another
split and a release without numbers are each checked through the real CLI."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from timm_msanet.evaluation.evaluate import evaluate, format_table
from timm_msanet.loading import load_model
from timm_msanet.releases import PUBLISHED, weights_path

from conftest import run_cli

REPO = 'test-org/msanet-verify'


def _cli(*argv, env=None, timeout=600):
    return run_cli(argv, env=dict(os.environ, **(env or {})), timeout=timeout)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """test/ and validation/ splits: 21 + 7 real photo crops in the 7 canonical class folders."""
    skdata = pytest.importorskip('skimage.data')
    root = tmp_path_factory.mktemp('verify_data')
    crops = []
    for name in ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'horse', 'moon'):
        im = Image.fromarray(np.asarray(getattr(skdata, name)(), dtype=np.uint8)).convert('RGB')
        w, h = im.size
        s = min(w, h) // 2
        for fx, fy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            crops.append(im.crop((fx * (w - s), fy * (h - s), fx * (w - s) + s, fy * (h - s) + s)).resize((64, 64)))
    classes = ('anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise')
    for i, im in enumerate(crops):
        split = 'validation' if i % 4 == 3 else 'test'
        d = root / split / classes[i % 7]
        d.mkdir(parents=True, exist_ok=True)
        im.save(d / f'img{i:02d}.jpg', quality=90)
    return root


@pytest.fixture(scope='module')
def release(data, tmp_path_factory):
    """A release folder (publish --dry-run) of the packaged weights with their eval.json on data/test."""
    work = tmp_path_factory.mktemp('verify_release')
    assert _cli('eval', '--data-dir', data, '--split', 'test', '--out', work / 'eval').returncode == 0
    weights = weights_path(PUBLISHED[0])
    proc = _cli('publish', weights, '--repo-id', REPO, '--dataset', 'fer2013', '--eval-json',
                work / 'eval' / 'metrics.json', '--dry-run', work / 'release')
    assert proc.returncode == 0, proc.stderr
    return work / 'release'


def test_protocol_names_data_preprocessing_and_weights(data, tmp_path):
    model = load_model('msanet_r18')
    metrics = evaluate(model, str(data), split='test', workers=0)
    first = metrics['protocol']
    assert f"protocol {first['sha256'][:16]} (21 images" in format_table(metrics)
    assert first['num_images'] == 21 and first['split'] == 'test' and first['tta'] is None
    assert first['class_order'] == sorted(os.listdir(data / 'test'))
    assert first['preprocessing']['input_size'] == [3, 64, 64] and first['preprocessing']['grey_input'] is True
    assert first['checkpoint']['file'] == 'msanet_r18_fer2013.safetensors'
    assert first['checkpoint']['sha256'] == hashlib.sha256(Path(weights_path(PUBLISHED[0])).read_bytes()).hexdigest()
    assert first['weights_sha256'] == PUBLISHED[0]['protocol']['weights_sha256']  # the packaged weights' own hash

    moved = tmp_path / 'elsewhere'  # the same files in another place: the same protocol
    shutil.copytree(data, moved)
    assert evaluate(model, str(moved), split='test', workers=0)['protocol']['sha256'] == first['sha256']
    flipped = evaluate(model, str(data), split='test', workers=0, hflip_tta=True)['protocol']
    assert flipped['tta'] == 'hflip' and flipped['sha256'] != first['sha256']
    bigger = evaluate(load_model('msanet_r18', pretrained_cfg_overlay=dict(input_size=(3, 80, 80))), str(data),
                      split='test', workers=0)['protocol']
    assert bigger['sha256'] != first['sha256'] and bigger['files_sha256'] == first['files_sha256']
    random = evaluate(load_model('msanet_r18', pretrained=False), str(data), split='test', workers=0)['protocol']
    assert random['weights_sha256'] != first['weights_sha256'] and random['checkpoint']['sha256'] is None


def test_verify_a_release_folder_and_what_breaks_it(data, release, tmp_path):
    card = (release / 'README.md').read_text()
    assert f'timm-msanet verify hf-hub:{REPO} --data-dir' in card
    proc = _cli('verify', release, '--data-dir', data, '--out', tmp_path / 'v')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'protocol  same as the release' in proc.stdout and 'verified:' in proc.stdout
    report = json.loads((tmp_path / 'v' / 'verify.json').read_text())
    assert report['agrees'] and report['protocol'] == 'same' and report['same_weights'] is True
    assert [r['metric'] for r in report['metrics']] == ['accuracy', 'mean_class_accuracy', 'ece']
    assert all(r['diff_pp'] == 0 for r in report['metrics'][:2])

    changed = tmp_path / 'changed'  # one image relabelled, another re-encoded
    shutil.copytree(data, changed)
    moved = next((changed / 'test' / 'anger').iterdir())
    moved.rename(changed / 'test' / 'surprise' / moved.name)
    other = next((changed / 'test' / 'fear').iterdir())
    Image.open(other).save(other, quality=60)
    proc = _cli('verify', release, '--data-dir', changed, '--tolerance', '100')
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the figures agree within 100 points ...
    assert 'protocol  DIFFERENT' in proc.stdout and 'files_sha256' in proc.stdout and 'content_sha256' in proc.stdout
    proc = _cli('verify', release, '--data-dir', changed, '--tolerance', '100', '--require-same-protocol')
    assert proc.returncode == 1 and 'NOT verified: the figures agree but the protocol differs' in proc.stdout

    fewer = tmp_path / 'fewer'  # a smaller test split: accuracy moves by whole images
    shutil.copytree(data, fewer)
    for d in (fewer / 'test').iterdir():
        for p in sorted(d.iterdir())[1:]:
            p.unlink()
    proc = _cli('verify', release, '--data-dir', fewer, '--tolerance', '0')
    report_lines = proc.stdout.splitlines()
    assert 'num_images (21 vs 7)' in proc.stdout
    if any(line.endswith('DIFFERS') for line in report_lines):
        assert proc.returncode == 1 and 'NOT verified' in proc.stdout
    else:  # the 7 kept images happen to score exactly as the 21
        assert proc.returncode == 0


def test_verify_errors_are_one_line(data, release, tmp_path):
    proc = _cli('verify', release, '--data-dir', data, '--split', 'validation')
    assert proc.returncode == 2 and "evaluated on split 'test'" in proc.stderr
    bare = tmp_path / 'bare'
    shutil.copytree(release, bare)
    (bare / 'eval.json').unlink()
    proc = _cli('verify', bare, '--data-dir', data)
    assert proc.returncode == 2 and 'has no eval.json' in proc.stderr and 'Traceback' not in proc.stderr
    proc = _cli('verify', 'msanet_r18.tv_in1k', '--data-dir', data)
    assert proc.returncode == 2 and 'msanet_r18.fer2013' in proc.stderr
    proc = _cli('verify', release, '--data-dir', tmp_path / 'nowhere')
    assert proc.returncode == 2 and 'split folder' in proc.stderr
    # the split is a folder name in YOUR data dir: a file cannot choose another folder to evaluate, or crash it
    for split in (5, '/some/folder', '../test', ['test']):
        edited = tmp_path / f'split{len(str(split))}'
        shutil.copytree(release, edited)
        ev = json.loads((edited / 'eval.json').read_text())
        ev['split'] = split
        ev.get('protocol', {}).pop('split', None)
        (edited / 'eval.json').write_text(json.dumps(ev))
        proc = _cli('verify', edited, '--data-dir', data)
        assert proc.returncode == 2 and 'is not a split folder name' in proc.stderr, proc.stderr
        assert 'Traceback' not in proc.stderr


def test_verify_a_release_evaluated_before_protocols_compares_the_figures_only(data, release, tmp_path):
    old = tmp_path / 'old'
    shutil.copytree(release, old)
    ev = json.loads((old / 'eval.json').read_text())
    del ev['protocol']
    ev['accuracy'] = round(ev['accuracy'] * 100, 2)  # a card that quotes percentages
    (old / 'eval.json').write_text(json.dumps(ev))
    proc = _cli('verify', old, '--data-dir', data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'protocol  not recorded with the release' in proc.stdout and 'weights' not in proc.stdout.split('metric')[0]
    proc = _cli('verify', old, '--data-dir', data, '--require-same-protocol')
    assert proc.returncode == 1


def test_verify_the_packaged_tag_on_other_data_disagrees(data):
    proc = _cli('verify', 'msanet_r18', '--data-dir', data)  # the default tag: msanet_r18.fer2013
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'release   msanet_r18.fer2013 (packaged)' in proc.stdout
    assert 'num_images (3589 vs 21)' in proc.stdout and 'weights   the ones evaluated' in proc.stdout


def test_verify_on_an_export_of_another_dataset_names_both(data, tmp_path):
    """A FER2013 release checked against a FERPlus export: the same faces, other labels; said before any work."""
    other = tmp_path / 'ferplus_export'
    shutil.copytree(data, other)
    (other / 'manifest.json').write_text(json.dumps({'dataset': 'ferplus', 'classes': 8}))
    proc = _cli('verify', 'msanet_r18', '--data-dir', other)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'msanet_r18.fer2013 was evaluated on fer2013' in proc.stderr and 'an export of ferplus' in proc.stderr
    (other / 'manifest.json').write_text(json.dumps({'dataset': 'fer2013'}))
    assert 'evaluated on fer2013' not in _cli('verify', 'msanet_r18', '--data-dir', other).stderr


def test_verify_a_hub_release_from_the_offline_cache(data, release, tmp_path, make_offline_hub_cache):
    hf_home = tmp_path / 'hf'
    make_offline_hub_cache(hf_home, REPO, {p.name: p for p in release.iterdir()})
    env = dict(HF_HUB_OFFLINE='1', HF_HOME=str(hf_home))
    proc = _cli('verify', f'hf-hub:{REPO}', '--data-dir', data, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'release   {REPO} (hub)' in proc.stdout and 'protocol  same' in proc.stdout
