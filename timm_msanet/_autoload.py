"""Register the MSA-Net models with timm the moment timm is imported.

timm has no plugin discovery of its own, so `timm.create_model('msanet_r18')`, `hf-hub:` repos whose
config names an msanet architecture, and timm's own scripts (train.py, validate.py, inference.py,
benchmark.py) would all fail with "Unknown model" unless something imports `timm_msanet` first.

The wheel installs this file at the top of site-packages together with `timm_msanet_autoload.pth`,
whose single line calls `install()` at interpreter start. `install()` only appends a meta path
finder: it imports nothing heavy, so a Python process that never imports timm never pays for torch.
When `timm` itself is imported, the finder (first on sys.meta_path) lets the normal loader run timm's
`__init__` to the end and then imports `timm_msanet.msanet`, which registers the models. `import timm_msanet`
before timm arms the same finder (see the package docstring).

Set TIMM_MSANET_AUTOLOAD=0 to turn this off; `import timm_msanet` (or train.py's
`--device-modules timm_msanet`) still works as the explicit route.

This file must stay free of imports outside the standard library.
"""
import importlib.abc
import importlib.util
import os
import sys

API = 2  # 2: install(force=...), watchers matched by class name, registers via timm_msanet.msanet
ENV_VAR = 'TIMM_MSANET_AUTOLOAD'
MIN_TIMM = '1.0.31'  # pyproject.toml's dependency
_OFF_VALUES = ('0', 'false', 'no', 'off')


def enabled() -> bool:
    return os.environ.get(ENV_VAR, '1').strip().lower() not in _OFF_VALUES


class _RegisterAfterExec(importlib.abc.Loader):
    """Wraps timm's own loader and imports timm_msanet once timm's package body has run."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if 'timm_msanet.msanet' in sys.modules:
            return  # the model module is being imported right now and imported timm first
        try:
            importlib.import_module('timm_msanet.msanet')
        except Exception as e:  # never let a broken plugin break `import timm`
            import warnings
            warnings.warn(registration_failed(module, e), RuntimeWarning, stacklevel=2)

    def __getattr__(self, name):
        # importlib.resources and friends ask the loader for more than create/exec
        return getattr(self._loader, name)


def registration_failed(timm_module, error: Exception) -> str:
    """The warning when the models could not be registered: which timm was imported, from where, which one is
    installed, and the fix. The usual cause is a timm repository checkout: `python CHECKOUT/train.py` puts the
    script's folder first on sys.path, so the checkout's own timm/ folder is imported instead of the installed
    timm, and an older checkout lacks what the models need."""
    import importlib.metadata
    imported = getattr(timm_module, '__version__', 'of unknown version')
    where = os.path.dirname(getattr(timm_module, '__file__', None) or '?')
    try:
        installed = importlib.metadata.version('timm')
    except importlib.metadata.PackageNotFoundError:
        installed = None
    text = (f'timm-msanet is installed but could not register its models with timm {imported} imported from '
            f'{where} ({error!r}); it needs timm >= {MIN_TIMM}. ')
    if installed and installed != imported:
        text += (f'The installed timm is {installed}: that folder shadows it (a script run from a timm checkout '
                 f'imports the checkout\'s own timm/). Run the script with `python -P` (Python >= 3.11) or '
                 f'PYTHONSAFEPATH=1, which leave the script\'s folder off sys.path, or use a checkout at tag '
                 f'v{installed}. ')
    else:
        text += f'Upgrade it: pip install -U "timm>={MIN_TIMM}". '
    return text + f'Import timm_msanet to see the full error, or set {ENV_VAR}=0 to silence this.'


class TimmImportWatcher(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'timm':
            return None
        uninstall()  # one shot: whatever happens next, never intercept again
        spec = importlib.util.find_spec(fullname)  # the finders that would have found timm without us
        if spec is None or spec.loader is None:
            return None
        spec.loader = _RegisterAfterExec(spec.loader)
        return spec


def install(force: bool = False) -> None:
    """Arm the finder; `force` arms it even when TIMM_MSANET_AUTOLOAD turns the automatic route off."""
    if not (force or enabled()) or 'timm' in sys.modules:
        return
    if not any(_is_watcher(f) for f in sys.meta_path):
        sys.meta_path.insert(0, TimmImportWatcher())  # ahead of PathFinder, which would find timm first


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not _is_watcher(f)]


def _is_watcher(finder) -> bool:
    # by name: the copy at the top of site-packages and the package's own copy are two modules
    return type(finder).__name__ == TimmImportWatcher.__name__
