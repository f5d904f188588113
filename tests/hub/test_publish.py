"""`timm-msanet publish` and loading published releases. A tiny model trained for a few steps, real files,
the real CLI in a subprocess, an offline Hugging Face cache; nothing reaches the network."""
import argparse
import json
import os

import pytest
import torch
import timm
from safetensors.torch import load_file, save_file

from timm_msanet.notes import DEFAULT_FRAMING, GREY_INPUT_NOTE, expects_grey_input, framing_of
from timm_msanet import FER7_LABELS, FER8_LABELS
from timm_msanet import releases
from timm_msanet.loading import CheckpointError, create_published, load_model
from timm_msanet.hub.publish import DATASETS, PublishError, publish

from conftest import run_cli

ARCH = 'msanet_r18_ms'
SIZE = 64
REPO = 'testorg/msanet-r18-ms-rafdb'
OFFLINE = dict(HF_HUB_OFFLINE='1')


def _cli(*argv, env=None):
    full_env = dict(os.environ, **OFFLINE, **(env or {}))
    return run_cli(['publish', *argv], env=full_env, timeout=180)


def _logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A train.py-style checkpoint of msanet_r18_ms trained 3 steps at 64 px, with an EMA that differs."""
    from timm.utils import ModelEmaV3
    root = tmp_path_factory.mktemp('trained')
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=7)
    ema = ModelEmaV3(model, decay=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, SIZE, SIZE), torch.randint(0, 7, (4,))
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
    args = argparse.Namespace(model=ARCH, num_classes=7, in_chans=None, img_size=SIZE, input_size=None,
                              epochs=1, batch_size=4, opt='sgd', lr=0.1, weight_decay=2e-5, sched='cosine',
                              model_ema=True, model_ema_decay=0.5, mean=None, std=None, device='cpu',
                              model_kwargs={}, data_dir='/secret/path', pretrained=False)
    ckpt = root / 'model_best.pth.tar'
    torch.save({'epoch': 2, 'arch': ARCH, 'state_dict': model.state_dict(),
                'state_dict_ema': ema.module.state_dict(), 'optimizer': opt.state_dict(), 'args': args,
                'version': 2, 'metric': 42.0}, ckpt)

    x_eval = torch.randn(2, 3, SIZE, SIZE)
    ref = dict(x=x_eval, ema=_logits(ema.module, x_eval), raw=_logits(model, x_eval))
    assert not torch.equal(ref['ema'], ref['raw'])
    ref_file = root / 'ref.safetensors'
    save_file({k: v.contiguous() for k, v in ref.items()}, str(ref_file))

    eval_dir = root / 'eval'
    eval_dir.mkdir()
    cm = [[7 if i == j else (1 if j == (i + 1) % 7 else 0) for j in range(7)] for i in range(7)]
    per_class = {name: dict(precision=0.875, recall=0.875, f1=0.875, support=8) for name in FER7_LABELS}
    (eval_dir / 'eval.json').write_text(json.dumps(dict(
        accuracy=0.875, mean_class_accuracy=0.8642, per_class=per_class, confusion_matrix=cm,
        label_names=list(FER7_LABELS), split='test')))
    (eval_dir / 'confusion_matrix.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 32)
    return dict(root=root, ckpt=ckpt, ref=ref, ref_file=ref_file, eval_json=eval_dir / 'eval.json',
                model=model, ema=ema.module)


@pytest.fixture(scope='module')
def released(trained):
    """The real CLI's --dry-run folder for the trained checkpoint."""
    out = trained['root'] / 'release'
    proc = _cli(trained['ckpt'], '--repo-id', REPO, '--dataset', 'rafdb', '--eval-json', trained['eval_json'],
                '--dry-run', out)
    assert proc.returncode == 0, proc.stderr
    assert 'nothing uploaded' in proc.stdout and 'EMA weights' in proc.stdout
    return out


def test_dry_run_folder_is_safetensors_config_and_card_only(released):
    files = sorted(p.name for p in released.iterdir())
    assert files == ['README.md', 'config.json', 'confusion_matrix.png', 'eval.json', 'model.safetensors']
    for p in released.iterdir():
        assert p.suffix not in ('.bin', '.pth', '.pt', '.tar', '.pkl', '.pickle', '.ckpt')
        head = p.read_bytes()[:4]
        assert not head.startswith(b'\x80') and head != b'PK\x03\x04', f'{p.name} looks like a pickle / torch.save'
    cfg = json.loads((released / 'config.json').read_text())
    assert cfg['architecture'] == ARCH and cfg['num_classes'] == 7
    assert cfg['label_names'] == list(FER7_LABELS)
    pcfg = cfg['pretrained_cfg']
    assert pcfg['label_names'] == list(FER7_LABELS) and pcfg['num_classes'] == 7
    assert pcfg['input_size'] == [3, SIZE, SIZE]  # the training resolution recorded in args.img_size
    assert pcfg['crop_pct'] == 1.0 and pcfg['crop_mode'] == 'squash' and pcfg['interpolation'] == 'bilinear'
    assert pcfg['mean'] == list(timm.data.IMAGENET_DEFAULT_MEAN) and pcfg['std'] == list(timm.data.IMAGENET_DEFAULT_STD)
    assert pcfg['tag'] == 'rafdb' and pcfg['license'] == 'other'
    assert 'hf_hub_id' not in pcfg and 'tv_in1k' not in json.dumps(cfg)  # nothing of the ImageNet source cfg


def test_local_dir_round_trip_is_identical(released, trained):
    ref = trained['ref']
    model = timm.create_model(f'local-dir:{released}', pretrained=True)
    assert torch.equal(_logits(model, ref['x']), ref['ema'])
    assert list(model.pretrained_cfg['label_names']) == list(FER7_LABELS)
    again = create_published(str(released))  # a bare folder path is local-dir
    assert torch.equal(_logits(again, ref['x']), ref['ema'])


def test_offline_hub_cache_round_trip_without_explicit_import(released, trained, tmp_path, make_offline_hub_cache,
        run_python):
    hf_home = tmp_path / 'hf'
    make_offline_hub_cache(hf_home, REPO, {p.name: p for p in released.iterdir()})
    proc = run_python(f"""
        import sys, timm, torch
        from safetensors.torch import load_file
        ref = load_file({str(trained['ref_file'])!r})
        m = timm.create_model('hf-hub:{REPO}', pretrained=True).eval()   # no `import timm_msanet`
        with torch.no_grad():
            assert torch.equal(m(ref['x']), ref['ema'])
        assert list(m.pretrained_cfg['label_names']) == {list(FER7_LABELS)!r}
        from timm_msanet.loading import create_published, CheckpointError
        m2 = create_published('{REPO}').eval()
        with torch.no_grad():
            assert torch.equal(m2(ref['x']), ref['ema'])
        try:
            create_published('hf-hub:testorg/not-cached')
        except CheckpointError as e:
            print('ERROR:', e)
        print('ok')
    """, dict(HF_HOME=str(hf_home), HF_HUB_OFFLINE='1'))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith('ok')
    err = proc.stdout.split('ERROR:')[1]
    assert 'not in the local Hugging Face cache' in err and 'HF_HUB_OFFLINE=1' in err
    assert 'hf download testorg/not-cached' in err


def test_ema_selection_picks_different_weights(trained, tmp_path):
    sd_raw = {k: v for k, v in trained['model'].state_dict().items()}
    sd_ema = {k: v for k, v in trained['ema'].state_dict().items()}
    key = 'head.fc.weight'
    assert not torch.equal(sd_raw[key], sd_ema[key])
    picked = {}
    for name, use_ema in (('auto', None), ('ema', True), ('raw', False)):
        summary = publish(trained['ckpt'], REPO, 'rafdb', dry_run_dir=tmp_path / name, use_ema=use_ema)
        picked[name] = load_file(str(tmp_path / name / 'model.safetensors'))
        card = (tmp_path / name / 'README.md').read_text()
        assert ('EMA (exponential moving average) weights' in card) == (name != 'raw')
        assert summary['weights'] == ('state_dict' if name == 'raw' else 'state_dict_ema')
    for k in sd_raw:
        assert torch.equal(picked['raw'][k], sd_raw[k]) and torch.equal(picked['ema'][k], sd_ema[k])
        assert torch.equal(picked['auto'][k], sd_ema[k])
    # a plain state dict has no EMA to ask for
    plain = tmp_path / 'plain.pth'
    torch.save(sd_raw, plain)
    with pytest.raises(PublishError, match='no EMA|without any'):
        publish(plain, REPO, 'rafdb', dry_run_dir=tmp_path / 'p', use_ema=True, model_name=ARCH)


def test_model_card_renders_metrics_usage_licence_and_citation(released):
    card = (released / 'README.md').read_text()
    assert card.startswith('---\n') and 'library_name: timm' in card and 'license: other' in card
    assert '| accuracy | 87.50 |' in card and '| mean class accuracy | 86.42 |' in card
    assert '| happiness | 87.50 | 87.50 | 87.50 | 8 |' in card
    assert '| anger | 7 | 1 | 0 | 0 | 0 | 0 | 0 |' in card  # confusion matrix row: true anger
    assert '![confusion matrix](confusion_matrix.png)' in card
    # the install that works today (a clone), and the registry line only as what comes later
    assert 'pip install ./timm-msanet' in card and 'once it is on PyPI' in card
    assert f"timm.create_model('hf-hub:{REPO}', pretrained=True)" in card
    rows = [f'| {i} | {name} |' for i, name in enumerate(FER7_LABELS)]
    assert all(r in card for r in rows) and card.index(rows[0]) < card.index(rows[-1])
    assert 'non-commercial research only' in card and 'RAF-DB' in card
    assert 'Ghadai' in card and 'Patra' in card and '@misc{' in card
    assert '| `lr` | `0.1` |' in card and '| `model_ema_decay` | `0.5` |' in card
    assert '/secret/path' not in card  # the data path is not part of the recipe


def test_eval_json_with_another_class_order_is_refused(trained, tmp_path):
    bad = tmp_path / 'eval.json'
    bad.write_text(json.dumps(dict(accuracy=0.5, mean_class_accuracy=0.4, label_names=list(reversed(FER7_LABELS)))))
    with pytest.raises(PublishError, match='class order'):
        publish(trained['ckpt'], REPO, 'rafdb', eval_json=bad, dry_run_dir=tmp_path / 'out')


@pytest.mark.parametrize('content, message', [
    ({'accuracy': 0.5}, 'mean_class_accuracy is missing'),
    ({'accuracy': 0.5, 'mean_class_accuracy': 'x'}, "mean_class_accuracy 'x' is not valid"),
    ({'accuracy': 0.5, 'mean_class_accuracy': 0.4, 'label_names': 5}, "label_names '5' is not valid"),
    ({'accuracy': 0.5, 'mean_class_accuracy': 0.4, 'ece': 0.1}, 'nll and brier beside ece'),
    ({'accuracy': 0.5, 'mean_class_accuracy': 0.4, 'per_class': 5}, "per_class '5' is not valid"),
    ({'accuracy': 0.5, 'mean_class_accuracy': 0.4, 'dataset': 'fer2013'}, 'on fer2013, but --dataset is rafdb'),
    ({'accuracy': 0.5, 'mean_class_accuracy': 0.4, 'protocol': {'weights_sha256': 'f' * 64}}, 'scored other weights'),
    # the same tensors calibrated: its T is not this file's (the card would quote figures its config does not give)
    ({'accuracy': 0.5, 'mean_class_accuracy': 0.4, 'temperature': 0.1913}, 'scored probabilities with T = 0.1913'),
    ({'accuracy': 0.5, 'mean_class_accuracy': 0.4, 'protocol': {'preprocessing': {'grey_input': True}}},
     'scored on grey input'),
    ('{"accuracy": 0.5, "mean_cl', 'is not valid JSON'),
    ('[' * 100_000, 'nested more than 64 levels'),
])
def test_a_partial_or_foreign_eval_json_is_one_line_and_writes_no_folder(trained, tmp_path, content, message):
    bad = tmp_path / 'eval.json'
    bad.write_text(content if isinstance(content, str) else json.dumps(content))
    proc = _cli(trained['ckpt'], '--repo-id', REPO, '--dataset', 'rafdb', '--eval-json', bad, '--dry-run',
                tmp_path / 'out')
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count('\n') == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['eval.json']  # no release folder, no staging left


def test_wrong_model_and_wrong_class_count_are_clear_errors(trained, tmp_path):
    proc = _cli(trained['ckpt'], '--repo-id', REPO, '--dataset', 'rafdb', '--model', 'msanet_r18',
                '--dry-run', tmp_path / 'a')
    assert proc.returncode == 2 and 'architecture mismatch' in proc.stderr and 'msanet_r18_ms' in proc.stderr
    proc = _cli(trained['ckpt'], '--repo-id', REPO, '--dataset', 'affectnet8', '--dry-run', tmp_path / 'b')
    assert proc.returncode == 2 and 'wrong class count' in proc.stderr and '8' in proc.stderr
    assert 'Traceback' not in proc.stderr
    # a bare state dict (no args): a wrong --model fails on the weights, none at all is guessed from them
    sd = tmp_path / 'weights.safetensors'
    save_file(trained['model'].state_dict(), str(sd))
    with pytest.raises(PublishError, match='architecture mismatch.*msanet_r18_as.*keys are missing'):
        publish(sd, REPO, 'rafdb', model_name='msanet_r18_as', dry_run_dir=tmp_path / 'c')
    summary = publish(sd, REPO, 'rafdb', dry_run_dir=tmp_path / 'd')
    assert summary['arch'] == ARCH and summary['weights'] == 'file'


def test_grayscale_eight_class_state_dict_round_trip(tmp_path):
    """A plain state dict (no args) of an 8-class, 1-channel model: classes and channels from the weights."""
    torch.manual_seed(1)
    model = timm.create_model(ARCH, num_classes=8, in_chans=1).eval()
    path = tmp_path / 'gray8.pth'
    torch.save(model.state_dict(), path)
    summary = publish(path, REPO, 'ferplus', dry_run_dir=tmp_path / 'out', model_name=ARCH)
    assert summary['num_classes'] == 8 and summary['label_names'] == list(FER8_LABELS)
    cfg = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert cfg['label_names'] == list(FER8_LABELS) and cfg['pretrained_cfg']['input_size'] == [1, 224, 224]
    loaded = create_published(f'local-dir:{tmp_path / "out"}')
    x = torch.randn(1, 1, SIZE, SIZE)
    assert torch.equal(_logits(loaded, x), _logits(model, x))
    with pytest.raises(PublishError, match='wrong class count.*8 classes.*rafdb'):
        publish(path, REPO, 'rafdb', dry_run_dir=tmp_path / 'out2', model_name=ARCH)


def test_recorded_model_names_with_a_tag_or_another_architecture(trained, tmp_path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(trained['ckpt'], weights_only=True)
    for i, (model_arg, ok) in enumerate(((f'{ARCH}.tv_in1k', True), ('resnet18', False))):
        ckpt['args'].model = ckpt['arch'] = model_arg
        path = tmp_path / f'{i}.pth.tar'
        torch.save(ckpt, path)
        if ok:
            assert publish(path, REPO, 'rafdb', dry_run_dir=tmp_path / f'out{i}')['arch'] == ARCH
        else:
            with pytest.raises(PublishError, match="trained as 'resnet18', not a registered msanet"):
                publish(path, REPO, 'rafdb', dry_run_dir=tmp_path / f'out{i}')


def test_load_errors_say_what_to_do(released, tmp_path):
    with pytest.raises(CheckpointError, match='wrong class count.*7 classes.*not 8'):
        create_published(f'local-dir:{released}', num_classes=8)
    with pytest.raises(CheckpointError, match='architecture mismatch'):
        create_published(f'local-dir:{released}', branch_kernels=(5,))
    with pytest.raises(CheckpointError, match='has no config.json'):
        create_published(f'local-dir:{tmp_path / "missing"}')


def test_dry_run_refuses_a_non_empty_folder(trained, tmp_path):
    (tmp_path / 'old.bin').write_bytes(b'stale')
    with pytest.raises(PublishError, match='not an empty folder'):
        publish(trained['ckpt'], REPO, 'rafdb', dry_run_dir=tmp_path)


def test_releases_lists_the_packaged_releases_and_an_entry_becomes_a_cfg():
    from timm.models import generate_default_cfgs
    from timm_msanet.msanet import _cfg
    packaged = [(e['arch'], e['tag']) for e in releases.PUBLISHED]
    assert packaged == [('msanet_r18', 'fer2013'), ('msanet_r18', 'ferplus')]
    assert all(not e.get('hf_hub_id') for e in releases.PUBLISHED)  # no invented hub ids
    assert releases.DATASETS is DATASETS  # one table of datasets, not two that can disagree
    assert timm.list_pretrained('msanet_r18.*') == ['msanet_r18.fer2013', 'msanet_r18.ferplus', 'msanet_r18.tv_in1k']
    entry = dict(arch='msanet_r18', tag='affectnet8', hf_hub_id='someorg/msanet-r18-affectnet8',
                 dataset='affectnet8', label_names=FER8_LABELS, metrics={'accuracy': 0.6})
    cfgs = releases.published_cfgs(_cfg, [entry])
    assert list(cfgs) == ['msanet_r18.affectnet8']
    cfg = cfgs['msanet_r18.affectnet8']
    assert cfg['hf_hub_id'] == 'someorg/msanet-r18-affectnet8' and cfg['num_classes'] == 8 and 'file' not in cfg
    assert cfg['label_names'] == FER8_LABELS and cfg['crop_mode'] == 'squash' and cfg['input_size'] == (3, 224, 224)
    assert not expects_grey_input(cfg)
    default_cfgs = generate_default_cfgs({'msanet_r18.tv_in1k': _cfg(hf_hub_id='timm/resnet18.tv_in1k'), **cfgs})
    dc = default_cfgs['msanet_r18']
    assert list(dc.tags) == ['tv_in1k', 'affectnet8']  # not flagged default: after tv_in1k
    assert dc.cfgs['affectnet8'].num_classes == 8
    packaged = dict(entry, tag='fer', dataset='fer2013', label_names=FER7_LABELS, hf_hub_id=None,
                    file='weights/x.safetensors', input_size=(3, 48, 48), grey_input=True, default=True)
    cfg = releases.published_cfgs(_cfg, [packaged])['msanet_r18.fer']
    assert cfg['file'] == os.path.join(releases.PACKAGE_DIR, 'weights', 'x.safetensors')
    assert 'hf_hub_id' not in cfg and cfg['input_size'] == (3, 48, 48) and cfg['pool_size'] == (2, 2)
    assert expects_grey_input(cfg)
    framed = dict(packaged, face_framing=dict(eye_y=0.45, eye_dist=0.4))
    assert framing_of(releases.published_cfgs(_cfg, [framed])['msanet_r18.fer']) == dict(eye_y=0.45, eye_dist=0.4)
    assert releases.published_cfgs(_cfg, [packaged, entry], default=True).keys() == {'msanet_r18.fer'}
    for bad, match in ((dict(entry, label_names=FER7_LABELS[::-1]), 'canonical order'),
                       (dict(entry, dataset='ckplus'), 'dataset must be'),
                       (dict(entry, tag='tv_in1k'), 'tag must be'),
                       (dict(entry, hf_hub_id='no-org'), 'ORG/NAME'),
                       (dict(entry, hf_hub_id=None), 'file= .* and/or hf_hub_id='),
                       (dict(packaged, file='../../etc/x.safetensors'), 'inside the package'),
                       (dict(packaged, input_size=(3, 100000, 100000)), 'input_size'),
                       (dict(packaged, face_framing=dict(eye_y=40, eye_dist=0.3)), 'face_framing'),
                       (dict(packaged, protocol={'split': 'test'}), 'protocol must be'),
                       ({k: v for k, v in entry.items() if k != 'metrics'}, 'lacks')):
        with pytest.raises(ValueError, match=match):
            releases.published_cfgs(_cfg, [bad])


def test_a_published_entry_gives_a_cfg_that_loads_the_release(released, trained, tmp_path, make_offline_hub_cache,
                                                               run_python):
    """The cfg one dict of releases.PUBLISHED makes (what msanet.py's literal `default_cfgs` holds for a packaged
    release; tests/test_releases.py keeps the two equal) loads the release through timm's own pretrained path."""
    hf_home = tmp_path / 'hf'
    make_offline_hub_cache(hf_home, REPO, {p.name: p for p in released.iterdir()})
    proc = run_python(f"""
        import timm, torch
        from safetensors.torch import load_file
        from timm_msanet import releases, msanet
        entry = dict(arch={ARCH!r}, tag='rafdb', hf_hub_id={REPO!r}, dataset='rafdb',
                     label_names={tuple(FER7_LABELS)!r}, metrics=dict(accuracy=0.875))
        cfg = releases.published_cfgs(msanet._cfg, [entry])['{ARCH}.rafdb']
        assert releases.published_cfgs(msanet._cfg, [entry], default=True) == {{}}   # not flagged default
        ref = load_file({str(trained['ref_file'])!r})
        m = timm.create_model('{ARCH}', pretrained=True, pretrained_cfg=cfg).eval()
        with torch.no_grad():
            assert torch.equal(m(ref['x']), ref['ema'])
        print('ok', m.pretrained_cfg['hf_hub_id'], m.pretrained_cfg['label_names'] == {tuple(FER7_LABELS)!r})
    """, dict(HF_HOME=str(hf_home), HF_HUB_OFFLINE='1'))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f'ok {REPO} True'


def test_weights_only_writes_float16_safetensors_that_rebuild_at_their_training_size(trained, tmp_path):
    """`publish --weights-only`: the packaged-weights format. eval/predict/publish rebuild the model from
    the file alone at the recorded 64 px (not the architecture's default size), EMA weights by default."""
    from safetensors import safe_open
    from timm_msanet.loading import load_model
    out = tmp_path / 'w' / 'model.safetensors'
    proc = _cli(trained['ckpt'], '--weights-only', out)
    assert proc.returncode == 0, proc.stderr
    assert 'EMA weights' in proc.stdout and 'float16' in proc.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ['model.safetensors']  # no partial file left
    with safe_open(str(out), framework='pt') as f:
        meta = f.metadata()
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    args = json.loads(meta['args'])
    assert meta['arch'] == ARCH and args['img_size'] == SIZE and args['model'] == ARCH
    assert 'data_dir' not in args and 'model_kwargs' not in args and 'device' not in args
    assert meta['checkpoint_weights'] == 'state_dict_ema' and meta['checkpoint_epoch'] == '2'
    model = load_model(checkpoint=out)
    assert model.pretrained_cfg['input_size'] == (3, SIZE, SIZE) and model.pretrained_cfg['architecture'] == ARCH
    assert 'file' not in model.pretrained_cfg and 'notes' not in model.pretrained_cfg
    torch.testing.assert_close(_logits(model, trained['ref']['x']), trained['ref']['ema'], atol=2e-2, rtol=2e-2)
    # the dry-run release of the file keeps the recipe and the size
    proc = _cli(out, '--repo-id', REPO, '--dataset', 'fer2013', '--dry-run', tmp_path / 'rel')
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((tmp_path / 'rel' / 'config.json').read_text())
    assert cfg['pretrained_cfg']['input_size'] == [3, SIZE, SIZE]
    assert GREY_INPUT_NOTE in cfg['pretrained_cfg']['notes']  # FER2013 is grey
    card = (tmp_path / 'rel' / 'README.md').read_text()
    assert 'the model makes it grey' in card and 'byte-identical' in card and '| `img_size` | `64` |' in card
    assert 'the multi-scale branches see 8 x 8 maps and their blocks 4 x 4, 2 x 2' in card  # measured below
    feats = timm.create_model(ARCH, features_only=True, out_indices=(2, 3, 4))(torch.zeros(1, 3, SIZE, SIZE))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 8), (4, 4), (2, 2)]
    assert "convert('L')" not in card  # msanet converts itself: the snippet feeds colour, as timm's scripts do
    # and timm's own loader gives the published folder its grey step, from the config's notes
    released = timm.create_model(f"local-dir:{tmp_path / 'rel'}", pretrained=True)
    assert released.grey_input and not timm.create_model(ARCH, pretrained=False).grey_input
    # one representation of the class order, whichever way the model was loaded
    assert released.pretrained_cfg['label_names'] == load_model(checkpoint=out).pretrained_cfg['label_names']
    assert isinstance(released.pretrained_cfg['label_names'], tuple)
    # wrong targets are refused before anything is written
    (tmp_path / 'dir.safetensors').mkdir()
    for bad, match in ((tmp_path / 'w.pth', 'writes a .safetensors file'),
                       (tmp_path / 'dir.safetensors', 'is a folder')):
        proc = _cli(trained['ckpt'], '--weights-only', bad)
        assert proc.returncode == 2 and match in proc.stderr
    proc = _cli(trained['ckpt'])
    assert proc.returncode == 2 and '--repo-id and --dataset required' in proc.stderr


def test_weights_file_metadata_cannot_choose_kwargs_or_sources(trained, tmp_path):
    """Only the architecture and training settings are read from a weights file's metadata."""
    from timm_msanet.loading import read_checkpoint
    sd = {k: v.contiguous() for k, v in trained['model'].state_dict().items()}
    path = tmp_path / 'hostile.safetensors'
    hostile = dict(model=ARCH, img_size=SIZE, model_kwargs={'pretrained': True},
                   pretrained_cfg_overlay={'url': 'http://127.0.0.1:9/x'}, checkpoint_path='/etc/passwd')
    save_file(sd, str(path), metadata={'format': 'pt', 'arch': ARCH, 'args': json.dumps(hostile)})
    ckpt = read_checkpoint(path)
    assert ckpt.args == dict(model=ARCH, img_size=SIZE)
    bad = tmp_path / 'bad.safetensors'
    save_file(sd, str(bad), metadata={'args': '{not json'})
    with pytest.raises(CheckpointError, match='metadata "args" is not JSON'):
        read_checkpoint(bad)


def test_face_framing_is_recorded_in_the_cfg_and_on_the_card(trained, released, tmp_path):
    out = tmp_path / 'given'
    proc = _cli(trained['ckpt'], '--repo-id', REPO, '--dataset', 'rafdb', '--face-framing', '0.41,0.38',
                '--dry-run', out)
    assert proc.returncode == 0, proc.stderr
    assert 'face framing: eye_y=0.410 eye_dist=0.380 (as given)' in proc.stdout
    assert framing_of(create_published(f'local-dir:{out}').pretrained_cfg) == dict(eye_y=0.41, eye_dist=0.38)
    assert 'eye midpoint at 0.410 of the crop height, eyes 0.380 of its width apart (as given' in \
        (out / 'README.md').read_text()
    # without --face-framing nothing is recorded: aligned faces get FER2013's, and the card says so
    assert framing_of(create_published(f'local-dir:{released}').pretrained_cfg) == DEFAULT_FRAMING
    assert '**Face framing:** not recorded' in (released / 'README.md').read_text()


def test_face_framing_measured_on_the_training_images(trained, framed_faces, tmp_path):
    train = tmp_path / 'train'
    from timm_msanet.inference.faces import FRAMING_MIN_FACES
    # the fewest faces publish measures from: every face is framed exactly, so more only cost detector time
    per_class = FRAMING_MIN_FACES // 2
    framed_faces(train / 'happiness', dict(eye_y=0.43, eye_dist=0.34), per_class)
    framed_faces(train / 'neutral', dict(eye_y=0.43, eye_dist=0.34), per_class)
    n = 2 * per_class
    out = tmp_path / 'measured'
    proc = _cli(trained['ckpt'], '--repo-id', REPO, '--dataset', 'rafdb', '--face-framing', train, '--dry-run', out)
    assert proc.returncode == 0, proc.stderr
    assert f'measured on {n} faces of {n} images in {train}' in proc.stdout
    framing = framing_of(create_published(f'local-dir:{out}').pretrained_cfg)
    assert abs(framing['eye_y'] - 0.43) < 0.02 and abs(framing['eye_dist'] - 0.34) < 0.02, framing
    assert f'measured with `dlib` on {n} training faces (of {n} images)' in (out / 'README.md').read_text()


@pytest.mark.parametrize('value, message', [
    ('0.41', 'no such folder; expected a folder of training images or EYE_Y,EYE_DIST'),
    ('41,38', 'between 0.1 and 0.9'),
    ('x,y', 'expected EYE_Y,EYE_DIST'),
    ('blanks', 'found a face in 0 of 3 images'),
    ('empty', 'no image files in it'),
])
def test_bad_face_framing_is_one_clear_line_and_writes_nothing(trained, tmp_path, value, message):
    pytest.importorskip('dlib')
    from PIL import Image
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'blanks').mkdir()
    for i in range(3):
        Image.new('RGB', (64, 64), (60 * i, 90, 120)).save(tmp_path / 'blanks' / f'{i}.png')
    arg = str(tmp_path / value) if value in ('blanks', 'empty') else value
    proc = _cli(trained['ckpt'], '--repo-id', REPO, '--dataset', 'rafdb', '--face-framing', arg,
                '--dry-run', tmp_path / 'out')
    assert proc.returncode == 2 and message in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
    assert not (tmp_path / 'out').exists()


def test_a_models_facts_travel_with_its_weights_file(trained, tmp_path):
    """Dataset, grey input and face framing are written into the weights file when they become known (--weights-only),
    kept by calibrate, applied by every load of the file, and used by publish without being given again."""
    import torch as _torch
    from safetensors import safe_open
    from timm_msanet.evaluation.calibration import save_calibrated_weights
    from timm_msanet.loading import ExpressionModel
    from timm_msanet.notes import GREY_INPUT_NOTE, expects_grey_input, recorded_framing
    weights = tmp_path / 'w.safetensors'
    proc = _cli(trained['ckpt'], '--weights-only', weights, '--dataset', 'fer2013', '--face-framing', '0.41,0.36')
    assert proc.returncode == 0 and 'trained on fer2013' in proc.stdout, proc.stderr
    with safe_open(str(weights), 'pt') as f:
        meta = f.metadata()
    assert meta['dataset'] == 'fer2013' and json.loads(meta['notes']) == [
        GREY_INPUT_NOTE, 'face framing: eye_y=0.410 eye_dist=0.360']
    model = load_model(checkpoint=weights)
    assert expects_grey_input(model.pretrained_cfg)
    # the file holds the EMA weights only: --no-ema has nothing to score, and says so instead of scoring them
    with pytest.raises(CheckpointError, match='no raw weights for --no-ema'):
        load_model(checkpoint=weights, use_ema=False)
    from timm_msanet.evaluation.evaluate import format_table
    from timm_msanet.loading import ExpressionModel
    source = ExpressionModel.of(model).source
    assert source.entry == 'file' and source.entry_origin == 'state_dict_ema' and source.ema is True
    line = format_table(dict(per_class={}, accuracy=0.5, mean_class_accuracy=0.5, num_samples=2, weights='ema',
                             weights_file=True))
    assert 'as a weights file (its only weights)' in line and '--no-ema' not in line
    assert recorded_framing(model.pretrained_cfg) == dict(eye_y=0.41, eye_dist=0.36)
    # the file alone is preprocessed as the release is: the model makes a colour image grey in its forward
    from PIL import Image
    colour = Image.new('RGB', (SIZE, SIZE), (200, 30, 30))
    assert model.grey_input
    x = model.input_grey(ExpressionModel.of(model).transform()[0](colour).unsqueeze(0))[0]
    assert _torch.allclose(x[0] * 0.229 + 0.485, x[1] * 0.224 + 0.456, atol=1e-5)
    # calibrate keeps them, and publish takes dataset and framing from the file
    calibrated = save_calibrated_weights(model, tmp_path / 'cal.safetensors', 1.25, 'validation', str(weights))
    model2 = load_model(checkpoint=calibrated)
    assert expects_grey_input(model2.pretrained_cfg) and recorded_framing(model2.pretrained_cfg)
    out = tmp_path / 'release'
    proc = _cli(calibrated, '--repo-id', REPO, '--dataset', 'fer2013', '--dry-run', out)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / 'config.json').read_text())
    assert 'face framing: eye_y=0.410 eye_dist=0.360' in config['pretrained_cfg']['notes']
    assert 'as given' in (out / 'README.md').read_text()
    # the release keeps the dtype it was given (a float16 file stays float16, about half the bytes of float32)
    def float_dtypes(path):
        with safe_open(str(path), 'pt') as f:
            return {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()}
    assert float_dtypes(calibrated) == float_dtypes(out / 'model.safetensors') == {_torch.float16}
    proc = _cli(calibrated, '--repo-id', REPO, '--dataset', 'rafdb', '--dry-run', tmp_path / 'other')
    assert proc.returncode == 2 and 'trained on fer2013, but --dataset is rafdb' in proc.stderr


def test_weights_only_reads_the_dataset_from_the_training_export(trained, tmp_path):
    """Without --dataset, the dataset comes from the export manifest of train.py's data folder."""
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'manifest.json').write_text(json.dumps({'format': 'timm-msanet-export/1', 'dataset': 'ferplus'}))
    state = torch.load(trained['ckpt'], weights_only=False)
    state['args'].data_dir = str(data)
    ckpt = tmp_path / 'ckpt.pth.tar'
    torch.save(state, ckpt)
    proc = _cli(ckpt, '--weights-only', tmp_path / 'w.safetensors')
    assert proc.returncode == 0 and 'trained on ferplus' in proc.stdout, proc.stdout + proc.stderr
    from timm_msanet.notes import expects_grey_input
    assert expects_grey_input(load_model(checkpoint=tmp_path / "w.safetensors").pretrained_cfg)
    proc = _cli(trained['ckpt'], '--weights-only', tmp_path / 'w2.safetensors')  # data_dir /secret/path: unknown
    assert proc.returncode == 0 and 'dataset unknown (give --dataset)' in proc.stdout
