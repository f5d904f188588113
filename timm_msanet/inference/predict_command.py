"""Predict facial expressions for images, folders or videos, optionally for every face found in raw photos.

    timm-msanet predict PATH... [--faces] [--csv FILE] [--json FILE] [--annotate OUTDIR] [--overwrite]

The command around `timm_msanet.inference.predict` (images) and `timm_msanet.inference.video` (videos): its
options, the tables (JSON, CSV), the annotated copies and the summary lines; what it decides is listed in
predict.py's docstring."""
import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .faces import (DEFAULT_MARGIN, DETECT_MAX_SIDE, DETECTORS, VIDEO_DETECT_MAX_SIDE, NoFaceDetector,
                    framing_notice, require_detector, resolve_detector)
from ..utils.images import annotate_image, as_pil, collect_files
from ..loading import add_model_args, model_from_args
from ..utils.options import device, face_margin, non_negative_float, positive_float, positive_int
from ..utils.outputs import (OutputError, add_overwrite_argument, atomic_path, check_output, csv_text, printable,
                             write_output)
from .predict import NoInputError, PROGRESS_MIN_INPUTS, iter_predict
from .video import (DEFAULT_SMOOTH_S, AnnotatedVideoWriter, VideoError, VideoReader, analyze_video, is_video,
                    plot_timeline, summary_lines)
from .video import csv_rows as video_csv_rows



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
    parser.add_argument('--detect-max-side', type=positive_int, default=None, metavar='PX',
                        help=f'with --faces: the longest side the face detector sees; larger images are scaled down '
                             f'for it (photos: {DETECT_MAX_SIDE["dlib"]} for dlib, a 12-megapixel photo at full '
                             f'resolution, {DETECT_MAX_SIDE["haar"]} for haar and dlib-cnn; video frames: '
                             f'{VIDEO_DETECT_MAX_SIDE}). Lower is faster and misses small faces')
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
    while Path(os.path.realpath(out)) in inputs or Path(os.path.realpath(out)) in taken:
        n += 1
        out = out.with_name(f'{rel.stem}_annotated{"" if n == 1 else n}{ext}')
    taken.add(Path(os.path.realpath(out)))
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
    """One row per face (faces numbered from 1, left to right, as video tracks are), with what the JSON has:
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
                                 ('--csv', args.csv, lambda: csv_text(csv_rows))):
        if not target:
            continue
        if target == '-':
            sys.stdout.write(render())
            sys.stdout.flush()
        else:
            write_output(target, render(), inputs, args.overwrite, flag)


def _note_framing(record, args: argparse.Namespace) -> None:
    note = framing_notice(record.framing_recorded, args.detector, not args.no_align)
    if note:
        print(note, file=sys.stderr)


def run_videos(args: argparse.Namespace, videos: List[Path]) -> int:
    """`predict VIDEO... --faces`: a per-frame, per-face table, a summary per face, timelines, annotated videos."""
    if not args.faces:
        raise VideoError('a video is analysed face by face: add --faces (each face is followed across frames)')
    require_detector(args.detector)
    outdir = Path(args.annotate) if args.annotate else None
    _check_tables(args, videos)
    if outdir is not None:
        for video in videos:
            for suffix in ('_annotated.mp4', '_timeline.png'):
                check_output(outdir / f'{video.stem}{suffix}', videos, args.overwrite, '--annotate output')
    record = model_from_args(args)
    _note_framing(record, args)
    results = []
    for video in videos:
        res = _analyse_video(args, video, record, outdir, videos)
        results.append(res)
        _report_video(args, res, video)
    _write_tables(args, results, list(video_csv_rows(results, record.label_names)), videos)
    return 0 if any(r['rows'] for r in results) else 1


def _analyse_video(args: argparse.Namespace, video: Path, record, outdir: Optional[Path], videos: List[Path]):
    """One video's result, its annotated copy and timeline written; a video that cannot be read is a row with its
    error when there are others (alone, its VideoError is the command's)."""
    import time
    writer = None
    started = time.perf_counter()
    try:
        if outdir is not None:
            probe = VideoReader(video)  # the annotated video plays at the analysed rate
            probe.cap.release()
            writer = AnnotatedVideoWriter(outdir / f'{video.stem}_annotated.mp4',
                                          args.fps or probe.info['nominal_fps'] or 25.0, videos, args.overwrite)
        res = analyze_video(video, record, fps=args.fps, batch_size=args.batch_size, device=args.device,
                            margin=args.margin, smooth=args.smooth, on_frame=writer, detector=args.detector,
                            align=not args.no_align, detect_max_side=args.detect_max_side or VIDEO_DETECT_MAX_SIDE,
                            progress=not args.no_progress and sys.stderr.isatty())
    except BaseException as e:
        if writer is not None:
            writer.close(ok=False)
        if not isinstance(e, VideoError) or len(videos) == 1:
            raise
        return dict(input=str(video), error=str(e), rows=[], faces={}, info=None)
    if writer is not None:
        writer.close()
    elapsed = time.perf_counter() - started
    res['timing'] = dict(res.get('timing') or {}, total_s=round(elapsed, 3),
                         frames_per_s=round(res['info']['frames_sampled'] / max(elapsed, 1e-9), 2))
    if writer is not None and writer.writer is not None:
        res['annotated'] = str(writer.path)
    if outdir is not None and res['rows']:
        png = outdir / f'{video.stem}_timeline.png'
        if plot_timeline(res, png, args.overwrite):
            res['timeline'] = str(png)
    return res


def _report_video(args: argparse.Namespace, res: Dict[str, Any], video: Path) -> None:
    """The summary lines of one video on stdout (unless a table goes there) and its timing on stderr."""
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


def _image_files(args: argparse.Namespace) -> List[Tuple[Path, Path]]:
    """(file, root) of every image the paths name; NoInputError (saying what was found) when there is none."""
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
                         '(add --no-align to crop the box with a margin)'), UserWarning, stacklevel=3)
    return files


def _write_annotated(file: Path, r: Dict[str, Any], out: Path, input_paths: set, overwrite: bool) -> None:
    """The annotated copy of one input; a copy that cannot be written is recorded in `annotate_error`."""
    try:
        with atomic_path(out, input_paths, overwrite, '--annotate output') as tmp:
            annotate_image(file, r).save(tmp, **(dict(format='JPEG', quality=92) if out.suffix == '.jpg'
                                                 else dict(format='PNG')))
        r['annotated'] = str(out)
    except OutputError as e:
        r['annotate_error'] = str(e)
    except Exception as e:
        r['annotate_error'] = f'{type(e).__name__}: {e}'


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    videos = [Path(p) for p in args.paths if is_video(p)]
    if videos:
        if len(videos) != len(args.paths):
            raise VideoError('give either videos or images (and folders of images), not both in one run')
        return run_videos(args, videos)
    files = _image_files(args)
    if args.faces:
        require_detector(args.detector)
    outdir = Path(args.annotate) if args.annotate else None
    input_paths = {Path(os.path.realpath(f)) for f, _ in files}  # realpath: a symlink loop is an input's error
    _check_tables(args, input_paths)
    annotated: List[Path] = []
    if outdir is not None:  # every annotated copy's path, checked before any work
        taken: set = set()
        by_root = len({root for _, root in files}) > 1
        annotated = [check_output(_annotated_path(file, root, outdir, input_paths, taken, by_root), input_paths,
                                  args.overwrite, '--annotate output') for file, root in files]
    record = model_from_args(args)
    if args.faces:
        _note_framing(record, args)
    results = []
    progress = False if args.no_progress or not sys.stderr.isatty() else len(files) >= PROGRESS_MIN_INPUTS
    predictions = iter_predict([str(f) for f, _ in files], record, batch_size=args.batch_size, device=args.device,
                               faces=args.faces, topk=args.topk, margin=args.margin, detector=args.detector,
                               align=not args.no_align, progress=progress, detect_max_side=args.detect_max_side)
    for i, ((file, _), r) in enumerate(zip(files, predictions)):
        if outdir is not None and 'width' in r:
            _write_annotated(file, r, annotated[i], input_paths, args.overwrite)
        results.append(r)
        if r.get('note'):  # a face crop classified whole; an image scaled down for the detector with no face found
            tqdm.write(f"{printable(r['input'])}: note: {r['note']}", file=sys.stderr)
        if '-' not in (args.json, args.csv):
            # through the bar: in a terminal a plain print lands after the bar's text on the same line
            tqdm.write(_line(r, args.topk), file=sys.stdout)
            sys.stdout.flush()
    _write_tables(args, results, list(_csv_rows(results, record.label_names)), input_paths)
    return _finish(args, files, results, record)


def _finish(args: argparse.Namespace, files, results: List[Dict[str, Any]], record) -> int:
    """The closing lines on stderr and the exit status: 1 when nothing was predicted or a copy was not written."""
    ok = sum(1 for r in results if r.get('label'))
    failed = len(results) - ok
    print(f'{ok} of {len(results)} inputs predicted' + (f', {failed} failed' if failed else ''), file=sys.stderr)
    unwritten = [r for r in results if r.get('annotate_error')]
    for r in unwritten:  # an output that was asked for and not written is a failure, said on stderr
        print(f"{printable(r['input'])}: --annotate copy not written: {printable(r['annotate_error'])}",
              file=sys.stderr)
    if unwritten:
        return 1
    if not args.faces:
        hint = _whole_photo_hint(files, results, record.module)
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
