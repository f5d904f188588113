"""Predict facial expressions for images or folders of images, optionally for every face found in raw photos.

Python API::

    from timm_msanet.loading import load_model
    from timm_msanet.predict import predict
    model = load_model(checkpoint='model_best.pth.tar', model_name='msanet_r18')
    results = predict(['a.jpg', pil_image, numpy_hwc_uint8], model, batch_size=32, faces=False, topk=3)
    results[0]['label'], results[0]['probabilities']          # 'happiness', {'anger': 0.01, ...}

Choices made here (where FER tools differ and nothing fixes one answer):

* Preprocessing and input decoding: see `timm_msanet.images` (the model's own data config; any image
  mode, array or tensor made 8-bit RGB first).
* A model whose classifier never learned expressions (random weights, or the `tv_in1k` ImageNet
  starting point) still predicts, with a UserWarning saying its labels are meaningless.
* A file that cannot be read (missing, not an image, truncated, over PIL's decompression-bomb limit)
  gives a result with an `error` field and no label; the batch goes on. Tiny images (1x1) are
  upsampled by the squash resize like any other.
* Faces (`faces=True`): see `timm_msanet.faces` (detectors: `auto` is dlib with the landmarks extra, faces
  aligned as the model was trained, else the Haar cascade and the square crop with `margin`). Faces come
  largest first; the image's own `label`/`probabilities` are those of the largest face. An image with no
  face gets `error: 'no face detected'`, an empty `faces` list and no label (it is not classified whole:
  use `faces=False` for face crops).
* `annotate_image` draws with PIL only. The CLI writes annotated copies under `--annotate OUTDIR`,
  mirroring the inputs' folder structure, as JPEG for JPEG inputs and PNG otherwise; it never writes a
  path that is one of the inputs (it adds `_annotated` to the name instead).
* Every output file (`--json`, `--csv`, annotated images, videos and timelines) is written as
  `timm_msanet.outputs` writes files: never an input, never through a link, an existing file only with
  `--overwrite`, atomically. All of them are checked before the first image is read, so a refused output
  costs no work.
* The CLI exits 1 only when no input could be predicted (no file, or every one failed); per-file errors
  are in the output with the others.
* Videos (`predict VIDEO --faces`) go through `timm_msanet.video` (tracking, smoothing, timeline, annotated
  video); one run takes images or videos, not both, since the two give different tables.
"""
import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import ToolError
from .faces import (DEFAULT_MARGIN, DETECT_MAX_SIDE, DETECTORS, NoFaceDetector, face_slot, framing_notice,
                    framing_of, locate_faces, require_detector, resolve_detector)
from .images import annotate_image, as_pil, make_transform  # noqa: F401  (annotate_image: API)
from .loading import add_model_args, eval_mode, label_names_of, load_model, model_from_args, warn_if_untrained
from .notes import temperature_of
from .options import device, face_margin, non_negative_float, positive_float, positive_int
from .outputs import OutputError, add_overwrite_argument, atomic_path, check_output, printable, write_output
from .scores import calibrated_probs
from .video import (DEFAULT_SMOOTH_S, AnnotatedVideoWriter, VideoError, VideoReader, analyze_video, is_video,
                    plot_timeline, summary_lines)
from .video import csv_rows as video_csv_rows

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
        detect_max_side: int = DETECT_MAX_SIDE,
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
    transform, _ = make_transform(model, img_size)
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
                result.update({k: v for k, v in result['faces'][0].items() if k in ('label', 'score', 'probabilities',
                                                                                    'topk')})
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
                            result['label'] = None
                            result['error'] = 'no face detected'
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
        detect_max_side: int = DETECT_MAX_SIDE,
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
        detect_max_side: Longest side the face detector sees (larger images are scaled down for it).
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
        'probabilities'(, 'topk')}], largest first, the image's label being its largest face's. A failed input
        has 'label': None and 'error'.
    """
    return list(iter_predict(inputs, model, batch_size=batch_size, device=device, faces=faces, topk=topk,
                             margin=margin, img_size=img_size, progress=progress, detect_max_side=detect_max_side,
                             detector=detector, align=align))


# ------------------------------------------------------------------------------------------ drawing

# ---------------------------------------------------------------------------------------------- CLI

def collect_files(paths: Iterable[str], exclude: Optional[Path] = None) -> List[Tuple[Path, Path]]:
    """(file, root) pairs: files as given, folders searched recursively for image extensions (sorted). A file
    reached twice (given and inside a given folder) comes once. `exclude` is predict's own --annotate folder,
    whose copies would come back as inputs on the next run: inside a searched folder it is not searched, and
    when it is the searched folder itself, its `*_annotated*` copies are left out."""
    import re
    from PIL import Image

    exts = {e.lower() for e in Image.registered_extensions()}
    skip = exclude.resolve() if exclude is not None and exclude.is_dir() else None
    out, seen = [], set()

    def ours(f: Path, root: Path) -> bool:
        if skip is None:
            return False
        real = f.resolve()
        if skip == root.resolve():
            return real.parent == skip and re.search(r'_annotated\d*$', f.stem) is not None
        return skip in real.parents

    def add(f: Path, root: Path) -> None:
        key = f.resolve()
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


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('paths', nargs='+', metavar='PATH',
                        help='image files and folders (searched recursively), or video files (with --faces)')
    add_model_args(parser)
    parser.add_argument('--faces', action='store_true', help='detect faces, classify each')
    parser.add_argument('--detector', choices=DETECTORS, default='auto',
                        help='auto (default): dlib when the landmarks extra is installed, else haar; haar: OpenCV '
                             'frontal cascade, boxes only (the faces extra); dlib: HOG detector with a score and '
                             'five landmarks, faces aligned (the landmarks extra); dlib-cnn: its CNN detector, finds '
                             'more faces, 5-20 s a photo on CPU')
    parser.add_argument('--no-align', action='store_true',
                        help='with landmarks: classify the square crop of the box instead of the aligned face')
    parser.add_argument('--margin', type=face_margin, default=DEFAULT_MARGIN,
                        help='face crop margin: fraction of the face side added on every side (default 0.2)')
    parser.add_argument('--topk', type=positive_int, default=None, help='print and store the k most probable labels')
    parser.add_argument('--batch-size', type=positive_int, default=32)
    parser.add_argument('--device', type=device, default='cpu')
    out = parser.add_mutually_exclusive_group()
    out.add_argument('--json', default=None, metavar='OUT', help="write results as JSON ('-' for stdout)")
    out.add_argument('--csv', default=None, metavar='OUT', help="write results as CSV ('-' for stdout), a row per face")
    parser.add_argument('--annotate', default=None, metavar='OUTDIR', help='write copies with boxes and labels here')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    add_overwrite_argument(parser, '--json/--csv files and annotated copies')
    v = parser.add_argument_group('video (mp4, mov, avi, mkv, webm; with --faces)')
    v.add_argument('--fps', type=positive_float, default=None,
                   help='analyse this many frames per second (default: every frame)')
    v.add_argument('--smooth', type=non_negative_float, default=DEFAULT_SMOOTH_S, metavar='SECONDS',
                   help=f'average each face\'s probabilities over the trailing SECONDS '
                        f'(default {DEFAULT_SMOOTH_S:g}; 0: off)')


def _annotated_path(file: Path, root: Path, outdir: Path, inputs: set, taken: set, by_root: bool = False) -> Path:
    """Where the annotated copy of `file` goes: its path under its input folder, mirrored under `outdir` (under the
    folder's own name too when several folders are given, so a.jpg of two folders do not collide)."""
    try:
        rel = file.relative_to(root)
    except ValueError:
        rel = Path(file.name)
    if by_root:
        rel = Path(root.name or 'root') / rel
    ext = '.jpg' if file.suffix.lower() in ('.jpg', '.jpeg') else '.png'
    out = outdir / rel.with_suffix(ext)
    n = 0
    while out.resolve() in inputs or out.resolve() in taken:
        n += 1
        out = out.with_name(f'{rel.stem}_annotated{"" if n == 1 else n}{ext}')
    taken.add(out.resolve())
    return out


def _line(r: Dict[str, Any], topk: Optional[int]) -> str:
    def one(d):
        if topk and d.get('topk'):
            return ', '.join(f"{t['label']} {t['probability']:.3f}" for t in d['topk'])
        return f"{d['label']} {d['score']:.3f}"

    name = printable(r['input'])  # a file name with a newline or escape sequence cannot forge a line
    if 'faces' in r and r['faces']:
        return f"{name}: " + '; '.join(f"face {f['box']}: {one(f)}" for f in r['faces'])
    if r.get('error'):
        return f"{name}: ERROR {printable(r['error'])}"
    return f"{name}: {one(r)}"


def _csv_rows(results: List[Dict[str, Any]], names: Sequence[str]):
    """One row per face (faces numbered from 1, largest first, as video tracks are), with what the JSON has:
    the detector, its score, whether the face was aligned (its rotation) and the five landmarks."""
    marks = ('right_eye', 'left_eye', 'nose', 'mouth_right', 'mouth_left')
    header = ['input', 'face', 'x0', 'y0', 'x1', 'y1', 'label', 'score', *names, 'detector', 'detector_score',
              'aligned_rotation', *(f'{m}_{axis}' for m in marks for axis in 'xy'), 'error']
    yield header
    for r in results:
        slots = r.get('faces') or [None]
        for i, f in enumerate(slots, 1):
            d = f if f is not None else r
            box = f['box'] if f is not None else ['', '', '', '']
            probs = d.get('probabilities') or {}
            lms = (f or {}).get('landmarks') or {}
            aligned = (f or {}).get('aligned')
            yield [printable(r['input']), '' if f is None else i, *box, d.get('label') or '',
                   '' if d.get('score') is None else f"{d['score']:.6f}",
                   *[f'{probs[n]:.6f}' if n in probs else '' for n in names],
                   r.get('detector') or '', '' if (f or {}).get('detector_score') is None else
                   f"{f['detector_score']:.4f}", '' if not aligned else f"{aligned['rotation']:.2f}",
                   *(f'{lms[m][k]:.1f}' if m in lms else '' for m in marks for k in (0, 1)),
                   printable(r.get('error') or '')]


def _check_tables(args: argparse.Namespace, inputs: Iterable[Path]) -> None:
    """Refuse a `--json`/`--csv` path before any work (an input, a link, a folder, an existing file)."""
    inputs = list(inputs)
    for flag, target in (('--json', args.json), ('--csv', args.csv)):
        if target and target != '-':
            check_output(target, inputs, args.overwrite, flag)


def _write_tables(args: argparse.Namespace, results: List[Dict[str, Any]], csv_rows: Iterable[List[Any]],
                  inputs: Iterable[Path]) -> None:
    """`--json OUT` (the results as they are) or `--csv OUT` (the given rows); '-' is stdout."""
    inputs = list(inputs)
    for flag, target, render in (('--json', args.json, lambda: json.dumps(results, indent=2) + '\n'),
                                 ('--csv', args.csv, lambda: _csv_text(csv_rows))):
        if not target:
            continue
        if target == '-':
            sys.stdout.write(render())
            sys.stdout.flush()
        else:
            write_output(target, render(), inputs, args.overwrite, flag)


def _csv_text(rows: Iterable[List[Any]]) -> str:
    buf = io.StringIO(newline='')
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def _note_framing(model, args: argparse.Namespace) -> None:
    note = framing_notice(model, args.detector, not args.no_align)
    if note:
        print(note, file=sys.stderr)


def run_videos(args: argparse.Namespace, videos: List[Path]) -> int:
    """`predict VIDEO... --faces`: a per-frame, per-face table, a summary per face, timelines, annotated videos."""
    import time

    if not args.faces:
        raise VideoError('a video is analysed face by face: add --faces (each face is followed across frames)')
    require_detector(args.detector)
    outdir = Path(args.annotate) if args.annotate else None
    _check_tables(args, videos)
    if outdir is not None:
        for video in videos:
            for suffix in ('_annotated.mp4', '_timeline.png'):
                check_output(outdir / f'{video.stem}{suffix}', videos, args.overwrite, '--annotate output')
    model = model_from_args(args)
    _note_framing(model, args)
    names = label_names_of(model)
    results = []
    for video in videos:
        writer = None
        started = time.perf_counter()
        try:
            if outdir is not None:
                probe = VideoReader(video)  # the annotated video plays at the analysed rate
                probe.cap.release()
                reader_fps = args.fps or probe.info['nominal_fps'] or 25.0
                writer = AnnotatedVideoWriter(outdir / f'{video.stem}_annotated.mp4', reader_fps, videos,
                                              args.overwrite)
            res = analyze_video(video, model, fps=args.fps, batch_size=args.batch_size, device=args.device,
                                margin=args.margin, smooth=args.smooth, on_frame=writer, detector=args.detector,
                                align=not args.no_align,
                                progress=not args.no_progress and sys.stderr.isatty())
        except VideoError as e:
            if writer is not None:
                writer.close(ok=False)
            if len(videos) == 1:
                raise
            res = dict(input=str(video), error=str(e), rows=[], faces={}, info=None)
        except BaseException:
            if writer is not None:
                writer.close(ok=False)
            raise
        else:
            if writer is not None:
                writer.close()
        elapsed = time.perf_counter() - started
        if res.get('info'):
            info = res['info']
            res['timing'] = dict(res.get('timing') or {}, total_s=round(elapsed, 3),
                                 frames_per_s=round(info['frames_sampled'] / max(elapsed, 1e-9), 2))
            if writer is not None and writer.writer is not None:
                res['annotated'] = str(writer.path)
            if outdir is not None and res['rows']:
                png = outdir / f'{video.stem}_timeline.png'
                if plot_timeline(res, png, args.overwrite):
                    res['timeline'] = str(png)
        results.append(res)
        if '-' not in (args.json, args.csv):
            for line in (summary_lines(res) if res.get('info') else [f"{res['input']}: ERROR {res['error']}"]):
                print(printable(line))
            for key in ('annotated', 'timeline'):
                if res.get(key):
                    print(f'  wrote {res[key]}')
        if res.get('info'):
            t = res['timing']
            print(f"{video}: {res['info']['frames_sampled']} frames in {t['total_s']:.1f} s = {t['frames_per_s']:.1f} "
                  f"frames/s (decode {res['info']['decode_s']:.1f} s, detect {t['detect_s']:.1f} s, model "
                  f"{t['model_s']:.1f} s)", file=sys.stderr)
    _write_tables(args, results, video_csv_rows(results, names), videos)
    return 0 if any(r['rows'] for r in results) else 1


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    videos = [Path(p) for p in args.paths if is_video(p)]
    if videos:
        if len(videos) != len(args.paths):
            raise VideoError('give either videos or images (and folders of images), not both in one run')
        return run_videos(args, videos)
    files = collect_files(args.paths, exclude=Path(args.annotate) if args.annotate else None)
    if not files:
        found_videos = [f for p in map(Path, args.paths) if p.is_dir() for f in p.rglob('*') if is_video(f)]
        hint = (f'; {len(found_videos)} video file(s) there (e.g. {found_videos[0]}): give videos by name, with '
                f'--faces' if found_videos else '')
        raise NoInputError(f'no image files found in {", ".join(args.paths)} (searched folders recursively for '
                           f'image file extensions){hint}')
    if args.margin != DEFAULT_MARGIN and (not args.faces or (not args.no_align and resolve_detector(args.detector)
                                                             != 'haar')):
        import warnings
        warnings.warn('--margin sets the square crop around a detected face; it is unused '
                      + ('without --faces' if not args.faces else 'when faces are aligned by their landmarks '
                         '(add --no-align to crop the box with a margin)'), UserWarning, stacklevel=2)
    if args.faces:
        require_detector(args.detector)
    outdir = Path(args.annotate) if args.annotate else None
    input_paths = {f.resolve() for f, _ in files}
    _check_tables(args, input_paths)
    annotated: List[Path] = []
    if outdir is not None:  # every annotated copy's path, checked before any work
        taken: set = set()
        by_root = len({root for _, root in files}) > 1
        annotated = [check_output(_annotated_path(file, root, outdir, input_paths, taken, by_root), input_paths,
                                  args.overwrite, '--annotate output') for file, root in files]
    model = model_from_args(args)
    if args.faces:
        _note_framing(model, args)
    names = label_names_of(model)
    results = []
    quiet_stdout = '-' in (args.json, args.csv)
    progress = False if args.no_progress or not sys.stderr.isatty() else len(files) >= PROGRESS_MIN_INPUTS
    predictions = iter_predict([str(f) for f, _ in files], model, batch_size=args.batch_size, device=args.device,
                               faces=args.faces, topk=args.topk, margin=args.margin, detector=args.detector,
                               align=not args.no_align, progress=progress)
    for i, ((file, root), r) in enumerate(zip(files, predictions)):
        if outdir is not None and 'width' in r:
            out = annotated[i]
            try:
                with atomic_path(out, input_paths, args.overwrite, '--annotate output') as tmp:
                    annotate_image(file, r).save(tmp, **(dict(format='JPEG', quality=92) if out.suffix == '.jpg'
                                                         else dict(format='PNG')))
                r['annotated'] = str(out)
            except OutputError as e:
                r['annotate_error'] = str(e)
            except Exception as e:
                r['annotate_error'] = f'{type(e).__name__}: {e}'
        results.append(r)
        if not quiet_stdout:
            # through the bar: in a terminal a plain print lands after the bar's text on the same line
            tqdm.write(_line(r, args.topk), file=sys.stdout)
            sys.stdout.flush()
    _write_tables(args, results, _csv_rows(results, names), input_paths)
    ok = sum(1 for r in results if r.get('label'))
    failed = len(results) - ok
    print(f'{ok} of {len(results)} inputs predicted' + (f', {failed} failed' if failed else ''), file=sys.stderr)
    if not args.faces:
        hint = _whole_photo_hint(files, results, model)
        if hint:
            print(hint, file=sys.stderr)
    return 0 if ok else 1


def _whole_photo_hint(files, results, model) -> Optional[str]:
    """A line when a photo much larger than the model's input, with a face in it, was classified whole (the
    model then labels the whole picture, not the face). Checks the first such photo with the Haar cascade,
    when OpenCV is installed; silent otherwise."""
    side = int(tuple(model.pretrained_cfg.get('input_size') or (3, 224, 224))[-1])
    big = next((f for (f, _), r in zip(files, results) if min(r.get('width') or 0, r.get('height') or 0) > 4 * side),
               None)
    if big is None:
        return None
    try:
        from .faces import detect_faces
        found = detect_faces(as_pil(big))
    except (NoFaceDetector, OSError, ValueError):
        return None
    if not found:
        return None
    return (f'hint: {printable(big)} is a {len(found)}-face photo classified whole; the model expects one face '
            f'filling the image: add --faces to classify each face')
