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
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ..utils.errors import ToolError
from .faces import DEFAULT_MARGIN, NoFaceDetector, face_slot, largest_index, locate_faces, no_face, require_detector
from .faces import detect_max_side as detect_max_side_for
from ..utils.images import as_pil
from ..loading import ExpressionModel, load_model

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

def fill_scores(slot: Dict[str, Any], probs: List[float], names: Sequence[str], topk: Optional[int] = None) -> None:
    """Write label, score, probabilities (and the top k) of one image or face into its result dict."""
    best = max(range(len(probs)), key=probs.__getitem__)
    slot['label'] = names[best]
    slot['score'] = probs[best]
    slot['probabilities'] = dict(zip(names, probs))
    if topk:
        order = sorted(range(len(probs)), key=lambda i: -probs[i])[:topk]
        slot['topk'] = [dict(label=names[i], probability=probs[i]) for i in order]


def _crops_of(name: str, x, transform, faces: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Any], List[Any]]:
    """(result, [(tensor, slot to fill)]) of one input: the whole image, or each face found in it. A bad input
    gives a result with an error and no crop: one bad file never stops the batch."""
    result: Dict[str, Any] = dict(input=name)
    try:
        img = as_pil(x)
        result['width'], result['height'] = img.size
        if faces is None:
            return result, [(transform(img), result)]
        found = locate_faces(img, faces['detector'], max_side=faces['max_side'])
        result.update(detector=faces['detector'], faces=[])
        crops = []
        for face in found:
            slot, face_img = face_slot(img, face, faces['margin'], faces['framing'])
            result['faces'].append(slot)
            crops.append((transform(face_img), slot))
        if not found:
            result.update(no_face(img.size, detect_max_side_for(faces['detector'], faces['max_side'])))
            if 'error' not in result:  # a face crop: the whole image is the face
                crops.append((transform(img), result))
        return result, crops
    except NoFaceDetector:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ''
        result.update(label=None, error=f'{type(e).__name__}: {msg}'.rstrip(': '))
        return result, []


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
    photos streams through in constant memory (`loading.engine.Batcher`).
    """
    import torch
    from tqdm import tqdm

    if isinstance(inputs, (torch.nn.Module, ExpressionModel)) and not isinstance(model, (torch.nn.Module,
                                                                                           ExpressionModel)):
        raise TypeError('predict(inputs, model): the images come first and the model second, as in '
                        'predict(["face.png"], model); got the model first')
    record = ExpressionModel.of(load_model(model_name=model) if isinstance(model, str) else model)
    record.warn_if_untrained()
    engine = record.engine(device=device, batch_size=batch_size, img_size=img_size)
    face_options = dict(detector=require_detector(detector), max_side=detect_max_side, margin=margin,
                        framing=record.framing if align else None) if faces else None
    items = _flatten_inputs(inputs)
    bar = tqdm(total=len(items), unit='img', file=sys.stderr, dynamic_ncols=True,
               disable=not (progress if progress is not None else len(items) >= PROGRESS_MIN_INPUTS))

    def finished(done):
        for (result, slots), probs in done:
            for slot, p in zip(slots, probs):
                fill_scores(slot, p, record.label_names, topk)
            if faces and result.get('faces'):
                main = result['faces'][largest_index([f['box'] for f in result['faces']])]
                result.update({k: v for k, v in main.items() if k in ('label', 'score', 'probabilities', 'topk')})
            bar.update(1)
            yield result

    batcher = engine.batcher()
    try:
        for name, x in items:
            result, crops = _crops_of(name, x, engine.transform, face_options)
            yield from finished(batcher.add((result, [slot for _, slot in crops]), [t for t, _ in crops]))
        yield from finished(batcher.finish())
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
            with (`ExpressionModel.framing`); False, or a detector without landmarks: the square crop of the box.

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
