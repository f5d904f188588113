"""Run timm's own model test battery (tests/test_models.py from the timm sdist) on the msanet models.

* The sdist matching the installed timm comes from the package registry; its `timm/` source folder is
  removed so the tests exercise the installed timm, as users have it.
* One edit: 'msanet' is added to FEAT_INTER_FILTERS, timm's list of model modules that implement
  forward_intermediates / FeatureGetterNet. timm only runs its intermediates and pruning tests for
  modules in that list, and our module implements both.
* timm's pretrained tests (load_pretrained, features_pretrained) download weights. Here huggingface_hub
  runs offline (HF_HUB_OFFLINE=1) against a temporary cache holding a ResNet-18 state dict of the right
  shape under `timm/resnet18.tv_in1k`, so the real loading path runs without the network.
* Afterwards the test functions collected for timm's resnet18 and for msanet_r18 are compared: every
  test that runs for resnet18 must also run for msanet_r18. Two tests have hard-coded model lists that
  name resnet18 (test_features_only_grad_checkpointing_backward, test_head_hidden_size): msanet_r18 is
  added to those lists too.
"""
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Tests whose parametrize list names resnet18 explicitly: msanet_r18 is added to those lists.
HARD_CODED_LISTS = {
    "@pytest.mark.parametrize('model_name', ['resnet18', ": 'msanet_r18',
    "    ('resnet18', {}),\n": "    ('msanet_r18', {}),\n",
}


def _fetch_battery(work: Path) -> Path:
    version = importlib.metadata.version('timm')
    subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--disable-pip-version-check', '--no-deps',
                    '--no-binary', ':all:', f'timm=={version}', '-d', str(work)], check=True)
    sdist = next(work.glob(f'timm-{version}.tar.gz'))
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter='data')
    src = work / f'timm-{version}'
    shutil.rmtree(src / 'timm')  # test the installed timm, not the sdist's source tree
    test_file = src / 'tests' / 'test_models.py'
    text = test_file.read_text()
    anchor = 'FEAT_INTER_FILTERS = ['
    if anchor not in text:
        raise SystemExit(f'timm {version} test_models.py has no {anchor!r}: update .ci/timm_battery.py')
    text = text.replace(anchor, anchor + "'msanet', ", 1)
    for list_anchor, ours in HARD_CODED_LISTS.items():
        if list_anchor in text:
            addition = f"'{ours}', " if list_anchor.endswith(', ') else ours
            text = text.replace(list_anchor, list_anchor + addition, 1)
    patched = src / 'tests' / 'test_models_plugin.py'
    patched.write_text(text)
    print(f'timm {version}: tests/test_models.py -> {patched}')
    return src


def _seed_offline_hub(hf_home: Path) -> None:
    import timm
    from safetensors.torch import save_file
    sys.path.insert(0, str(ROOT / 'tests'))
    from conftest import write_offline_hub_cache as make_offline_hub_cache  # plain function, not the fixture
    sd = {k: v.contiguous() for k, v in timm.create_model('resnet18').state_dict().items()}
    weights = hf_home.parent / 'resnet18.safetensors'
    save_file(sd, str(weights))
    make_offline_hub_cache(hf_home, 'timm/resnet18.tv_in1k', {'model.safetensors': weights})


def _collected_functions(src: Path, env, model: str) -> set:
    out = subprocess.run(
        [sys.executable, '-m', 'pytest', 'tests/test_models_plugin.py', '--collect-only', '-q', '-p',
         'no:cacheprovider'], cwd=src, env=env, capture_output=True, text=True, check=True).stdout
    pat = re.compile(r'::(\w+)\[(.*)\]$')
    funcs = set()
    for line in out.splitlines():
        m = pat.search(line.strip())
        if m and re.search(rf'(^|-){re.escape(model)}(\.[\w]+)?(-|$)', m.group(2)):
            funcs.add(m.group(1))
    return funcs


def main() -> int:
    with tempfile.TemporaryDirectory(prefix='timm-battery-') as tmp:
        tmp = Path(tmp)
        src = _fetch_battery(tmp)
        hf_home = tmp / 'hf'
        _seed_offline_hub(hf_home)
        env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE='1')
        env.pop('GITHUB_ACTIONS', None)  # keep timm's local (non-GitHub) test selection, incl. pretrained tests

        ours = _collected_functions(src, env, 'msanet_r18')
        theirs = _collected_functions(src, env, 'resnet18')
        missing = sorted(theirs - ours)
        print(f'test functions collected for resnet18: {len(theirs)}, for msanet_r18: {len(ours)}')
        if missing:
            print(f'FAILED: timm runs these for resnet18 but not for msanet_r18: {missing}')
            return 1

        proc = subprocess.run(
            [sys.executable, '-m', 'pytest', 'tests/test_models_plugin.py', '-k', 'msanet', '-q', '-rs',
             '-p', 'no:cacheprovider'], cwd=src, env=env)
        return proc.returncode


if __name__ == '__main__':
    sys.exit(main())
