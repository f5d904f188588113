"""Face detection for photos and video frames: boxes, left to right, and the image each face is classified on.

Used by `predict --faces` (photos and videos) and `explain --faces`. Three detectors: the Haar cascade below
(boxes only, needs only OpenCV) and two from dlib (the `landmarks` extra, model files from
face_recognition_models): `dlib`, its HOG detector, and `dlib-cnn`, its MMOD convolutional detector (more
poses, occluded eyes and sunglasses, but 5-20 s a photo on 2 CPU cores). Both give a score and five landmarks
per face, so the face can be aligned to the framing the model was trained with; see the second half of this
module and docs/inference.md for how they compare on real photos. The default, `auto`, is `dlib` when the
landmarks extra is installed (it found more faces than Haar on the real photos, with no false detection, as
fast on photos and in 1.4 times Haar's time on 640x480 video frames) and the Haar cascade otherwise, as the
fallback that needs no extra model files.

* The Haar cascade (`detector='haar'`, or `auto` without the landmarks extra): OpenCV's bundled frontal-face
  cascade (`haarcascade_frontalface_default`, from `opencv-python-headless` < 5: OpenCV 5 no longer ships
  the cascades; extra `timm-msanet[faces]`).
  It needs no model download and runs on CPU in milliseconds; it finds near-frontal faces only. The
  detector runs on a grayscale copy scaled to at most `detect_max_side` (1024; dlib's HOG sees photos up to
  4096 px, a 12-megapixel phone photo at full resolution: DETECT_MAX_SIDE; video frames 1024), boxes are mapped
  back to the original pixels. Each detection is made square around its centre and grown by `margin` (0.2)
  of its side on every side (a 1.4x side crop, closer to how aligned FER datasets frame a face: the
  cascade's box stops at the eyebrows and the chin). A crop that leaves the image is shifted back
  inside; only a crop larger than the image is clipped. Faces are listed left to right (then top to
  bottom); the image's own `label`/`probabilities` are those of its largest face (`largest_index`). An
  image with no face gets `error: 'no face detected'`, an empty `faces` list and no label, except a small
  one (longest side up to FACE_CROP_MAX_SIDE, 256 px), which is taken for a face crop and classified whole
  with a `note` (detectors miss many faces that fill the frame: a 48 px FER2013 face, a 100 px RAF-DB one).
"""
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..utils.errors import ToolError, install_hint
from ..notes import DEFAULT_FRAMING, FramingError

DEFAULT_MARGIN = 0.2
# The longest side each detector sees on a photo by default. dlib's HOG at 4096 keeps a 12-megapixel phone photo
# (4032 x 3024) at full resolution, where with one upsampling it finds faces down to about 40 px (seconds a
# photo); the Haar cascade at full resolution finds a few more faces and many more false ones, so it stays at
# 1024; the CNN detector costs minutes on a 12 MP photo. Video frames, detected many times a clip, are seen at
# 1024 (VIDEO_DETECT_MAX_SIDE). Measured recall and time on real scenes: docs/inference.md.
DETECT_MAX_SIDE = {'dlib': 4096, 'haar': 1024, 'dlib-cnn': 1024}
VIDEO_DETECT_MAX_SIDE = 1024
# An image this small (longest side, px) in which no face is found is taken for a face crop and classified whole
# (a 48 px FER2013 face, a 100 px aligned RAF-DB face): the detectors miss many faces that fill the frame.
FACE_CROP_MAX_SIDE = 256


def box_area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def largest_index(boxes: Sequence[Sequence[float]]) -> int:
    """Index of the largest box: the face whose label is the image's own (faces are listed left to right)."""
    return max(range(len(boxes)), key=lambda i: box_area(boxes[i]))


def reading_order(boxes: Sequence[Sequence[float]]) -> List[int]:
    """Indices of `boxes` left to right, then top to bottom (by the box's left edge, then its top)."""
    return sorted(range(len(boxes)), key=lambda i: (boxes[i][0], boxes[i][1]))


def no_face(size: Tuple[int, int], max_side: int) -> Dict[str, Any]:
    """What a result says when the detector found no face in an image of `size`: a small image is a face crop,
    classified whole (a `note`, no error); a larger one gets an `error`, and a `note` when the image was scaled
    down for the detector (its smaller faces were below what the detector can find)."""
    if max(size) <= FACE_CROP_MAX_SIDE:
        return dict(note=f'no face detected in this {size[0]}x{size[1]} image: classified whole, as a face crop')
    scale = detection_scale(size, max_side)
    if scale < 1.0:
        return dict(label=None, error='no face detected', note=(
            f'the detector saw this {size[0]}x{size[1]} image scaled to {max_side} px on its longest side '
            f'({scale:.2f}): faces under about {round(40 / scale)} px are missed; raise --detect-max-side'))
    return dict(label=None, error='no face detected')


def detect_max_side(detector: str, max_side: Optional[int] = None) -> int:
    """The longest side `detector` ('auto' resolved first) sees: `max_side`, or its photo default."""
    return int(max_side) if max_side else DETECT_MAX_SIDE[resolve_detector(detector)]


def detection_scale(size: Tuple[int, int], max_side: int) -> float:
    """The factor an image of `size` is scaled by for the detector (1.0: seen at full resolution)."""
    return min(1.0, max_side / max(size))


class NoFaceDetector(ToolError):
    """OpenCV (with its bundled Haar cascades) is not installed."""


@lru_cache(maxsize=1)
def _cascade():
    """The Haar cascade, loaded once; raises NoFaceDetector with the install line when it cannot be."""
    try:
        import cv2
    except ImportError as e:
        raise NoFaceDetector(
            f'face detection needs OpenCV: {install_hint("faces")}') from e
    if not hasattr(cv2, 'CascadeClassifier') or not hasattr(cv2, 'data'):
        raise NoFaceDetector(
            f'this OpenCV ({cv2.__version__}) has no bundled Haar cascades (OpenCV 5 dropped them): '
            f'pip install "opencv-python-headless<5"')
    path = Path(cv2.data.haarcascades) / 'haarcascade_frontalface_default.xml'
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise NoFaceDetector(f'cannot load the Haar cascade {path}')
    return cascade


def detect_faces(img, max_side: int = DETECT_MAX_SIDE['haar'], min_size: int = 24, scale_factor: float = 1.1,
                 min_neighbors: int = 5) -> List[Tuple[int, int, int, int]]:
    """Face boxes (x0, y0, x1, y1) in the image's pixels, left to right (OpenCV Haar cascade)."""
    import numpy as np

    cascade = _cascade()
    w, h = img.size
    scale = detection_scale((w, h), max_side)
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
    return [boxes[i] for i in reading_order(boxes)]


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




# ------------------------------------------------------------------- the landmark detector and alignment
DETECTORS = ('auto', 'haar', 'dlib', 'dlib-cnn')
# five points, named from the subject's side (the right eye is on the image's left), as MTCNN and YuNet give them
LANDMARK_NAMES = ('right_eye', 'left_eye', 'nose', 'mouth_right', 'mouth_left')
# dlib's 68-point layout: eye contours 36-41 and 42-47, nose tip 30, mouth corners 48 and 54
_DLIB_POINTS = {'right_eye': range(36, 42), 'left_eye': range(42, 48), 'nose': (30,), 'mouth_right': (48,),
                'mouth_left': (54,)}
LANDMARKS_INSTALL = install_hint('landmarks')
# dlib's HOG scores: faces score about 0.3-2; below 0.2 its detections on the test photos were clothing and
# background (a face rotated by 45 degrees scores 0.09 and is lost)
DLIB_MIN_SCORE = 0.2
# the CNN's confidences on the 29 faces of the real photos in docs/inference.md were 0.99-1.12 and it made no
# false detection there, so it keeps dlib's own threshold (0)
DLIB_CNN_MIN_SCORE = 0.0


class Face(NamedTuple):
    """One detected face: its box (x0, y0, x1, y1), the detector's score (None for Haar) and five landmarks
    {name: (x, y)} in image pixels (None for Haar)."""
    box: Tuple[int, int, int, int]
    score: Optional[float] = None
    landmarks: Optional[Dict[str, Tuple[float, float]]] = None


def _dlib_model_file(name: str, what: str, detector: str) -> str:
    import importlib.util
    # the file only: importing face_recognition_models needs pkg_resources, gone from new setuptools
    spec = importlib.util.find_spec('face_recognition_models')
    path = (Path(next(iter(spec.submodule_search_locations))) / 'models' / name
            if spec is not None and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise NoFaceDetector(f'--detector {detector} needs the {what} of face_recognition_models ({name}): '
                             f'{LANDMARKS_INSTALL}')
    return str(path)


@lru_cache(maxsize=2)
def _dlib_models(detector: str = 'dlib'):
    """(face detector, 68-point landmark predictor, the dlib module) for 'dlib' (HOG) or 'dlib-cnn' (MMOD)."""
    try:
        import dlib
    except ImportError as e:
        raise NoFaceDetector(f'--detector {detector} needs dlib and its model files: {LANDMARKS_INSTALL}') from e
    predictor = dlib.shape_predictor(_dlib_model_file('shape_predictor_68_face_landmarks.dat',
                                                      '68-point landmark model', detector))
    if detector == 'dlib-cnn':
        finder = dlib.cnn_face_detection_model_v1(_dlib_model_file('mmod_human_face_detector.dat',
                                                                   'CNN face detector', detector))
    else:
        finder = dlib.get_frontal_face_detector()
    return finder, predictor, dlib


def _dlib_detections(detector: str, finder, arr, upsample: int):
    """[(rect, score)] above the detector's threshold, in the pixels of `arr`."""
    if detector == 'dlib-cnn':
        return [(d.rect, d.confidence) for d in finder(arr, upsample) if d.confidence >= DLIB_CNN_MIN_SCORE]
    rects, scores, _ = finder.run(arr, upsample, DLIB_MIN_SCORE)
    return list(zip(rects, scores))


def resolve_detector(detector: str = 'auto') -> str:
    """The detector `detector` names: 'auto' is 'dlib' when dlib and its model files are installed (the
    landmarks extra), else 'haar'."""
    if detector not in DETECTORS:
        raise NoFaceDetector(f'unknown face detector {detector!r}: expected one of {", ".join(DETECTORS)}')
    if detector != 'auto':
        return detector
    try:
        _dlib_models('dlib')
    except NoFaceDetector:
        return 'haar'
    return 'dlib'


def require_detector(detector: str = 'auto') -> str:
    """Raise NoFaceDetector (with what to install) now, before a model is loaded, when faces cannot be found.
    Returns the detector's resolved name (`resolve_detector`)."""
    detector = resolve_detector(detector)
    if detector == 'haar':
        _cascade()
    else:
        _dlib_models(detector)
    return detector


def locate_faces(img, detector: str = 'auto', max_side: Optional[int] = None) -> List[Face]:
    """Faces of an image, left to right (then top to bottom): Haar boxes, or dlib's HOG ('dlib') or CNN
    ('dlib-cnn') detections with score and five landmarks ('auto': `resolve_detector`). The image is scaled
    down to `max_side` (default: the detector's, `detect_max_side`) for the detector first; boxes are in the
    image's own pixels."""
    detector = resolve_detector(detector)
    max_side = detect_max_side(detector, max_side)
    if detector == 'haar':
        return [Face(tuple(b)) for b in detect_faces(img, max_side=max_side)]
    require_detector(detector)
    import numpy as np
    from PIL import Image
    finder, predictor, dlib = _dlib_models(detector)
    rgb = img.convert('RGB')
    w, h = rgb.size
    scale = detection_scale((w, h), max_side)
    small = rgb if scale == 1.0 else rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    # HOG's window is 80 px: one upsampling finds faces down to about 40 px, at four times the pixels (a 12 MP
    # photo: seconds, docs/inference.md). The CNN detector upsampled costs minutes on such a photo: above 800 px
    # it runs once at the size it is given.
    upsample = 1 if detector == 'dlib' or max(small.size) <= 800 else 0
    found = _dlib_detections(detector, finder, np.asarray(small), upsample)
    full = np.asarray(rgb)
    faces = []
    for r, score in found:
        x0, y0 = max(0, round(r.left() / scale)), max(0, round(r.top() / scale))
        x1, y1 = min(w, round(r.right() / scale)), min(h, round(r.bottom() / scale))
        if x1 <= x0 or y1 <= y0:
            continue
        shape = predictor(full, dlib.rectangle(x0, y0, x1, y1))
        pts = [(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)]
        marks = {name: (sum(pts[i][0] for i in idx) / len(idx), sum(pts[i][1] for i in idx) / len(idx))
                 for name, idx in _DLIB_POINTS.items()}
        faces.append(Face((x0, y0, x1, y1), float(score), marks))
    return [faces[i] for i in reading_order([f.box for f in faces])]


def framing_notice(framing_recorded: bool, detector: str, align: bool = True) -> Optional[str]:
    """A line for stderr when faces will be aligned to FER2013's framing because the model records none
    (`ExpressionModel.framing_recorded`)."""
    if resolve_detector(detector) == 'haar' or not align or framing_recorded:
        return None
    return (f'note: this model records no face framing; faces are aligned as FER2013\'s training faces are framed '
            f'(eye_y {DEFAULT_FRAMING["eye_y"]}, eye_dist {DEFAULT_FRAMING["eye_dist"]}). `timm-msanet publish '
            f'--face-framing TRAIN_DIR` records a model\'s own framing in its weights.')


def aligned_face(img, landmarks: Mapping[str, Sequence[float]], framing: Mapping[str, float]):
    """The square crop in which the eyes are level, `framing['eye_dist']` of the side apart, their midpoint
    centred at height `framing['eye_y']`. Returns (crop, rotation in degrees applied to level the eyes)."""
    import math
    from PIL import Image
    (rx, ry), (lx, ly) = landmarks['right_eye'], landmarks['left_eye']
    dx, dy = lx - rx, ly - ry
    dist = math.hypot(dx, dy)
    if dist < 1:
        raise ValueError('the eye landmarks coincide: cannot align')
    side = max(16, int(round(dist / framing['eye_dist'])))
    s = dist / (framing['eye_dist'] * side)  # input pixels per output pixel
    c, k = s * dx / dist, s * dy / dist  # scaled cosine and sine of the eye line's angle
    mx, my = (rx + lx) / 2, (ry + ly) / 2
    u0, v0 = side / 2, framing['eye_y'] * side
    # output (u, v) -> input (x, y): rotate and scale about the eye midpoint
    coeffs = (c, -k, mx - c * u0 + k * v0, k, c, my - k * u0 - c * v0)
    crop = img.convert('RGB').transform((side, side), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC)
    return crop, math.degrees(math.atan2(dy, dx))


def face_slot(img, face, margin: float, framing: Optional[Dict[str, float]]):
    """A face's result entry (box, detector score, landmarks, how it was cropped) and the image it is
    classified on: aligned to `framing` when the detector gave landmarks and framing is given, else the
    square crop around the box."""
    slot: Dict[str, Any] = dict(box=list(face.box))
    if face.score is not None:
        slot['detector_score'] = round(face.score, 4)
    if face.landmarks:
        slot['landmarks'] = {k: [round(x, 1), round(y, 1)] for k, (x, y) in face.landmarks.items()}
    if framing is not None and face.landmarks:
        face_img, angle = aligned_face(img, face.landmarks, framing)
        slot['aligned'] = dict(rotation=round(angle, 2), side=face_img.size[0], **framing)
        return slot, face_img
    crop = face_crop_box(face.box, img.size, margin)
    slot['crop'] = list(crop)
    return slot, img.crop(crop)


# a dataset's framing is the median over its faces: this many at least, found in this share of the images
FRAMING_MIN_FACES = 50
FRAMING_MIN_SHARE = 0.25
FRAMING_SIDE = 192


def measure_framing(paths: Sequence[Any], detector: str = 'dlib', limit: int = 1500, seed: int = 0,
                    min_faces: int = FRAMING_MIN_FACES) -> Dict[str, Any]:
    """Where a dataset's faces have their eyes: the framing `aligned_face` reproduces for a model trained on it.

    A seeded random `limit` of `paths` (image files) is read; each image is squash-resized to 192 x 192,
    as the FER data config resizes a training image for the model (and so that FER2013's 48 px faces are
    large enough for dlib), and its largest face's eye midpoint height and eye distance, as fractions of the
    side, are collected. Returns the medians as `eye_y`, `eye_dist`, with `faces` (found), `images`
    (read), `unreadable` and `detector`. Raises FramingError when faces were found in fewer than
    `min_faces` images or under a quarter of them: not a folder of face images."""
    import random
    import statistics
    from PIL import Image, UnidentifiedImageError
    detector = require_detector(detector)
    if detector == 'haar':
        raise FramingError('measuring a face framing needs landmarks: use detector dlib or dlib-cnn')
    files = list(paths)
    random.Random(seed).shuffle(files)
    eye_y, eye_dist, unreadable, read = [], [], 0, 0
    for path in files[:limit]:
        try:
            with Image.open(path) as im:
                img = im.convert('RGB').resize((FRAMING_SIDE, FRAMING_SIDE), Image.BICUBIC)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
            unreadable += 1
            continue
        read += 1
        faces = locate_faces(img, detector)
        if faces:
            (rx, ry), (lx, ly) = faces[0].landmarks['right_eye'], faces[0].landmarks['left_eye']
            eye_y.append((ry + ly) / 2 / FRAMING_SIDE)
            eye_dist.append(((lx - rx) ** 2 + (ly - ry) ** 2) ** 0.5 / FRAMING_SIDE)
    if len(eye_y) < min_faces or len(eye_y) < FRAMING_MIN_SHARE * read:
        raise FramingError(
            f'{detector} found a face in {len(eye_y)} of {read} images ({unreadable} unreadable); measuring a '
            f'framing needs at least {min_faces} faces, in a quarter of the images or more: expected a folder of '
            f'face images (a dataset\'s train split), or give the framing itself as EYE_Y,EYE_DIST')
    return dict(eye_y=round(statistics.median(eye_y), 3), eye_dist=round(statistics.median(eye_dist), 3),
                faces=len(eye_y), images=read, unreadable=unreadable, detector=detector)
