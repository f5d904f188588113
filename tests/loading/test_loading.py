"""timm_msanet.loading: what a checkpoint or release config may decide, and how lying files are refused.

A file holds weights and describes its architecture; it must never choose where the loader connects.
Hostile files point at a real HTTP server on 127.0.0.1 that counts requests: every test asserts zero.
Releases are real `save_for_hf` folders, checkpoints real `torch.save` files in train.py's layout.
"""
import argparse
import http.server
import json
import os
import socket
import threading
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from timm.models import save_for_hf

import timm_msanet  # noqa: F401
from timm_msanet.loading import CheckpointError, ExpressionModel, create_published, load_model

from conftest import run_cli


ARCH = 'msanet_r18_ms'


@pytest.fixture
def beacon():
    """An HTTP server on 127.0.0.1 that records every request it gets (and serves nothing)."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}', hits
    server.shutdown()


def _hostile_kwargs(url):
    return {'pretrained': True, 'pretrained_cfg_overlay': {'hf_hub_id': '', 'url': f'{url}/w.pth?beacon=1'}}


def _train_checkpoint(path: Path, model_kwargs=None, **args):
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=7)
    ns = argparse.Namespace(model=ARCH, num_classes=7, img_size=64, model_kwargs=model_kwargs or {}, **args)
    torch.save({'epoch': 1, 'arch': ARCH, 'state_dict': model.state_dict(), 'args': ns}, path)
    return path


def _release(folder: Path) -> Path:
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=7, pretrained_cfg_overlay=dict(input_size=(3, 64, 64)))
    save_for_hf(model, str(folder), safe_serialization=True, model_config={'label_names': list(model.pretrained_cfg['label_names'])})
    return folder


def _edit_config(folder: Path, edit) -> Path:
    cfg_path = folder / 'config.json'
    cfg = json.loads(cfg_path.read_text())
    edit(cfg)
    cfg_path.write_text(json.dumps(cfg))
    return folder


def _image_folder(root: Path) -> Path:
    for i, label in enumerate(('anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise')):
        (root / 'test' / label).mkdir(parents=True)
        Image.new('RGB', (48, 48), (30 * i, 90, 120)).save(root / 'test' / label / 'a.png')
    return root


# ---------------------------------------------------------------------------- a file never steers the loader
def test_checkpoint_model_kwargs_cannot_fetch_a_url_through_eval(beacon, tmp_path):
    url, hits = beacon
    ckpt = _train_checkpoint(tmp_path / 'evil.pth.tar', model_kwargs=_hostile_kwargs(url))
    data = _image_folder(tmp_path / 'data')
    proc = run_cli(['eval', '--checkpoint', ckpt, '--data-dir', data, '--split', 'test', '--out', tmp_path / 'eval'],
                   timeout=300, env=dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf')))
    assert proc.returncode == 2, proc.stderr
    assert 'sets pretrained, pretrained_cfg_overlay among its model arguments' in proc.stderr
    assert 'Traceback' not in proc.stderr and not (tmp_path / 'eval').exists()
    assert hits == []


@pytest.mark.parametrize('key', ['checkpoint_path', 'pretrained_cfg', 'hf_hub_id', 'url', 'file', 'cache_dir'])
def test_every_weight_source_key_in_a_checkpoint_is_refused(beacon, tmp_path, key):
    url, hits = beacon
    value = {'url': f'{url}/x'} if key == 'pretrained_cfg' else f'{url}/x'
    ckpt = _train_checkpoint(tmp_path / 'c.pth.tar', model_kwargs={key: value})
    with pytest.raises(CheckpointError, match=f'sets {key} among its model arguments.*Refused'):
        load_model(checkpoint=ckpt)
    assert hits == []


def test_checkpoint_architecture_args_are_checked_and_unknown_ones_ignored(tmp_path):
    ok = _train_checkpoint(tmp_path / 'ok.pth.tar', model_kwargs={'hierarchy': 'pre', 'global_pool': 'avg',
                                                                   'my_flag': 3})
    with pytest.warns(UserWarning, match='not architecture arguments of msanet_r18_ms: my_flag.*Ignored'):
        model = load_model(checkpoint=ok)
    assert model.num_classes == 7 and model.pretrained_cfg['input_size'] == (3, 64, 64)
    bad = _train_checkpoint(tmp_path / 'bad.pth.tar', model_kwargs={'scale': 10 ** 6})
    with pytest.raises(CheckpointError, match=r'model argument scale=1000000 is not valid; expected an int from 1'):
        load_model(checkpoint=bad)
    huge = _train_checkpoint(tmp_path / 'huge.pth.tar', input_size=(3, 100000, 100000))
    with pytest.raises(CheckpointError, match='not a sane input size'):
        load_model(checkpoint=huge)
    # allowed keys, in-range values, but a 1.4 G-parameter model: refused from the arguments, nothing allocated
    greedy = _train_checkpoint(tmp_path / 'greedy.pth.tar', model_kwargs=dict(
        branch_kernels=[15] * 8, branch_chs=[8192] * 8, branch_strides=[1] * 8, scale=1, bottle_ratio=8.0))
    import resource
    import time
    rss, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(CheckpointError, match='M parameters, more than the 40 M allowed.*refused before building'):
        load_model(checkpoint=greedy)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # KiB: not the 6 GB of building it
    assert time.perf_counter() - started < 20
    classes = _train_checkpoint(tmp_path / 'cls.pth.tar')
    state = torch.load(classes, weights_only=False)
    state['args'].num_classes = '7; rm -rf /'
    torch.save(state, classes)
    with pytest.raises(CheckpointError, match=r"args.num_classes '7; rm -rf /' is not valid"):
        load_model(checkpoint=classes)


def test_release_config_model_args_cannot_fetch_a_url(beacon, tmp_path):
    url, hits = beacon
    folder = _edit_config(_release(tmp_path / 'rel'), lambda c: c['model_args'].update(_hostile_kwargs(url)))
    with pytest.raises(CheckpointError, match='config.json sets pretrained, pretrained_cfg_overlay'):
        create_published(f'local-dir:{folder}')
    folder2 = _edit_config(_release(tmp_path / 'rel2'), lambda c: c['pretrained_cfg'].update(url=f'{url}/w.pth'))
    with pytest.raises(CheckpointError, match='pretrained_cfg sets url.*Refused'):
        load_model(f'local-dir:{folder2}')
    folder3 = _edit_config(_release(tmp_path / 'rel3'), lambda c: c['model_args'].update(act_layer='gelu'))
    with pytest.raises(CheckpointError, match='act_layer.*Refused: remove them'):
        load_model(f'local-dir:{folder3}')
    assert hits == []


# --------------------------------------------------------------------------------------- configs that lie
LYING_CONFIGS = [
    (lambda c: c.update(label_names=['happiness'] * 7), 'label_names must be unique.*happiness'),
    (lambda c: c.update(label_names=['a', 'b']), '2 label_names for a 7-class model'),
    (lambda c: c['pretrained_cfg'].update(label_names=['a', 'b']), '2 label_names for a 7-class model'),
    (lambda c: c['pretrained_cfg'].update(input_size=[3, 100000, 100000]), 'not a sane input size.*16-2048 px'),
    (lambda c: c['pretrained_cfg'].update(mean=[0.5, 0.5]), 'mean .* one finite number per input channel'),
    (lambda c: c.pop('architecture'), 'has no "architecture": expected the timm model name'),
    (lambda c: c.update(architecture='not_a_model'), "architecture 'not_a_model' is not a registered model"),
    # fields that would make the transform or the alignment allocate without bound, or end in a traceback
    (lambda c: c['pretrained_cfg'].update(crop_pct=0.002), r'crop_pct 0.002 is not valid; expected a number in \(0.5'),
    (lambda c: c['pretrained_cfg'].update(crop_pct='abc'), "crop_pct 'abc' is not valid"),
    (lambda c: c['pretrained_cfg'].update(interpolation='evil'), "interpolation 'evil' is not valid; expected one of"),
    (lambda c: c['pretrained_cfg'].update(crop_mode='zoom'), "crop_mode 'zoom' is not valid"),
    (lambda c: c['pretrained_cfg'].update(notes=5), 'notes must be a list of at most 32 strings'),
    (lambda c: c['pretrained_cfg'].update(notes=['face framing: eye_y=0.400 eye_dist=0.0015']),
     'eye height and eye distance are fractions of the crop side between 0.1 and 0.9'),
    (lambda c: c['pretrained_cfg'].update(notes=['face framing: eye_y=0.400 eye_dist=0']), 'between 0.1 and 0.9'),
    (lambda c: c['model_args'].update(branch_kernels=[15] * 8, branch_chs=[8192] * 8, branch_strides=[1] * 8,
                                      scale=1, bottle_ratio=8.0), 'M parameters, more than the 40 M allowed'),
]


@pytest.mark.parametrize('edit, message', LYING_CONFIGS)
def test_a_lying_release_config_is_refused_in_one_line(tmp_path, edit, message):
    folder = _edit_config(_release(tmp_path / 'rel'), edit)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(f'local-dir:{folder}')
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('edit, message', LYING_CONFIGS)
def test_a_lying_config_beside_a_weights_file_is_refused_too(tmp_path, edit, message):
    folder = _edit_config(_release(tmp_path / 'rel'), edit)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(checkpoint=folder / 'model.safetensors')
    assert '\n' not in str(info.value)


def test_a_weights_file_reads_the_config_beside_it(tmp_path):
    names = ['a', 'b', 'c', 'd', 'e', 'f', 'g']
    folder = _edit_config(_release(tmp_path / 'rel'), lambda c: c.update(label_names=names))
    for source in (folder / 'model.safetensors', folder):  # the file, or the save_for_hf folder itself
        model = load_model(checkpoint=source)
        assert type(model).__name__ == 'MSANet' and model.pretrained_cfg['architecture'] == ARCH
        assert model.pretrained_cfg['input_size'] == (3, 64, 64) and model.pretrained_cfg['pool_size'] == (2, 2)
        assert list(model.pretrained_cfg['label_names']) == names
        source = ExpressionModel.of(model).source  # provenance is the record's, not keys in the timm cfg
        assert source.kind == 'checkpoint' and source.config == str(folder / 'config.json')
        assert 'config' not in model.pretrained_cfg and 'checkpoint' not in model.pretrained_cfg
    # the caller still decides: an explicit resolution wins over the file's
    model = load_model(checkpoint=folder / 'model.safetensors', pretrained_cfg_overlay=dict(input_size=(3, 96, 96)))
    assert model.pretrained_cfg['input_size'] == (3, 96, 96) and model.pretrained_cfg['pool_size'] == (3, 3)
    # another file name in the same folder is not paired with that config (it may describe something else)
    (folder / 'other.safetensors').write_bytes((folder / 'model.safetensors').read_bytes())
    model = load_model(model_name=ARCH, checkpoint=folder / 'other.safetensors')
    assert model.pretrained_cfg['input_size'] != (3, 64, 64) and 'config' not in model.pretrained_cfg


def test_a_config_that_does_not_fit_its_weights_or_a_folder_without_weights(tmp_path):
    folder = _edit_config(_release(tmp_path / 'rel'), lambda c: c.update(architecture='msanet_r18_as'))
    with pytest.raises(CheckpointError, match='architecture mismatch: the weights do not fit msanet_r18_as'):
        load_model(checkpoint=folder / 'model.safetensors')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(CheckpointError, match='is a folder without model.safetensors'):
        load_model(checkpoint=tmp_path / 'empty')
    folder = _release(tmp_path / 'rel2')
    (folder / 'config.json').write_text('{"architecture": ')
    with pytest.raises(CheckpointError, match=r'config.json \(the config beside model.safetensors\) is not valid JSON'):
        load_model(checkpoint=folder / 'model.safetensors')


def test_an_honest_release_still_loads(tmp_path):
    model = load_model(f'local-dir:{_release(tmp_path / "rel")}')
    assert model.pretrained_cfg['label_names'][3] == 'happiness'
    assert model.pretrained_cfg['input_size'] == (3, 64, 64)


def test_bad_json_is_named(tmp_path):
    folder = _release(tmp_path / 'rel')
    (folder / 'config.json').write_text('{"architecture": ')
    with pytest.raises(CheckpointError, match='config.json is not valid JSON'):
        load_model(f'local-dir:{folder}')


# ------------------------------------------------------------------------------------------ offline, fast
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]  # closed again when the with block ends: connections are refused


def test_unreachable_hub_fails_at_once_and_cached_files_still_load(tmp_path, make_offline_hub_cache, run_python):
    """No HF_HUB_OFFLINE, a Hub endpoint that refuses connections: no retries (huggingface_hub would retry with
    backoff for about half a minute), the offline error naming the repo, and a cached release loads."""
    hf_home = tmp_path / 'hf'
    rel = _release(tmp_path / 'rel')
    make_offline_hub_cache(hf_home, 'testorg/cached', {n: rel / n for n in ('config.json', 'model.safetensors')})
    env = {'HF_HOME': str(hf_home), 'HF_ENDPOINT': f'http://127.0.0.1:{_closed_port()}', 'HF_HUB_OFFLINE': ''}
    proc = run_python("""
        import huggingface_hub
        from timm_msanet.loading import CheckpointError, create_published
        model = create_published('hf-hub:testorg/cached')
        print('cached', model.num_classes, model.pretrained_cfg['input_size'])
        try:
            create_published('hf-hub:testorg/missing')
        except CheckpointError as e:
            print('missing', e)
        print('flag restored', huggingface_hub.constants.HF_HUB_OFFLINE)
    """, env)
    assert proc.returncode == 0, proc.stderr
    assert 'cached 7 (3, 64, 64)' in proc.stdout
    assert 'missing testorg/missing is not in the local Hugging Face cache' in proc.stdout
    assert 'within 3 s' in proc.stdout and '`hf download testorg/missing`' in proc.stdout
    assert 'flag restored False' in proc.stdout
    assert 'Retrying' not in proc.stderr, proc.stderr[-2000:]


def test_a_hub_release_config_is_checked_the_same_way(beacon, tmp_path, make_offline_hub_cache, run_python):
    url, hits = beacon
    rel = _edit_config(_release(tmp_path / 'rel'), lambda c: c['model_args'].update(_hostile_kwargs(url)))
    hf_home = tmp_path / 'hf'
    make_offline_hub_cache(hf_home, 'testorg/evil', {n: rel / n for n in ('config.json', 'model.safetensors')})
    proc = run_python("""
        from timm_msanet.loading import CheckpointError, load_model
        try:
            load_model(hf_hub='testorg/evil')
        except CheckpointError as e:
            print('refused', e)
    """, {'HF_HOME': str(hf_home), 'HF_HUB_OFFLINE': '1'})
    assert proc.returncode == 0, proc.stderr
    assert 'refused testorg/evil/config.json sets pretrained, pretrained_cfg_overlay' in proc.stdout
    assert hits == []


def test_the_callers_kwargs_apply_to_a_checkpoint_or_are_refused(tmp_path):
    from timm_msanet.loading import ExpressionModel
    ckpt = _train_checkpoint(tmp_path / 'c.pth.tar')
    model = load_model(checkpoint=ckpt, pretrained_cfg_overlay=dict(input_size=(3, 96, 96)), drop_rate=0.25)
    assert model.pretrained_cfg['input_size'] == (3, 96, 96) and model.pretrained_cfg['pool_size'] == (3, 3)
    assert ExpressionModel.of(model).transform()[1]['input_size'] == (3, 96, 96)
    assert model.drop_rate == 0.25
    assert load_model(checkpoint=ckpt).pretrained_cfg['input_size'] == (3, 64, 64)  # the checkpoint's own
    with pytest.raises(ValueError, match='pretrained_cfg cannot apply with a checkpoint'):
        load_model(checkpoint=ckpt, pretrained_cfg={'url': 'x'})
    with pytest.raises(CheckpointError, match='architecture mismatch'):
        load_model(checkpoint=ckpt, branch_kernels=(5,))


def test_label_names_flag_for_a_class_count_without_canonical_names(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=3)
    ckpt = tmp_path / 'three.pth.tar'
    torch.save({'state_dict': model.state_dict(), 'arch': ARCH,
                'args': argparse.Namespace(model=ARCH, num_classes=3, img_size=64)}, ckpt)
    Image.new('RGB', (64, 64), (120, 90, 80)).save(tmp_path / 'face.png')
    base = ['predict', '--checkpoint', str(ckpt), str(tmp_path / 'face.png')]
    env = dict(os.environ, HF_HUB_OFFLINE='1')
    missing = run_cli(base, timeout=300, env=env)
    assert missing.returncode == 2 and '--label-names a,b,c on the command line' in missing.stderr
    ok = run_cli(base + ['--label-names', 'calm,joy,anger', '--json', '-'], timeout=300, env=env)
    assert ok.returncode == 0, ok.stderr
    assert set(json.loads(ok.stdout)[0]['probabilities']) == {'calm', 'joy', 'anger'}
    dup = run_cli(base + ['--label-names', 'a,a,b'], timeout=300, env=env)
    assert dup.returncode == 2 and 'label_names must be unique' in dup.stderr


def test_only_hub_sources_are_probed():
    from timm_msanet.loading import needs_hub
    assert not needs_hub('msanet_r18') and not needs_hub('msanet_r18.fer2013')  # the packaged file
    assert needs_hub('msanet_r18.tv_in1k') and needs_hub('hf-hub:org/repo')
    assert not needs_hub('local-dir:/x') and not needs_hub('msanet_r18.tv_in1k', pretrained=False)


def test_img_size_option_of_every_model_command(tmp_path):
    from timm_msanet.loading import add_model_args, model_from_args
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    model = model_from_args(parser.parse_args(['--model', 'msanet_r18', '--no-pretrained', '--img-size', '96']))
    assert model.pretrained_cfg['input_size'] == (3, 96, 96) and model.pretrained_cfg['pool_size'] == (3, 3)
    model = model_from_args(parser.parse_args(['--checkpoint', str(_release(tmp_path / 'rel')), '--img-size', '112']))
    assert model.pretrained_cfg['input_size'] == (3, 112, 112)
    with pytest.raises(CheckpointError, match='--img-size.*16-2048 px'):
        model_from_args(parser.parse_args(['--model', 'msanet_r18', '--no-pretrained', '--img-size', '4']))


def test_wrapper_prefixes_of_compiled_and_ddp_models_are_stripped(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=7).eval()
    compiled = torch.compile(model)  # its state_dict keys start with `_orig_mod.` (no compilation happens here)
    sd = compiled.state_dict()
    assert all(k.startswith('_orig_mod.') for k in sd)
    torch.save(sd, tmp_path / 'compiled.pth')
    torch.save({'module.' + k: v for k, v in model.state_dict().items()}, tmp_path / 'ddp.pth')
    x = torch.randn(1, 3, 64, 64)
    for name in ('compiled.pth', 'ddp.pth'):
        loaded = load_model(model_name=ARCH, checkpoint=tmp_path / name)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_a_checkpoint_without_a_size_gets_the_data_config_of_the_tag_it_was_trained_from(tmp_path):
    # train.py without --img-size takes the size from the model name's tag: msanet_r18.tv_in1k trains at 224,
    # msanet_r18 (whose default tag is the 64 px FER2013 release) at 64
    torch.manual_seed(0)
    model = timm.create_model('msanet_r18', num_classes=7)
    for name, size in (('msanet_r18.tv_in1k', 224), ('msanet_r18', 64)):
        ns = argparse.Namespace(model=name, num_classes=7, img_size=None, input_size=None)
        path = tmp_path / f'{name}.pth.tar'
        torch.save({'epoch': 1, 'arch': 'msanet_r18', 'state_dict': model.state_dict(), 'args': ns}, path)
        loaded = load_model(checkpoint=path)
        assert loaded.pretrained_cfg['input_size'] == (3, size, size), name
        assert 'notes' not in loaded.pretrained_cfg and 'file' not in loaded.pretrained_cfg  # not the release's


# ------------------------------------------------------------------------------------- pickles never run
def test_pickled_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'PWNED'

    class Payload:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    evil = tmp_path / 'evil.pth.tar'
    torch.save({'arch': ARCH, 'state_dict': {'conv1.weight': torch.zeros(1)}, 'args': Payload()}, evil)
    with pytest.raises(CheckpointError, match='refused to load .*weights_only=True'):
        load_model(checkpoint=evil, model_name=ARCH)
    # every command reads checkpoints through the same loader: publish and eval refuse it the same way
    for argv in (['publish', str(evil), '--repo-id', 'org/x', '--dataset', 'rafdb', '--dry-run', str(tmp_path / 'out')],
                 ['eval', '--checkpoint', str(evil), '--data-dir', str(tmp_path)]):
        proc = run_cli(argv, timeout=300)
        assert proc.returncode == 2 and 'refused to load' in proc.stderr and 'system' in proc.stderr, proc.stderr
    assert not marker.exists() and not (tmp_path / 'out').exists()


# --------------------------------------------------------------------------------------- files that would crash
def test_args_stored_as_tensors_nan_weights_and_odd_label_names_are_one_line_errors(tmp_path):
    for key, value in (('input_size', torch.tensor([3, 64, 64])), ('mean', torch.tensor([0.5, 0.5, 0.5]))):
        path = _train_checkpoint(tmp_path / f'{key}.pth.tar', **{key: value})
        with pytest.raises(CheckpointError, match=f'{key}.*is not') as info:
            load_model(checkpoint=path)
        assert '\n' not in str(info.value)
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=7)
    state = model.state_dict()
    state['head.fc.weight'][0, 0] = float('nan')
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / 'nan.safetensors'),
              metadata={'format': 'pt', 'arch': ARCH})
    with pytest.raises(CheckpointError, match=r'1 weight tensor\(s\) hold NaN or infinite values \(e.g. head.fc'):
        load_model(checkpoint=tmp_path / 'nan.safetensors')
    for name in ('happy\nangry', 'a/b', '\x1b[31mred', 'x' * 65):
        folder = _edit_config(_release(tmp_path / f'rel{len(name)}'), lambda c: c.update(
            label_names=[name] + [f'c{i}' for i in range(6)]))
        with pytest.raises(CheckpointError, match='is not a plain name') as info:
            load_model(f'local-dir:{folder}')
        assert '\n' not in str(info.value)


def test_deeply_nested_json_is_an_error_not_a_recursion(tmp_path):
    folder = _release(tmp_path / 'rel')
    (folder / 'config.json').write_text('[' * 200_000)
    with pytest.raises(CheckpointError, match='nested more than 64 levels'):
        load_model(f'local-dir:{folder}')
    with pytest.raises(CheckpointError, match='nested more than 64 levels'):
        load_model(checkpoint=folder / 'model.safetensors')
    from safetensors.torch import save_file
    model = timm.create_model(ARCH, num_classes=7)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / 'deep.safetensors'),
              metadata={'format': 'pt', 'arch': ARCH, 'args': '{"a": ' + '[' * 200_000 + ']' * 200_000 + '}'})
    with pytest.raises(CheckpointError, match='metadata "args" is not JSON'):
        load_model(checkpoint=tmp_path / 'deep.safetensors')


# Fuzzing the two files a user is handed: config.json beside model.safetensors, and the safetensors metadata.
# Whatever they hold, loading ends in a model or in one CheckpointError line, and never builds a model larger
# than the bound (the process's peak memory stays far below the 1.4 G-parameter model a file could ask for).
from hypothesis import HealthCheck, example, given, settings, strategies as st  # noqa: E402

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 12, 10 ** 12) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30)
CFG_KEYS = ('input_size', 'crop_pct', 'interpolation', 'crop_mode', 'mean', 'std', 'notes', 'pool_size',
            'num_classes', 'label_names', 'test_input_size', 'temperature')
MODEL_KEYS = ('branch_kernels', 'branch_chs', 'branch_strides', 'scale', 'bottle_ratio', 'hierarchy', 'attn_layer',
              'pre_chs', 'pre_depths', 'num_classes', 'in_chans', 'drop_rate')


@pytest.fixture(scope='module')
def fuzz_release(tmp_path_factory):
    return _release(tmp_path_factory.mktemp('fuzz') / 'rel')


def _load_or_one_line(**kwargs):
    import resource
    try:
        load_model(**kwargs)
    except CheckpointError as e:
        assert '\n' not in str(e) and str(e)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 6_000_000  # KiB


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=st.dictionaries(st.sampled_from(CFG_KEYS), JSON_VALUES, max_size=4),
       model_args=st.dictionaries(st.sampled_from(MODEL_KEYS), JSON_VALUES | st.lists(st.integers(1, 9000), max_size=8),
                                  max_size=4))
@example(cfg={}, model_args={'branch_chs': [1]})  # each value within bounds, together no model (found by the fuzzer)
def test_fuzzed_config_json_loads_or_fails_in_one_line(fuzz_release, cfg, model_args):
    config = json.loads((fuzz_release / 'config.json').read_text())
    config['pretrained_cfg'].update(cfg)
    config['model_args'] = model_args
    folder = fuzz_release.parent / 'edited'
    folder.mkdir(exist_ok=True)
    (folder / 'model.safetensors').write_bytes((fuzz_release / 'model.safetensors').read_bytes())
    (folder / 'config.json').write_text(json.dumps(config, allow_nan=True))
    _load_or_one_line(checkpoint=folder / 'model.safetensors')


def test_model_args_that_do_not_fit_together_are_a_one_line_error(fuzz_release, tmp_path):
    config = json.loads((fuzz_release / 'config.json').read_text())
    config['model_args'] = {'branch_chs': [1]}  # one branch's channels for a model with two strides
    (tmp_path / 'model.safetensors').write_bytes((fuzz_release / 'model.safetensors').read_bytes())
    (tmp_path / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: its model arguments \{'branch_chs': \(1,\)\} do not "
                                              r"build msanet_r18_ms: .* must have the same length"):
        load_model(checkpoint=tmp_path / 'model.safetensors')


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.dictionaries(st.sampled_from(('model', 'num_classes', 'img_size', 'input_size', 'mean', 'std',
                                             'model_kwargs', 'in_chans')), JSON_VALUES, max_size=4),
       arch=st.sampled_from([ARCH, 'msanet_r18', 'resnet18', '', 'x' * 300]), temperature=st.text(max_size=12))
def test_fuzzed_safetensors_metadata_loads_or_fails_in_one_line(fuzz_release, args, arch, temperature):
    from safetensors.torch import load_file, save_file
    path = fuzz_release.parent / 'fuzzed.safetensors'
    save_file(load_file(str(fuzz_release / 'model.safetensors')), str(path), metadata={
        'format': 'pt', 'arch': arch, 'args': json.dumps(args, allow_nan=True), 'temperature': temperature})
    _load_or_one_line(checkpoint=path)


def test_a_deeply_nested_setting_in_a_checkpoint_is_one_line(tmp_path):
    """A train.py checkpoint whose args.model_kwargs / args.img_size nest 5,000 lists deep (pickle reads that
    without recursion; repr, == and json.dumps of it do not): refused in one line, not a RecursionError."""
    import sys
    deep = []
    cur = deep
    for _ in range(5000):
        cur.append([])
        cur = cur[0]
    sd = timm.create_model('msanet_r18_ms', num_classes=7).state_dict()
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # only so that torch.save can pickle the crafted value here
    try:
        for key, value in (('model_kwargs', {'scale': deep}), ('img_size', deep)):
            args = argparse.Namespace(model='msanet_r18_ms', num_classes=7, **{key: value})
            torch.save({'state_dict': sd, 'args': args}, tmp_path / f'{key}.pth.tar')
    finally:
        sys.setrecursionlimit(old)
    Image.new('RGB', (32, 32)).save(tmp_path / 'x.png')
    for key in ('model_kwargs', 'img_size'):
        with pytest.raises(CheckpointError, match=f'args.{key} nests lists or dicts more than 8 levels deep'):
            load_model(checkpoint=tmp_path / f'{key}.pth.tar')
    proc = run_cli(['predict', tmp_path / 'x.png', '--checkpoint', tmp_path / 'img_size.pth.tar'], timeout=120)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr and 'levels deep' in proc.stderr, proc.stderr


def test_a_compressed_storage_that_would_unpack_far_beyond_the_file_is_refused_before_unpacking(tmp_path):
    """A real torch.save checkpoint whose storage is re-packed deflated with 256 MiB of zeros behind it: the zip's
    own directory says how much it would unpack to, so it is refused before torch.load allocates anything."""
    import zipfile
    good = tmp_path / 'good.pth.tar'
    torch.save({'state_dict': timm.create_model('msanet_r18_ms', num_classes=7).state_dict()}, good)
    bomb = tmp_path / 'bomb.pth.tar'
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, 'w', zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if '/data/' in info.filename and not dst.namelist().count('bombed'):
                data = data + bytes(256 * 2**20)
                dst.writestr('bombed', b'')
            dst.writestr(info.filename, data)
    assert bomb.stat().st_size < 40 * 2**20
    with pytest.raises(CheckpointError, match='would unpack to'):  # said from the zip directory, before torch.load
        load_model(checkpoint=bomb)
    assert load_model(checkpoint=good).num_classes == 7


def test_an_integer_weight_is_refused_not_cast(tmp_path):
    from safetensors.torch import save_file
    sd = timm.create_model('msanet_r18_ms', num_classes=7).state_dict()
    sd['head.fc.weight'] = (sd['head.fc.weight'] * 100).to(torch.int8)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / 'w.safetensors'),
              metadata={'format': 'pt', 'arch': 'msanet_r18_ms'})
    with pytest.raises(CheckpointError, match='head.fc.weight is torch.int8, not floating point'):
        load_model(checkpoint=tmp_path / 'w.safetensors')


def test_a_batch_is_fitted_to_the_memory_before_anything_is_allocated(tmp_path):
    """Activations are counted on the meta device: a batch that would not fit is shrunk with a warning, an image
    that would not fit alone is one line; a wide config the parameter cap allows, at an allowed 2048 px, is refused
    by predict before it allocates (it used to reach a 4 GiB allocation traceback)."""
    import warnings
    from timm_msanet.loading import activation_bytes, fit_batch
    from timm_msanet.utils.errors import ToolError
    model = timm.create_model('msanet_r18_ms', num_classes=7)
    per_image = activation_bytes(model, (3, 224, 224))
    assert 10 * 2**20 < per_image < 200 * 2**20  # tens of MiB at 224 px
    assert activation_bytes(model, (3, 448, 448)) == pytest.approx(4 * per_image, rel=0.05)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        assert fit_batch(model, (3, 224, 224), 64, budget=5 * per_image) == 5
        assert fit_batch(model, (3, 224, 224), 4, budget=5 * per_image) == 4
    assert len(seen) == 1 and 'batch size 64 shrunk to 5' in str(seen[0].message)
    with pytest.raises(ToolError, match='one image at 224x224 px needs about'):
        fit_batch(model, (3, 224, 224), 1, budget=per_image // 2)
    kwargs = dict(branch_chs=[2048] * 8, branch_strides=[1] * 8, branch_kernels=[1, 1, 1], bottle_ratio=0.01)
    wide = timm.create_model('msanet_r18', num_classes=7, **kwargs)
    save_for_hf(wide, str(tmp_path / 'wide'), model_args=kwargs, safe_serialization=True)  # + config.json
    Image.new('RGB', (64, 64)).save(tmp_path / 'x.png')
    proc = run_cli(['predict', tmp_path / 'x.png', '--checkpoint', tmp_path / 'wide', '--img-size', '2048'],
                   timeout=300)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert 'one image at 2048x2048 px needs about 63' in proc.stderr
