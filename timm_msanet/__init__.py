"""MSA-Net for facial expression recognition as a timm model.

Importing this package registers `msanet_r18`, `msanet_r18_ms` and `msanet_r18_as` with timm. Once the
package is installed this happens by itself the first time timm is imported (see `_autoload.py`).

The registration needs torch and timm, which take seconds to import, so it is tied to timm: if timm is
already imported, `import timm_msanet` registers the models at once; if not, it arms the same import hook
(even with TIMM_MSANET_AUTOLOAD=0, since the import asked for the models) and the models are registered
the moment timm is imported. That keeps `timm-msanet --help`, `--version` and `export` free of torch.
`MSANet`, `MultiScaleBlock` and `MultiScaleBranch` are imported on first access.
"""
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
    from . import msanet  # noqa: F401  (registers the models)
else:
    from . import _autoload
    _autoload.uninstall()  # a watcher armed by an older installed copy of the hook gives way to this one
    _autoload.install(force=True)
