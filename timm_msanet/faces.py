"""Face detection for photos: boxes, largest first, and the square crop each face is classified on.

Used by `predict --faces` and `explain --faces`.

* Faces (`faces=True`): OpenCV's bundled frontal-face Haar cascade (`haarcascade_frontalface_default`,
  from `opencv-python-headless` < 5: OpenCV 5 no longer ships the cascades; extra `timm-msanet[faces]`).
  It needs no model download and runs on CPU in milliseconds; it finds near-frontal faces only. The
  detector runs on a grayscale copy scaled to at most `detect_max_side` (1024) px, boxes are mapped back
  to the original pixels. Each detection is made square around its centre and grown by `margin` (0.2)
  of its side on every side (a 1.4x side crop, closer to how aligned FER datasets frame a face: the
  cascade's box stops at the eyebrows and the chin). A crop that leaves the image is shifted back
  inside; only a crop larger than the image is clipped. Faces come largest first; the image's own
  `label`/`probabilities` are those of the largest face. An image with no face gets
  `error: 'no face detected'`, an empty `faces` list and no label (it is not classified whole: use
  `faces=False` for face crops).
"""
from functools import lru_cache
from pathlib import Path
from typing import List, Sequence, Tuple

from .errors import ToolError

DEFAULT_MARGIN = 0.2
DETECT_MAX_SIDE = 1024


class NoFaceDetector(ToolError):
    """OpenCV (with its bundled Haar cascades) is not installed."""


@lru_cache(maxsize=1)
def _cascade():
    """The Haar cascade, loaded once; raises NoFaceDetector with the install line when it cannot be."""
    try:
        import cv2
    except ImportError as e:
        raise NoFaceDetector(
            'face detection needs OpenCV: pip install "timm-msanet[faces]" (opencv-python-headless<5)') from e
    if not hasattr(cv2, 'CascadeClassifier') or not hasattr(cv2, 'data'):
        raise NoFaceDetector(
            f'this OpenCV ({cv2.__version__}) has no bundled Haar cascades (OpenCV 5 dropped them): '
            f'pip install "opencv-python-headless<5"')
    path = Path(cv2.data.haarcascades) / 'haarcascade_frontalface_default.xml'
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise NoFaceDetector(f'cannot load the Haar cascade {path}')
    return cascade


def detect_faces(img, max_side: int = DETECT_MAX_SIDE, min_size: int = 24, scale_factor: float = 1.1,
                 min_neighbors: int = 5) -> List[Tuple[int, int, int, int]]:
    """Face boxes (x0, y0, x1, y1) in the image's pixels, largest first (OpenCV Haar cascade)."""
    import numpy as np

    cascade = _cascade()
    w, h = img.size
    scale = min(1.0, max_side / max(w, h))
    gray = img.convert('L')
    if scale < 1.0:
        from PIL import Image
        gray = gray.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    arr = np.asarray(gray)
    if min(arr.shape) < min_size:
        return []
    found = cascade.detectMultiScale(arr, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                     minSize=(min_size, min_size))
    boxes = []
    for x, y, bw, bh in (found if len(found) else []):
        x0, y0 = int(round(x / scale)), int(round(y / scale))
        x1, y1 = int(round((x + bw) / scale)), int(round((y + bh) / scale))
        boxes.append((max(0, x0), max(0, y0), min(w, x1), min(h, y1)))
    boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return boxes


def face_crop_box(box: Sequence[int], size: Tuple[int, int], margin: float = DEFAULT_MARGIN) -> Tuple[int, ...]:
    """Square crop around a detection, grown by `margin` x side on each side, shifted inside the image."""
    w, h = size
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    left, top = cx - side / 2, cy - side / 2
    # shift back inside where the image is large enough, clip only what cannot fit
    left = min(max(left, 0), max(w - side, 0))
    top = min(max(top, 0), max(h - side, 0))
    return (int(round(left)), int(round(top)), int(round(min(left + side, w))), int(round(min(top + side, h))))


def require_detector() -> None:
    """Raise NoFaceDetector (with what to install) now, before a model is loaded, when faces cannot be found."""
    _cascade()
