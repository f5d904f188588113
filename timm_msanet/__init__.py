"""MSA-Net for facial expression recognition as a timm model.

Importing this package registers `msanet_r18`, `msanet_r18_ms` and `msanet_r18_as` with timm. Once the
package is installed this import happens by itself the first time timm is imported (see `_autoload.py`).
"""
from .version import __version__
from .labels import FER7_LABELS, FER8_LABELS
from .msanet import MSANet, MultiScaleBlock, MultiScaleBranch

__all__ = ['__version__', 'FER7_LABELS', 'FER8_LABELS', 'MSANet', 'MultiScaleBlock', 'MultiScaleBranch']
