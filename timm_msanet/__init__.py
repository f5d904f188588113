"""MSA-Net for facial expression recognition as a timm model.

Importing this package registers `msanet_r18`, `msanet_r18_ms` and `msanet_r18_as` with timm. Once the
package is installed this happens by itself the first time timm is imported (see `_autoload.py`).

The registration needs torch and timm, which take seconds to import, so it is tied to timm: if timm is
already imported, `import timm_msanet` registers the models at once; if not, it arms the same import hook
(even with TIMM_MSANET_AUTOLOAD=0, since the import asked for the models) and the models are registered
the moment timm is imported. That keeps `timm-msanet --help`, `--version` and `export` free of torch.
`MSANet`, `MultiScaleBlock` and `MultiScaleBranch` are imported on first access.
"""
import importlib
import sys

from .version import __version__
from .labels import FER7_LABELS, FER8_LABELS

__all__ = ['__version__', 'FER7_LABELS', 'FER8_LABELS', 'MSANet', 'MultiScaleBlock', 'MultiScaleBranch']
_MODEL_CLASSES = ('MSANet', 'MultiScaleBlock', 'MultiScaleBranch')


def __getattr__(name: str):
    if name in _MODEL_CLASSES:
        from . import msanet
        return getattr(msanet, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


if 'timm' in sys.modules:
    importlib.import_module('.msanet', __name__)  # registers the models
else:
    try:  # the copy installed at the top of site-packages (the wheel holds no other)
        import _timm_msanet_autoload as _hook
        if getattr(_hook, 'API', 1) < 2:  # left behind by an older editable install
            raise ImportError(_hook.__file__)
    except ImportError:  # a source tree on sys.path, or that older copy
        from . import _autoload as _hook
    _hook.uninstall()  # a watcher armed by an older copy gives way to this one
    _hook.install(force=True)
