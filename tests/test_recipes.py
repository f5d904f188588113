"""Training recipes for timm's train.py: the loss-weight folding and the YAML files themselves."""
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import timm
import yaml

RECIPES = Path(__file__).resolve().parent.parent / 'examples' / 'recipes'
BETA = 0.6


def _train(loss_scale, lr, wd, steps=3):
    torch.manual_seed(0)
    model = timm.create_model('msanet_r18_ms', num_classes=7).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 3, 32, 32, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 7, (4,), generator=gen)
        loss = loss_scale * F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.state_dict()


def test_beta_scaled_loss_equals_scaled_lr_and_weight_decay():
    lr, wd = 0.1, 1e-4
    paper = _train(BETA, lr, wd)                 # the paper: beta * CE with (lr, wd)
    folded = _train(1.0, BETA * lr, wd / BETA)   # train.py: CE with (beta*lr, wd/beta)
    naive = _train(1.0, lr, wd)                  # dropping beta is not the same training
    for k, v in paper.items():
        if v.is_floating_point():
            torch.testing.assert_close(folded[k], v, rtol=1e-9, atol=1e-12, msg=k)
    assert any(not torch.allclose(naive[k], v) for k, v in paper.items() if v.is_floating_point())


def test_paper_recipe_folds_beta():
    cfg = yaml.safe_load((RECIPES / 'paper_rafdb.yaml').read_text())
    assert cfg['opt'] == 'sgd' and cfg['momentum'] == 0.9 and cfg['batch_size'] == 32
    assert cfg['lr'] == pytest.approx(BETA * 0.1)
    assert cfg['weight_decay'] == pytest.approx(1e-4 / BETA)
    assert (cfg['sched'], cfg['decay_epochs'], cfg['decay_rate']) == ('step', 10, 0.1)
    assert cfg['img_size'] == 224 and cfg['hflip'] == 0.5


def _train_py_dests(train_py: Path):
    text = train_py.read_text()
    dests = set(re.findall(r"dest='(\w+)'", text))
    for opts in re.findall(r"add_argument\(([^)]*)", text):
        longs = re.findall(r"'--([\w-]+)'", opts)
        if longs:
            dests.add(longs[0].replace('-', '_'))
    return dests


@pytest.mark.parametrize('recipe', sorted(p.name for p in RECIPES.glob('*.yaml')))
def test_recipe_is_valid_yaml_for_train_py(recipe):
    cfg = yaml.safe_load((RECIPES / recipe).read_text())
    assert cfg['model'].startswith('msanet_r18') and cfg['num_classes'] in (7, 8)
    assert cfg['train_split'] == 'train' and cfg['val_split'] in ('test', 'validation')
    repo = os.environ.get('TIMM_REPO')
    if repo and Path(repo, 'train.py').is_file():
        unknown = set(cfg) - _train_py_dests(Path(repo, 'train.py'))
        assert not unknown, f'{recipe}: not train.py arguments: {unknown}'


def test_release_script_refuses_an_unknown_precision(tmp_path):
    """examples/release.sh checks --precision before it reads or writes anything."""
    import subprocess
    script = RECIPES.parent / 'release.sh'
    proc = subprocess.run(['bash', str(script), 'fer2013', str(tmp_path / 'src'), str(tmp_path / 'work'),
                           '--precision', 'fp16'], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--precision must be auto, recipe, fp32 or bf16, got 'fp16'" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('dataset', ['ferplus', 'fer2013'])
def test_224px_release_recipe_is_the_64px_one_but_for_size_and_schedule(dataset):
    """A 224 px release recipe differs from its 64 px one only where its header says why."""
    base = yaml.safe_load((RECIPES / f'{dataset}_in1k.yaml').read_text())
    big = yaml.safe_load((RECIPES / f'{dataset}_in1k_224px.yaml').read_text())
    changed = {k: (base.get(k), big.get(k)) for k in set(base) | set(big) if base.get(k) != big.get(k)}
    assert changed == {'img_size': (64, 224), 'epochs': (40, 12), 'warmup_epochs': (2, 1),
                       'model_ema_decay': (0.9995, 0.999)}
