"""timm_msanet.utils.precision: bf16 autocast only where it is native, and the recipe copy that says so."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from timm_msanet.utils.precision import (PrecisionError, _cpu_flags, native_bf16, recipe_for_precision,
                                        resumed_precision, started_precision)

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / 'examples' / 'recipes').glob('*_in1k.yaml'))


def test_native_bf16_agrees_with_the_cpu():
    flags = _cpu_flags()
    native = native_bf16('cpu')
    assert isinstance(native, bool)
    if flags & {'avx512_bf16', 'amx_bf16'}:
        assert native, 'a CPU with bf16 instructions was taken for one without'
    if flags and 'avx512f' not in flags and 'asimd' not in flags:
        assert not native, 'an x86 CPU without AVX-512 was taken for one with fast bf16 kernels'
    assert native_bf16('meta') is False
    if not torch.cuda.is_available():
        assert native_bf16('cuda') is False


@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: p.name)
def test_release_recipes_change_only_amp(recipe, tmp_path):
    as_written = yaml.safe_load(recipe.read_text())
    assert as_written['amp'] is True and as_written['amp_dtype'] == 'bfloat16'
    precision, path = recipe_for_precision(recipe, 'fp32', out_dir=tmp_path)
    assert (precision, path) == ('fp32', tmp_path / f'recipe_{recipe.stem}_fp32.yaml')
    fp32 = yaml.safe_load(path.read_text())
    assert fp32['amp'] is False and 'amp_dtype' not in fp32
    rest = {k: v for k, v in as_written.items() if k not in ('amp', 'amp_dtype')}
    assert {k: v for k, v in fp32.items() if k != 'amp'} == rest
    # the recipe as written is used in place: nothing is written
    assert recipe_for_precision(recipe, 'recipe', out_dir=tmp_path / 'none') == ('recipe', recipe)
    assert not (tmp_path / 'none').exists()
    # auto changes the recipe exactly where bf16 would be emulated
    expected = ('recipe', recipe) if native_bf16('cpu') else ('fp32', path)
    assert recipe_for_precision(recipe, 'auto', out_dir=tmp_path) == expected


def test_bf16_added_to_a_recipe_without_amp(tmp_path):
    settings = yaml.safe_load(RECIPES[0].read_text())
    del settings['amp'], settings['amp_dtype']
    plain = tmp_path / 'plain.yaml'
    plain.write_text(yaml.safe_dump(settings))
    assert recipe_for_precision(plain, 'auto', out_dir=tmp_path) == ('recipe', plain)
    precision, path = recipe_for_precision(plain, 'bf16', out_dir=tmp_path)
    assert precision == 'bf16'
    assert yaml.safe_load(path.read_text()) == dict(settings, amp=True, amp_dtype='bfloat16')


def test_an_existing_copy_is_kept_when_equal_and_refused_when_not(tmp_path):
    _, path = recipe_for_precision(RECIPES[0], 'fp32', out_dir=tmp_path)
    before = path.stat().st_mtime_ns
    assert recipe_for_precision(RECIPES[0], 'fp32', out_dir=tmp_path) == ('fp32', path)
    assert path.stat().st_mtime_ns == before
    edited = path.read_text().replace('lr: 0.002', 'lr: 0.1')
    assert edited != path.read_text()
    path.write_text(edited)
    with pytest.raises(PrecisionError, match='exists and differs'):
        recipe_for_precision(RECIPES[0], 'fp32', out_dir=tmp_path)
    assert path.read_text() == edited


def test_bad_recipes_and_precisions_are_refused(tmp_path):
    broken = tmp_path / 'broken.yaml'
    broken.write_text('lr: [0.1\n')
    listed = tmp_path / 'listed.yaml'
    listed.write_text('- lr\n- 0.1\n')
    with pytest.raises(PrecisionError, match='as YAML'):
        recipe_for_precision(broken, 'fp32', out_dir=tmp_path)
    with pytest.raises(PrecisionError, match='expected a YAML mapping'):
        recipe_for_precision(listed, 'auto', out_dir=tmp_path)
    with pytest.raises(PrecisionError, match='cannot read'):
        recipe_for_precision(tmp_path / 'missing.yaml', 'fp32', out_dir=tmp_path)
    with pytest.raises(PrecisionError, match="got 'fp16'"):
        recipe_for_precision(RECIPES[0], 'fp16', out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['broken.yaml', 'listed.yaml']


def _run_args(folder: Path, **autocast) -> Path:
    """An args.yaml as train.py writes it into a run's folder: every option, amp_dtype even without amp."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = dict(yaml.safe_load(RECIPES[0].read_text()), amp=False, amp_dtype='float16', resume='')
    settings.update(autocast)
    path = folder / 'args.yaml'
    path.write_text(yaml.safe_dump(settings, default_flow_style=False))
    return path


def test_a_run_keeps_the_precision_it_started_with(tmp_path):
    recipe = RECIPES[0]  # bf16 autocast as written
    fp32_run = _run_args(tmp_path / 'fp32')
    bf16_run = _run_args(tmp_path / 'bf16', amp=True, amp_dtype='bfloat16')
    assert started_precision(fp32_run, recipe) == 'fp32'
    assert started_precision(bf16_run, recipe) == 'recipe'
    for asked in ('auto', 'fp32'):
        assert resumed_precision(fp32_run, recipe, asked) == 'fp32'
    # the same autocast by another name goes on from the recipe file the run started from
    for asked in ('auto', 'recipe', 'bf16'):
        assert resumed_precision(bf16_run, recipe, asked) == 'recipe'
    with pytest.raises(PrecisionError, match='started with --precision fp32; resuming it with bf16'):
        resumed_precision(fp32_run, recipe, 'bf16')
    with pytest.raises(PrecisionError, match='started with --precision fp32; resuming it with recipe'):
        resumed_precision(fp32_run, recipe, 'recipe')
    with pytest.raises(PrecisionError, match='started with --precision recipe; resuming it with fp32'):
        resumed_precision(bf16_run, recipe, 'fp32')
    # a recipe without amp: its fp32 run is the recipe's, and bf16 is another precision
    plain = tmp_path / 'plain.yaml'
    plain.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(recipe.read_text()).items()
                                     if k not in ('amp', 'amp_dtype')}))
    assert started_precision(fp32_run, plain) == 'recipe' and started_precision(bf16_run, plain) == 'bf16'
    assert resumed_precision(fp32_run, plain, 'fp32') == 'recipe'


def test_autocast_that_precision_does_not_choose_is_refused(tmp_path):
    fp16_run = _run_args(tmp_path / 'fp16', amp=True, amp_dtype='float16')
    with pytest.raises(PrecisionError, match='float16 autocast'):
        started_precision(fp16_run, RECIPES[0])
    broken = tmp_path / 'broken' / 'args.yaml'
    broken.parent.mkdir()
    broken.write_text('amp: [true\n')
    with pytest.raises(PrecisionError, match="cannot read the run's args.yaml"):
        started_precision(broken, RECIPES[0])
    with pytest.raises(PrecisionError, match="got 'fp16'"):
        resumed_precision(fp16_run, RECIPES[0], 'fp16')


def _module(*args, cwd):
    return subprocess.run([sys.executable, '-m', 'timm_msanet.utils.precision', *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def test_module_command_line(tmp_path):
    proc = _module(cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ('native' if native_bf16('cpu') else 'emulated')
    proc = _module('--recipe', RECIPES[0], '--precision', 'fp32', '--out-dir', tmp_path / 'work dir', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    precision, path = proc.stdout.strip().split(' ', 1)
    assert precision == 'fp32' and Path(path) == tmp_path / 'work dir' / f'recipe_{RECIPES[0].stem}_fp32.yaml'
    assert yaml.safe_load(Path(path).read_text())['amp'] is False
    # resuming: the run's precision, whatever this machine would choose; another one is refused
    run_args = _run_args(tmp_path / 'run')
    proc = _module('--recipe', RECIPES[0], '--out-dir', tmp_path / 'work dir', '--resume', run_args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f'fp32 {path}'
    proc = _module('--recipe', RECIPES[0], '--precision', 'recipe', '--resume', run_args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == '' and 'started with --precision fp32' in proc.stderr
    proc = _module('--recipe', tmp_path / 'missing.yaml', '--precision', 'fp32', cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ''
    assert 'error: cannot read the recipe' in proc.stderr and 'Traceback' not in proc.stderr
