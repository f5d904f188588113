"""Found by name without an import: the installed `.pth` hook, in fresh interpreters (real subprocesses)."""
import os
import subprocess
import sys
import textwrap

import pytest


def _run(code, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k != 'TIMM_MSANET_AUTOLOAD'}
    env.update(env_overrides)
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.abspath(__file__)), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_hook_is_installed_with_the_package():
    # the wheel puts these two files at the top of site-packages; without them nothing below can work
    out = _run("""
        import importlib.util, os, sysconfig
        spec = importlib.util.find_spec('_timm_msanet_autoload')
        assert spec is not None, 'timm-msanet is not installed (pip install .): no _timm_msanet_autoload module'
        pth = os.path.join(os.path.dirname(spec.origin), 'timm_msanet_autoload.pth')
        print(os.path.isfile(pth))
    """)
    assert out == 'True'


def test_plain_timm_finds_the_models_without_import():
    out = _run("""
        import sys
        import timm
        assert 'timm_msanet' in sys.modules
        m = timm.create_model('msanet_r18', num_classes=3)
        print(type(m).__name__, m.num_classes, sorted(timm.list_models('msanet*')))
    """)
    assert out == "MSANet 3 ['msanet_r18', 'msanet_r18_as', 'msanet_r18_ms']"


def test_submodule_import_first_also_registers():
    # scripts that start with `from timm.models import create_model` import timm's package first too
    out = _run("""
        from timm.models import create_model, is_model
        print(is_model('msanet_r18_as'))
    """)
    assert out == 'True'


def test_no_torch_or_timm_at_interpreter_start():
    out = _run("""
        import sys
        print(sorted(m for m in ('torch', 'timm', 'timm_msanet') if m in sys.modules))
    """)
    assert out == '[]'


def test_environment_variable_turns_it_off():
    out = _run("""
        import sys, timm
        print('timm_msanet' in sys.modules, timm.is_model('msanet_r18'))
        import timm_msanet
        print(timm.is_model('msanet_r18'))
    """, TIMM_MSANET_AUTOLOAD='0')
    assert out.splitlines() == ['False False', 'True']


@pytest.mark.parametrize('value, on', [('0', False), ('false', False), (' OFF ', False), ('no', False),
                                       ('1', True), ('true', True), ('', True), (None, True)])
def test_which_values_turn_it_off(monkeypatch, value, on):
    # one function reads the spellings; the fresh interpreter above shows that its answer is obeyed
    from timm_msanet import _autoload
    if value is None:
        monkeypatch.delenv(_autoload.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(_autoload.ENV_VAR, value)
    assert _autoload.enabled() is on


@pytest.mark.parametrize('autoload', ['1', '0'])
def test_importing_the_package_first_defers_torch_until_timm(autoload):
    # `import timm_msanet` alone stays light (the CLI's --help relies on it); the models still register
    # the moment timm is imported, even with the automatic route turned off, because the import asked for them
    out = _run("""
        import sys
        import timm_msanet
        print(sorted(m for m in ('torch', 'timm', 'timm_msanet.msanet') if m in sys.modules))
        import timm
        print(timm.is_model('msanet_r18'), timm.is_model('msanet_r18_as'), timm_msanet.MultiScaleBlock.__name__)
    """, TIMM_MSANET_AUTOLOAD=autoload)
    assert out.splitlines() == ['[]', 'True True MultiScaleBlock']


@pytest.mark.parametrize('argv', [['--help'], ['--version'], ['predict', '--help'], ['eval', '--help'],
                                  ['export', '--help'], ['bench', '--help'], ['verify', '--help']])
def test_cli_help_imports_neither_torch_nor_timm(argv):
    out = _run(f"""
        import sys
        from timm_msanet.cli import main
        try:
            main({argv!r})
        except SystemExit as e:
            assert e.code == 0, e.code
        print(file=sys.stderr)
        print(sorted(m for m in ('torch', 'timm') if m in sys.modules))
    """)
    assert out.splitlines()[-1] == '[]'


def test_a_script_in_an_older_timm_checkout_is_told_why_and_runs_with_dash_P(tmp_path):
    """`python CHECKOUT/train.py` imports the checkout's own timm/ (the script's folder comes first on sys.path).
    A checkout older than the installed timm cannot take the models: the warning names both timm versions and the
    fix, and `python -P` (what README and docs/training.md say) runs the same script against the installed timm."""
    import importlib.metadata
    checkout = tmp_path / 'pytorch-image-models'
    (checkout / 'timm').mkdir(parents=True)
    # an old timm as far as the plugin can tell: a version, and none of the layers the model file imports
    (checkout / 'timm' / '__init__.py').write_text("__version__ = '1.0.29.dev0'\n")
    (checkout / 'train.py').write_text(textwrap.dedent("""
        import timm
        print(timm.__version__, timm.create_model('msanet_r18', num_classes=3).num_classes)
    """))
    env = {k: v for k, v in os.environ.items() if k not in ('TIMM_MSANET_AUTOLOAD', 'PYTHONSAFEPATH')}
    old = subprocess.run([sys.executable, str(checkout / 'train.py')], capture_output=True, text=True, env=env,
                         timeout=300)
    assert old.returncode != 0
    installed = importlib.metadata.version('timm')
    warning = ' '.join(old.stderr.split())
    assert f'timm 1.0.29.dev0 imported from {checkout / "timm"}' in warning
    assert f'The installed timm is {installed}' in warning and '`python -P`' in warning, old.stderr
    fixed = subprocess.run([sys.executable, '-P', str(checkout / 'train.py')], capture_output=True, text=True,
                           env=env, timeout=300)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.split() == [installed, '3']
