"""Predict facial expressions for images or folders of images, optionally for every face found in raw photos.

Python API::

    from timm_msanet.loading import load_model
    from timm_msanet.inference.predict import predict
    model = load_model(checkpoint='model_best.pth.tar', model_name='msanet_r18')
    results = predict(['a.jpg', pil_image, numpy_hwc_uint8], model, batch_size=32, faces=False, topk=3)
    results[0]['label'], results[0]['probabilities']          # 'happiness', {'anger': 0.01, ...}

Choices made here (where FER tools differ and nothing fixes one answer):

* Preprocessing and input decoding: see `timm_msanet.utils.images` (the model's own data config; any image
  mode, array or tensor made 8-bit RGB first).
* A model whose classifier never learned expressions (random weights, or the `tv_in1k` ImageNet
  starting point) still predicts, with a UserWarning saying its labels are meaningless.
* A file that cannot be read (missing, not an image, truncated, over PIL's decompression-bomb limit)
  gives a result with an `error` field and no label; the batch goes on. Tiny images (1x1) are
  upsampled by the squash resize like any other.
* Faces (`faces=True`): see `timm_msanet.inference.faces` (detectors: `auto` is dlib with the landmarks extra, faces
  aligned as the model was trained, else the Haar cascade and the square crop with `margin`). Faces come
  left to right (then top to bottom); the image's own `label`/`probabilities` are those of the largest face.
  An image with no face gets `error: 'no face detected'` (saying so when it was scaled down for the
  detector), an empty `faces` list and no label; an image of at most 256 px with no face found is taken for
  a face crop and classified whole, with a `note`. So `faces=True` is for photos (people in a scene, a phone
  picture); aligned face crops (FER datasets, a face already cut out) want `faces=False`.
* `annotate_image` draws with PIL only. The CLI writes annotated copies under `--annotate OUTDIR`,
  mirroring the inputs' folder structure, as JPEG for JPEG inputs and PNG otherwise; it never writes a
  path that is one of the inputs (it adds `_annotated` to the name instead).
* Every output file (`--json`, `--csv`, annotated images, videos and timelines) is written as
  `timm_msanet.utils.outputs` writes files: never an input, never through a link, an existing file only with
  `--overwrite`, atomically. All of them are checked before the first image is read, so a refused output
  costs no work.
* The CLI exits 1 only when no input could be predicted (no file, or every one failed); per-file errors
  are in the output with the others.
* Videos (`predict VIDEO --faces`) go through `timm_msanet.inference.video` (tracking, smoothing, timeline, annotated
  video); one run takes images or videos, not both, since the two give different tables.
"""
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ..utils.errors import ToolError
from .faces import (DEFAULT_MARGIN, NoFaceDetector, face_slot, framing_of, largest_index, locate_faces, no_face,
                    require_detector)
from .faces import detect_max_side as detect_max_side_for
from ..utils.images import annotate_image, as_pil, make_transform  # noqa: F401  (annotate_image: API)
from ..loading import eval_mode, fit_batch, label_names_of, load_model, warn_if_untrained
from ..notes import temperature_of
from ..evaluation.scores import calibrated_probs

if TYPE_CHECKING:  # annotations only: torch is imported inside the functions
    import torch



PROGRESS_MIN_INPUTS = 10


class NoInputError(ToolError):
    """No input file to predict."""

    exit_status = 1


def _flatten_inputs(inputs) -> List[Tuple[str, Any]]:
    """(name, item) pairs; a single input, a list, or an NCHW tensor (one input per image)."""
    from PIL import Image

    if isinstance(inputs, (str, Path, Image.Image)) or (hasattr(inputs, 'ndim') and inputs.ndim in (2, 3)):
        inputs = [inputs]
    elif hasattr(inputs, 'ndim') and inputs.ndim == 4:
        inputs = list(inputs)
    out = []
    for i, x in enumerate(inputs):
        if isinstance(x, (str, Path)):
            name = str(x)
        else:
            name = f'<{type(x).__name__} {i}>'
        out.append((name, x))
    return out


# ---------------------------------------------------------------------------------------- predicting

def _device_of(device):
    import torch
    return torch.device(device) if device is not None else torch.device('cpu')


def _fill(slot: Dict[str, Any], probs: List[float], names: Sequence[str], topk: Optional[int]) -> None:
    best = max(range(len(probs)), key=probs.__getitem__)
    slot['label'] = names[best]
    slot['score'] = probs[best]
    slot['probabilities'] = dict(zip(names, probs))
    if topk:
        order = sorted(range(len(probs)), key=lambda i: -probs[i])[:topk]
        slot['topk'] = [dict(label=names[i], probability=probs[i]) for i in order]


def iter_predict(
        inputs,
        model,
        batch_size: int = 32,
        device: Union[str, 'torch.device'] = 'cpu',
        faces: bool = False,
        topk: Optional[int] = None,
        margin: float = DEFAULT_MARGIN,
        img_size: Optional[int] = None,
        progress: Optional[bool] = None,
        detect_max_side: Optional[int] = None,
        detector: str = 'auto',
        align: bool = True,
) -> Iterator[Dict[str, Any]]:
    """Like `predict`, but yields each input's result (in input order) as soon as its batch has run.

    Only preprocessed tensors are held between batches, not decoded images, so a folder of large
    photos streams through in constant memory.
    """
    import torch
    from tqdm import tqdm

    if isinstance(model, str):
        model = load_model(model_name=model)
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    names = label_names_of(model)
    warn_if_untrained(model)
    transform, cfg = make_transform(model, img_size)
    batch_size = fit_batch(model, cfg['input_size'], batch_size)  # before anything is allocated
    temperature = temperature_of(model.pretrained_cfg)  # calibrated scores (1.0 when the model has none)
    framing = framing_of(model.pretrained_cfg)
    if faces:
        detector = require_detector(detector)
    device = _device_of(device)
    model.to(device)
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    items = _flatten_inputs(inputs)
    bar = tqdm(total=len(items), unit='img', file=sys.stderr, dynamic_ncols=True,
               disable=not (progress if progress is not None else len(items) >= PROGRESS_MIN_INPUTS))
    pending: List[List[Any]] = []                    # [result, crops still to classify], input order
    queue: List[Tuple[Any, Dict[str, Any], List[Any]]] = []  # (tensor, slot to fill, its pending entry)

    def run_batch():
        batch = queue[:batch_size]
        del queue[:batch_size]
        x = torch.stack([t for t, _, _ in batch]).to(device, dtype)
        with torch.inference_mode():
            probs = calibrated_probs(model(x), temperature).cpu().tolist()
        for (_, slot, entry), p in zip(batch, probs):
            _fill(slot, p, names, topk)
            entry[1] -= 1

    def ready():
        while pending and pending[0][1] == 0:
            result = pending.pop(0)[0]
            if faces and result.get('faces'):
                main = result['faces'][largest_index([f['box'] for f in result['faces']])]
                result.update({k: v for k, v in main.items() if k in ('label', 'score', 'probabilities', 'topk')})
            bar.update(1)
            yield result

    try:
        with eval_mode(model):
            for name, x in items:
                result: Dict[str, Any] = dict(input=name)
                crops = []
                try:
                    img = as_pil(x)
                    result['width'], result['height'] = img.size
                    if faces:
                        found = locate_faces(img, detector, max_side=detect_max_side)
                        result['detector'] = detector
                        result['faces'] = []
                        for face in found:
                            slot, face_img = face_slot(img, face, margin, framing if align else None)
                            result['faces'].append(slot)
                            crops.append((transform(face_img), slot))
                        if not found:
                            result.update(no_face(img.size, detect_max_side_for(detector, detect_max_side)))
                            if 'error' not in result:  # a face crop: the whole image is the face
                                crops.append((transform(img), result))
                    else:
                        crops.append((transform(img), result))
                except NoFaceDetector:
                    raise
                except Exception as e:  # one bad input never stops the batch
                    msg = str(e).splitlines()[0] if str(e) else ''
                    result.update(label=None, error=f'{type(e).__name__}: {msg}'.rstrip(': '))
                    crops = []
                del x
                entry = [result, len(crops)]
                pending.append(entry)
                queue.extend((t, slot, entry) for t, slot in crops)
                while len(queue) >= batch_size:
                    run_batch()
                yield from ready()
            while queue:
                run_batch()
            yield from ready()
    finally:
        bar.close()


def predict(
        inputs,
        model,
        batch_size: int = 32,
        device: Union[str, 'torch.device'] = 'cpu',
        faces: bool = False,
        topk: Optional[int] = None,
        margin: float = DEFAULT_MARGIN,
        img_size: Optional[int] = None,
        progress: Optional[bool] = None,
        detect_max_side: Optional[int] = None,
        detector: str = 'auto',
        align: bool = True,
) -> List[Dict[str, Any]]:
    """Classify the expression of each input, batching internally.

    Args:
        inputs: A path, PIL image, numpy array (HWC uint8 RGB/RGBA, HW grayscale), CHW tensor (raw
            pixels, uint8 or float in [0, 1]), a list of those, or an NCHW tensor (one input per image).
        model: A model (e.g. from `timm_msanet.loading.load_model`) or a model name. It is moved to
            `device` and run in eval mode (its train/eval mode is restored afterwards).
        batch_size: Images (or face crops) per forward pass.
        device: Torch device.
        faces: Detect faces and classify each one (see the module docstring).
        topk: Also return the k most probable labels, best first, under 'topk'.
        margin: Face crop margin, a fraction of the face side added on every side.
        img_size: Override the model cfg's input size (default: the size the model was trained at).
        progress: Show a tqdm bar on stderr (default: with 10 or more inputs).
        detect_max_side: Longest side the face detector sees (larger images are scaled down for it); default the
            detector's own (`faces.DETECT_MAX_SIDE`: 4096 for dlib, a 12 MP photo at full resolution, 1024 else).
        detector: 'auto' (default: 'dlib' with the landmarks extra installed, else 'haar'), 'haar' (OpenCV,
            boxes only), 'dlib' (HOG detector with a score and five landmarks) or 'dlib-cnn' (dlib's CNN
            detector: more poses and occlusions, 5-20 s a photo on 2 CPU cores). Results name it ('detector').
        align: With landmarks, classify each face rotated and scaled to the framing the model was trained
            with (`faces.framing_of`); False, or a detector without landmarks: the square crop of the box.

    Returns:
        One dict per input, in order: 'input' (path or '<type index>'), 'width', 'height', 'label',
        'score' (its probability), 'probabilities' ({label name: probability} in the model's class
        order), 'topk' when asked; with faces=True also 'faces': [{'box': [x0, y0, x1, y1],
        'crop': [...] or 'aligned': {...}, 'detector_score' and 'landmarks' (dlib), 'label', 'score',
        'probabilities'(, 'topk')}], left to right, the image's label being its largest face's. A failed input
        has 'label': None and 'error'.
    """
    return list(iter_predict(inputs, model, batch_size=batch_size, device=device, faces=faces, topk=topk,
                             margin=margin, img_size=img_size, progress=progress, detect_max_side=detect_max_side,
                             detector=detector, align=align))


# ------------------------------------------------------------------------------------------ drawing


def collect_files(paths: Iterable[str], exclude: Optional[Path] = None) -> List[Tuple[Path, Path]]:
    """(file, root) pairs: files as given, folders searched recursively for image extensions (sorted). A file
    reached twice (given and inside a given folder) comes once. `exclude` is predict's own --annotate folder,
    whose copies would come back as inputs on the next run: inside a searched folder it is not searched, and
    when it is the searched folder itself, its `*_annotated*` copies are left out."""
    import re
    from PIL import Image

    exts = {e.lower() for e in Image.registered_extensions()}
    skip = Path(os.path.realpath(exclude)) if exclude is not None and exclude.is_dir() else None
    out, seen = [], set()

    def real(f: Path) -> Path:  # os.path.realpath, unlike Path.resolve, does not raise on a symlink loop
        return Path(os.path.realpath(f))

    def ours(f: Path, root: Path) -> bool:
        if skip is None:
            return False
        where = real(f)
        if skip == real(root):
            return where.parent == skip and re.search(r'_annotated\d*$', f.stem) is not None
        return skip in where.parents

    def add(f: Path, root: Path) -> None:
        key = real(f)
        if key not in seen:
            seen.add(key)
            out.append((f, root))
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob('*') if f.is_file() and f.suffix.lower() in exts
                           and not any(part.startswith('.') for part in f.relative_to(p).parts) and not ours(f, p))
            for f in files:
                add(f, p)
        else:
            add(p, p.parent)  # a missing path is reported as that input's error
    return out
