"""timm's own train.py / validate.py / inference.py / benchmark.py find the models by name, no flag.

The scripts live in the timm repository, not in its wheel or sdist, so this runs when TIMM_REPO points
at a checkout of it (CI has no network to fetch one; see docs/models.md for the recorded run).
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from conftest import run_cli, write_folded_resnet18

TIMM_REPO = os.environ.get('TIMM_REPO')
pytestmark = pytest.mark.skipif(
    not TIMM_REPO or not Path(TIMM_REPO, 'train.py').is_file(),
    reason='set TIMM_REPO to a checkout of the timm repository to run its scripts')


@pytest.fixture(scope='module')
def face_data(tmp_path_factory):
    spec = importlib.util.spec_from_file_location('demo', Path(__file__).parent.parent / 'examples' / 'demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    root = tmp_path_factory.mktemp('faces')
    demo.make_dataset(root, per_class_train=6, per_class_val=3)
    return root


def _script(name, *args, cwd):
    # PYTHONSAFEPATH (python -P, as the README runs them): a checkout's own timm/ folder must not shadow the installed
    env = dict({k: v for k, v in os.environ.items() if k != 'TIMM_MSANET_AUTOLOAD'}, PYTHONSAFEPATH='1')
    proc = subprocess.run([sys.executable, str(Path(TIMM_REPO) / name), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_validate_inference_benchmark(face_data, tmp_path):
    common = ['--img-size', 64, '-j', 0, '--device', 'cpu']
    out = _script('train.py', face_data, '--model', 'msanet_r18', '--train-split', 'train', '--val-split',
                  'validation', '--num-classes', 7, '-b', 8, '--epochs', 1, '--output', tmp_path, '--experiment',
                  'run', '--layer-decay', 0.8, '--drop-path', 0.1, '--amp', '--amp-dtype', 'bfloat16', *common,
                  cwd=tmp_path)
    assert 'Model msanet_r18 created' in out
    ckpt = tmp_path / 'run' / 'model_best.pth.tar'
    assert ckpt.is_file()

    out = _script('validate.py', face_data, '--split', 'validation', '--model', 'msanet_r18', '--num-classes', 7,
                  '--checkpoint', ckpt, '-b', 8, '--results-file', tmp_path / 'val.json', '--results-format', 'json',
                  *common, cwd=tmp_path)
    result = json.loads((tmp_path / 'val.json').read_text())
    assert result['model'] == 'msanet_r18' and 0 <= result['top1'] <= 100

    pytest.importorskip('pandas')  # inference.py's own dependency
    _script('inference.py', face_data / 'validation', '--model', 'msanet_r18', '--num-classes', 7, '--checkpoint',
            ckpt, '-b', 8, '--label-type', 'name', '--topk', 1, '--results-dir', tmp_path / 'inf', *common,
            cwd=tmp_path)
    csv_text = next((tmp_path / 'inf').glob('*.csv')).read_text()
    assert csv_text.count('\n') == 7 * 3 + 1
    assert any(name in csv_text for name in ('anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness'))

    out = _script('benchmark.py', '--model', 'msanet_r18', '--bench', 'inference', '-b', 2, '--num-bench-iter', 5,
                  '--num-warm-iter', 1, '--img-size', 64, '--device', 'cpu', cwd=tmp_path)
    assert '"param_count": 3.73' in out


def _example(name, *args, cwd):
    script = Path(__file__).resolve().parent.parent / 'examples' / name
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_table3_study_writes_the_comparison(face_data, tmp_path):
    out = tmp_path / 'table3'
    argv = ['--timm-repo', TIMM_REPO, '--data-dir', face_data, '--out', out, '--eval-split', 'validation',
            '--seeds', 0, 1, '--variants', 'msanet_r18:hierarchy=post', '--', '--train-split', 'train',
            '--val-split', 'validation', '--num-classes', 7, '--img-size', 64, '-b', 8, '--epochs', 1, '-j', 0]
    first = _example('table3_study.py', *argv, cwd=tmp_path)
    rows = json.loads((out / 'table3.json').read_text())
    models = ['resnet18', 'msanet_r18_ms', 'msanet_r18_as', 'msanet_r18']
    assert [(r['model'], r['seed']) for r in rows] == [(m, 0) for m in models] + [('msanet_r18', 0)] + \
        [(m, 1) for m in models]
    assert [r['variant'] for r in rows].count('hierarchy=post') == 1
    for r in rows:
        assert 0 <= r['accuracy'] <= 1 and 0 <= r['mean_class_accuracy'] <= 1
        assert sum(c['support'] for c in r['per_class'].values()) == 7 * 3
        assert r['train_images_per_s'] > 0 and r['params_m'] > 0 and r['img_size'] == 64
        assert r['precision'] == 'recipe'  # no --recipe: train.py's own defaults and the flags after --
    assert {r['params_m'] for r in rows if r['model'] == 'resnet18'} == {11.18}  # 7-class head, not 1000
    table = (out / 'table3.md').read_text()
    assert '| msanet_r18 | MSA-Net |' in table and '| msanet_r18 (hierarchy=post) | MSA-Net |' in table
    assert 'seed 0 / 1' in table and '86.32' in table
    again = _example('table3_study.py', *argv, cwd=tmp_path)  # finished runs are not repeated
    assert again.count('done before') == 9 and 'done before' not in first
    assert json.loads((out / 'table3.json').read_text()) == rows


def test_table3_study_keeps_the_precision_its_runs_started_with(tmp_path):
    """A study resumed with another precision than its started runs is refused before any training."""
    recipe = Path(__file__).parent.parent / 'examples' / 'recipes' / 'ferplus_in1k.yaml'
    run = tmp_path / 'out' / 'resnet18'
    run.mkdir(parents=True)
    (run / 'args.yaml').write_text(yaml.safe_dump(dict(amp=False, amp_dtype='float16', epochs=40)))  # as train.py
    (run / 'last.pth.tar').write_bytes(b'')
    proc = subprocess.run([sys.executable, str(Path(__file__).parent.parent / 'examples' / 'table3_study.py'),
                           '--timm-repo', TIMM_REPO, '--data-dir', str(tmp_path), '--out', str(tmp_path / 'out'),
                           '--recipe', str(recipe), '--precision', 'bf16'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'started with --precision fp32' in proc.stderr and 'Traceback' not in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == ['args.yaml', 'last.pth.tar']


def test_table3_study_refuses_a_recipe_that_is_not_one(tmp_path):
    listed = tmp_path / 'listed.yaml'
    listed.write_text('- epochs\n- 3\n')
    proc = subprocess.run([sys.executable, str(Path(__file__).parent.parent / 'examples' / 'table3_study.py'),
                           '--timm-repo', TIMM_REPO, '--data-dir', str(tmp_path), '--out', str(tmp_path / 'out'),
                           '--recipe', str(listed), '--precision', 'fp32'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and 'expected a YAML mapping of train.py options' in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr and sorted(p.name for p in (tmp_path / 'out').iterdir()) == []


def test_train_smoke_records_runs(tmp_path):
    out = tmp_path / 'smoke'
    _example('train_smoke.py', '--timm-repo', TIMM_REPO, '--out', out, '--device', 'cpu', '--models', 'msanet_r18',
             cwd=tmp_path)
    record = json.loads((out / 'smoke.json').read_text())
    assert record['device'] == 'cpu' and record['runs'][0]['model'] == 'msanet_r18'
    assert float(record['runs'][0]['last_epoch']['train_loss']) > 0


def _cli(*args, cwd):
    proc = run_cli(args, cwd=cwd, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_readme_end_to_end_path(tmp_path):
    """export rafdb -> train.py -> eval -> publish --dry-run -> load, on a RAF-DB-layout tree of drawn faces."""
    spec = importlib.util.spec_from_file_location('demo', Path(__file__).parent.parent / 'examples' / 'demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    import random
    rafdb_label = {'surprise': 1, 'fear': 2, 'disgust': 3, 'happiness': 4, 'sadness': 5, 'anger': 6, 'neutral': 7}
    src = tmp_path / 'RAF-DB'
    (src / 'EmoLabel').mkdir(parents=True)
    (src / 'Image' / 'aligned').mkdir(parents=True)
    rng, lines = random.Random(0), []
    for split, n in (('train', 6), ('test', 2)):
        for label, code in rafdb_label.items():
            for i in range(n):
                name = f'{split}_{len(lines) + 1:05d}.jpg'
                demo.draw_face(label, rng, size=100).save(src / 'Image' / 'aligned' / name.replace('.jpg', '_aligned.jpg'))
                lines.append(f'{name} {code}')
    (src / 'EmoLabel' / 'list_patition_label.txt').write_text('\n'.join(lines) + '\n')

    data = tmp_path / 'data' / 'rafdb'
    _cli('export', 'rafdb', src, data, cwd=tmp_path)
    recipe = Path(__file__).resolve().parent.parent / 'examples' / 'recipes' / 'paper_rafdb.yaml'
    # the paper recipe, shrunk to one CPU epoch at 64 px and without the ImageNet download
    cfg_text = recipe.read_text().replace('pretrained: true', 'pretrained: false')
    local_recipe = tmp_path / 'paper_rafdb_offline.yaml'
    local_recipe.write_text(cfg_text)
    _script('train.py', data, '--config', local_recipe, '--output', tmp_path / 'runs', '--experiment',
            'msanet_r18_rafdb', '--epochs', 1, '--img-size', 64, '-b', 8, '-j', 0, '--device', 'cpu', cwd=tmp_path)
    ckpt = tmp_path / 'runs' / 'msanet_r18_rafdb' / 'model_best.pth.tar'
    _cli('eval', '--checkpoint', ckpt, '--data-dir', data, '--split', 'test', '--out', tmp_path / 'eval',
         '--workers', 0, cwd=tmp_path)
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert metrics['num_samples'] == 7 * 2 and metrics['model'] == 'msanet_r18'
    _cli('publish', ckpt, '--repo-id', 'someorg/msanet-r18-rafdb', '--dataset', 'rafdb', '--eval-json',
         tmp_path / 'eval' / 'metrics.json', '--dry-run', tmp_path / 'release', cwd=tmp_path)
    card = (tmp_path / 'release' / 'README.md').read_text()
    assert 'pip install timm-msanet' in card and f"{metrics['accuracy'] * 100:.2f}" in card

    import timm
    import torch
    from timm_msanet.loading import load_model
    released = timm.create_model(f'local-dir:{tmp_path / "release"}', pretrained=True).eval()
    trained = load_model(checkpoint=ckpt)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(released(x), trained(x))
    assert list(released.pretrained_cfg['label_names']) == metrics['label_names']


def test_release_script_end_to_end(face_data, tmp_path):
    """examples/release.sh fer2013 on a FER2013-layout folder tree of drawn faces, shrunk to one epoch:
    export -> ImageNet start from a folded export -> train.py -> float16 weights -> calibrate -> eval on test
    and validation -> publish --dry-run; rerun resumes."""
    from PIL import Image
    folder = {'anger': 'angry', 'disgust': 'disgust', 'fear': 'fear', 'happiness': 'happy', 'neutral': 'neutral',
              'sadness': 'sad', 'surprise': 'surprise'}
    src = tmp_path / 'fer2013'
    for split, from_split in (('train', 'train'), ('validation', 'validation'), ('test', 'validation')):
        for label, name in folder.items():
            (src / split / name).mkdir(parents=True)
            for i, f in enumerate(sorted((face_data / from_split / label).iterdir())):
                Image.open(f).convert('L').resize((48, 48)).save(src / split / name / f'{split}_{i}.png')
    script = Path(__file__).resolve().parent.parent / 'examples' / 'release.sh'
    folded = tmp_path / 'folded'
    folded.mkdir()
    write_folded_resnet18(folded)
    env = dict(os.environ, PATH=f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}',
               PYTHON=sys.executable, HF_HUB_OFFLINE='1')
    work = tmp_path / 'work'
    # drawn faces have no landmarks for dlib to measure a framing on: it is given
    cmd = ['bash', str(script), 'fer2013', str(src), str(work), '--timm-repo', TIMM_REPO, '--in1k-weights', str(folded),
           '--face-framing', '0.4,0.35', '--', '--epochs', '1', '-b', '8', '-j', '0']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    commands = (work / 'commands.txt').read_text()
    for step in ('timm-msanet export fer2013', 'convert_tv_in1k.py', '--pretrained-path', 'train.py', '--weights-only',
                 'timm-msanet calibrate', '--split test',
                 '--split validation', '--dry-run'):
        assert step in commands, step
    assert sorted(p.name for p in (work / 'release').iterdir()) == [
        'README.md', 'config.json', 'confusion_matrix.png', 'eval.json', 'model.safetensors', 'reliability.png']
    ev = json.loads((work / 'eval' / 'msanet_r18' / 'test' / 'metrics.json').read_text())
    assert ev['num_samples'] == 7 * 3 and ev['split'] == 'test'
    # train.py started from the converted conv1..layer2: a few warm-up steps leave the stem next to them
    start = load_file(str(next(work.glob('start_tv_in1k_fer2013_*px.safetensors'))))
    assert sorted({k.split('.')[0] for k in start}) == ['bn1', 'conv1', 'layer1', 'layer2']
    released = load_file(str(work / 'release' / 'model.safetensors'))
    stem = start['conv1.weight']
    assert (released['conv1.weight'].float() - stem).abs().max() < 0.05 * stem.abs().max()
    # the temperature fitted on validation travels with the weights into the release (recorded to 4 decimals)
    calib = json.loads((work / 'calibration' / 'msanet_r18' / 'calibration.json').read_text())
    assert calib['fit_split'] == 'validation' and ev['temperature'] == pytest.approx(calib['temperature'], abs=5e-5)
    card = (work / 'release' / 'README.md').read_text()
    assert f"(logits / {calib['temperature']:.4f})" in card and '| before (T = 1) |' in card
    assert 'face framing: eye_y=0.400 eye_dist=0.350' in (work / 'release' / 'config.json').read_text()
    # a rerun reuses the export and the finished training, and redoes only the cheap steps
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / 'commands.txt').read_text().count('train.py') == 1
    # the recipe's bf16 autocast only where it is native; otherwise fp32 from a copy that says so
    from timm_msanet.utils.precision import native_bf16
    ran = yaml.safe_load((work / 'train' / 'msanet_r18' / 'args.yaml').read_text())  # train.py's own record
    assert ran['amp'] is native_bf16('cpu')
    precision = 'recipe' if ran['amp'] else 'fp32'
    copy = work / 'recipe_fer2013_in1k_fp32.yaml'
    assert (f'--config {copy}' in commands) == (precision == 'fp32') == copy.is_file()
    # a finished run is not taken on with another precision
    other = 'bf16' if precision == 'fp32' else 'fp32'
    at = cmd.index('--')
    proc = subprocess.run(cmd[:at] + ['--precision', other] + cmd[at:], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 2 and f'started with --precision {precision}' in proc.stderr, proc.stderr[-3000:]
    assert (work / 'commands.txt').read_text().count('train.py') == 1
