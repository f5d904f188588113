"""Expressions over time: every face of a video, followed across frames, as a table and a timeline.

    timm-msanet predict clip.mp4 --faces [--fps 5] [--smooth 1.0] [--csv faces.csv | --json faces.json]
        [--annotate OUTDIR]     # OUTDIR/clip_annotated.mp4 and OUTDIR/clip_timeline.png

Python::

    from timm_msanet.inference.video import analyze_video
    result = analyze_video('clip.mp4', model, fps=5)
    result['rows'][0]   # {'time': 0.0, 'frame': 0, 'face': 1, 'box': [...], 'label': ..., 'probabilities': ...}

Choices made here (where video FER tools differ):

* Decoder: OpenCV's `VideoCapture` (the FFmpeg build inside `opencv-python-headless`, already the `faces`
  extra), so mp4, avi, mov, mkv and webm need nothing more; the annotated video is written with its
  `VideoWriter` (MPEG-4 part 2 in .mp4, readable by common players). Faces: `timm_msanet.inference.faces` (the
  default detector is dlib with the landmarks extra, else Haar; `detector` in the result names it), the
  square crop or aligned face each face is classified on included.
* Time: each frame's own timestamp (the container's presentation time), so variable-frame-rate videos
  (phone recordings) get true times; `--fps N` keeps the first frame at or after every 1/N s (default:
  every frame). A video whose timestamps are missing falls back to frame index / nominal rate, and says so.
* Tracker: greedy matching of each frame's boxes to the faces seen in the last `max_gap` (1 s, or 2.5 sample
  intervals when `--fps` samples more sparsely: at `--fps 1` the kept frames are a little over 1 s apart) by overlap
  (intersection over union >= 0.3, best pairs first); an unmatched box starts a new face. Faces are
  numbered 1, 2, ... in order of first appearance, so "face 1" stays the person first seen.
* Smoothing: `smoothed` is the mean of a face's probabilities over the trailing `smooth` seconds (default
  1.0; 0 turns it off), causal so that live use would give the same numbers; `smoothed_label` is its argmax.
* Batching: the crops of consecutive frames are classified together, `batch_size` at a time.
* Bad input: a file OpenCV cannot open, or one with no frame, is a one-line error (VideoError); a
  truncated video keeps the rows of the frames that were read and records `truncated` with the frame
  count; a video with no face in any sampled frame keeps its (empty) frame list and says so in `error`.
"""
import math
import os
import sys
import time as _time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..utils.errors import ToolError, install_hint
from .faces import DEFAULT_MARGIN, VIDEO_DETECT_MAX_SIDE, face_slot, locate_faces, require_detector
from ..utils.images import annotate_image
from ..loading import ExpressionModel
from ..utils.outputs import atomic_path, check_output, printable, save_figure

VIDEO_EXTENSIONS = ('.mp4', '.m4v', '.mov', '.avi', '.mkv', '.webm')
DEFAULT_SMOOTH_S = 1.0
MATCH_IOU = 0.3
MAX_GAP_S = 1.0


def max_gap_for(fps: Optional[float]) -> float:
    """How long a face may go unseen and keep its id: MAX_GAP_S, or 2.5 sample intervals when sampling is sparser."""
    return max(MAX_GAP_S, 2.5 / fps) if fps else MAX_GAP_S


class VideoError(ToolError):
    """A video that cannot be read at all; the message says what was expected."""


def is_video(path) -> bool:
    return Path(str(path)).suffix.lower() in VIDEO_EXTENSIONS


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Greedy IoU tracker: face ids stay with the box they overlap most from one sampled frame to the next."""

    def __init__(self, min_iou: float = MATCH_IOU, max_gap_s: float = MAX_GAP_S):
        self.min_iou = min_iou
        self.max_gap_s = max_gap_s
        self.tracks: Dict[int, Tuple[Sequence[float], float]] = {}  # id -> (last box, last time)
        self.next_id = 1

    def update(self, boxes: Sequence[Sequence[float]], t: float) -> List[int]:
        live = {k: v for k, v in self.tracks.items() if t - v[1] <= self.max_gap_s}
        candidates = sorted(((_iou(box, live[k][0]), i, k) for i, box in enumerate(boxes) for k in live),
                            reverse=True)
        ids: List[Optional[int]] = [None] * len(boxes)
        used = set()
        for iou, i, k in candidates:
            if iou < self.min_iou:
                break
            if ids[i] is None and k not in used:
                ids[i] = k
                used.add(k)
        for i in range(len(boxes)):
            if ids[i] is None:
                ids[i] = self.next_id
                self.next_id += 1
        for i, k in enumerate(ids):
            self.tracks[k] = (boxes[i], t)
        return [int(k) for k in ids]


class VideoReader:
    """Frames of a video with their timestamps; `info` says what was found (and what went wrong)."""

    def __init__(self, path, fps: Optional[float] = None):
        try:
            import cv2
        except ImportError as e:
            raise VideoError(f'video needs OpenCV: {install_hint("faces")}') from e
        self.path = Path(str(path))
        if fps is not None and not fps > 0:
            raise VideoError(f'--fps must be a positive number of frames per second, got {fps}')
        if not self.path.is_file():
            raise VideoError(f'video {self.path} does not exist')
        if self.path.stat().st_size == 0:
            raise VideoError(f'video {self.path} is empty (0 bytes)')
        self.cv2 = cv2
        # FFmpeg's own log lines ("moov atom not found") would precede our one-line error; set the variable to
        # another level (e.g. 32) to see them
        os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')
        self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            raise VideoError(f'cannot read {self.path} as a video: expected an mp4, mov, avi, mkv or webm file that '
                             f"OpenCV's FFmpeg can decode (the file may be damaged, truncated or not a video)")
        self.fps = fps
        nominal = self.cap.get(cv2.CAP_PROP_FPS)
        self.info: Dict[str, Any] = dict(
            width=int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), height=int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            nominal_fps=round(nominal, 3) if nominal and math.isfinite(nominal) else None,
            frames_declared=int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), frames_read=0, frames_sampled=0,
            sample_fps=fps, timestamps='container', variable_frame_rate=False, truncated=False, decode_s=0.0)

    def __iter__(self) -> Iterator[Tuple[int, float, Any]]:
        from PIL import Image
        cv2 = self.cv2
        next_t = 0.0
        last_t = None
        intervals: List[float] = []
        index = 0
        try:
            while True:
                start = _time.perf_counter()
                ok, frame = self.cap.read()
                self.info['decode_s'] += _time.perf_counter() - start
                if not ok:
                    break
                t = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if index > 0 and (t <= 0 or (last_t is not None and t < last_t)):
                    self.info['timestamps'] = 'frame index / nominal rate'
                if self.info['timestamps'] != 'container':
                    t = index / (self.info['nominal_fps'] or 25.0)
                if last_t is not None:
                    intervals.append(t - last_t)
                last_t = t
                index += 1
                self.info['frames_read'] = index
                if self.fps is not None and t + 1e-6 < next_t:
                    continue
                if self.fps is not None:
                    next_t = (math.floor(t * self.fps + 1e-6) + 1) / self.fps
                self.info['frames_sampled'] += 1
                yield index - 1, round(t, 4), Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        finally:
            self.cap.release()
            declared = self.info['frames_declared']
            if declared and index < declared - 1:  # containers may over-count by one frame
                self.info['truncated'] = True
            if len(intervals) >= 2:
                mean = sum(intervals) / len(intervals)
                self.info['variable_frame_rate'] = bool(mean > 0 and (max(intervals) - min(intervals)) > 0.1 * mean)
        if index == 0:
            raise VideoError(f'{self.path} has no readable frame (zero-length or damaged video)')


def _smooth(history: List[Tuple[float, List[float]]], t: float, window: float) -> List[float]:
    recent = [p for s, p in history if t - s <= window + 1e-9]
    return [sum(col) / len(recent) for col in zip(*recent)]


class _Smoother:
    """Each face's trailing mean of probabilities over `window` s (causal), written into its rows."""

    def __init__(self, names: Sequence[str], window: float):
        self.names, self.window = list(names), window
        self.history: Dict[int, List[Tuple[float, List[float]]]] = {}

    def __call__(self, row: Dict[str, Any], t: float) -> None:
        h = self.history.setdefault(row['face'], [])
        h.append((t, list(row['probabilities'].values())))
        sm = _smooth(h, t, self.window) if self.window > 0 else list(row['probabilities'].values())
        row['smoothed'] = dict(zip(self.names, sm))
        row['smoothed_label'] = self.names[max(range(len(sm)), key=sm.__getitem__)]


def analyze_video(
        path,
        model,
        fps: Optional[float] = None,
        batch_size: int = 32,
        device: str = 'cpu',
        margin: float = DEFAULT_MARGIN,
        smooth: float = DEFAULT_SMOOTH_S,
        detect_max_side: int = VIDEO_DETECT_MAX_SIDE,
        progress: bool = False,
        on_frame=None,
        detector: str = 'auto',
        align: bool = True,
) -> Dict[str, Any]:
    """Detect, follow and classify every face of `path`. Returns dict(input, info, rows, faces, detector, error?,
    timing).

    rows: one per sampled frame and face: time (s), frame (index in the video), face (track id, 1-based), box
    [x0, y0, x1, y1], crop or aligned (with landmarks: detector_score, landmarks), label, score, probabilities,
    smoothed, smoothed_label. faces: per track id, first and last time, samples, and its most frequent
    smoothed label. `on_frame(index, time, image, rows)` is called once per sampled frame after its faces are
    classified (in order), e.g. to write an annotated video. The crops of consecutive frames share batches of
    the one engine (`loading.engine.Batcher`); tracking and smoothing are added around it.
    """
    from tqdm import tqdm

    detector = require_detector(detector)
    if smooth < 0:
        raise VideoError(f'--smooth must be >= 0 seconds, got {smooth}')
    reader = VideoReader(path, fps)
    record = ExpressionModel.of(model)
    record.warn_if_untrained()
    engine = record.engine(device=device, batch_size=batch_size)
    tracker = FaceTracker(max_gap_s=max_gap_for(fps))
    smoother = _Smoother(record.label_names, smooth)
    rows: List[Dict[str, Any]] = []
    timing = dict(detect_s=0.0, model_s=0.0)
    bar = tqdm(total=_frames_to_sample(reader.info, fps), unit='frame', file=sys.stderr, dynamic_ncols=True,
               disable=not progress, desc=Path(str(path)).name)
    faces = dict(detector=detector, max_side=detect_max_side, margin=margin, framing=record.framing if align else None)
    batcher = engine.batcher()
    try:
        for index, t, img in reader:
            crops, frame = _frame_crops(index, t, img, tracker, engine.transform, faces, timing)
            done = batcher.add(frame + ((img if on_frame is not None else None),), crops)
            rows += _finished_frames(done, record.label_names, smoother, on_frame, bar)
        rows += _finished_frames(batcher.finish(), record.label_names, smoother, on_frame, bar)
    finally:
        bar.close()
    timing['model_s'] = engine.seconds
    return _video_result(path, reader.info, rows, record.label_names, smooth, detector, timing)


def _frame_crops(index: int, t: float, img, tracker: FaceTracker, transform, faces: Mapping[str, Any],
                 timing: Dict[str, float]):
    """(preprocessed crop of each face, (index, time, its rows)) of one sampled frame, faces in track order."""
    start = _time.perf_counter()
    found = locate_faces(img, faces['detector'], max_side=faces['max_side'])
    ids = tracker.update([f.box for f in found], t)
    frame_rows, crops = [], []
    for face, face_id in sorted(zip(found, ids), key=lambda fi: fi[1]):
        slot, face_img = face_slot(img, face, faces['margin'], faces['framing'])
        frame_rows.append(dict(time=t, frame=index, face=face_id, **slot))
        crops.append(transform(face_img))
    timing['detect_s'] += _time.perf_counter() - start
    return crops, (index, t, frame_rows)


def _finished_frames(done, names: Sequence[str], smoother: '_Smoother', on_frame, bar) -> List[Dict[str, Any]]:
    """The rows of frames whose faces are classified, labelled and smoothed in time order; `on_frame` per frame."""
    rows = []
    for (index, t, frame_rows, img), probs in done:
        for row, p in zip(frame_rows, probs):
            best = max(range(len(p)), key=p.__getitem__)
            row.update(label=names[best], score=p[best], probabilities=dict(zip(names, p)))
            smoother(row, t)
            rows.append(row)
        if on_frame is not None:
            on_frame(index, t, img, frame_rows)
        bar.update(1)
    return rows


def _frames_to_sample(info: Mapping[str, Any], fps: Optional[float]) -> Optional[int]:
    total = info['frames_declared'] or None
    if total and fps and info['nominal_fps']:
        total = max(1, math.ceil(total * min(1.0, fps / info['nominal_fps'])))
    return total


def _video_result(path, info, rows, names, smooth, detector, timing) -> Dict[str, Any]:
    """The result dict of `analyze_video`: rows, per-face summary (first/last time, most frequent label)."""
    faces: Dict[int, Dict[str, Any]] = {}
    for r in rows:
        f = faces.setdefault(r['face'], dict(first_time=r['time'], last_time=r['time'], samples=0, labels={}))
        f['last_time'] = r['time']
        f['samples'] += 1
        f['labels'][r['smoothed_label']] = f['labels'].get(r['smoothed_label'], 0) + 1
    for f in faces.values():
        f['label'] = max(f['labels'], key=f['labels'].get)
        f['share'] = f['labels'][f['label']] / f['samples']
    result: Dict[str, Any] = dict(input=str(path), info=info, rows=rows, faces=faces, label_names=list(names),
                                  smooth_s=smooth, detector=detector,
                                  timing={k: round(v, 3) for k, v in timing.items()})
    if not rows:
        result['error'] = f'no face detected in any of the {info["frames_sampled"]} sampled frames'
    return result


# ------------------------------------------------------------------------------------------ outputs

CSV_HEAD = ('input', 'time', 'frame', 'face', 'x0', 'y0', 'x1', 'y1', 'label', 'score')


def csv_rows(results: Sequence[Dict[str, Any]], names: Sequence[str]) -> Iterator[List[Any]]:
    yield [*CSV_HEAD, *names, 'smoothed_label', *(f'smoothed_{n}' for n in names)]
    for res in results:
        for r in res['rows']:
            yield [printable(res['input']), f"{r['time']:.3f}", r['frame'], r['face'], *r['box'], r['label'],
                   f"{r['score']:.6f}",
                   *(f"{r['probabilities'][n]:.6f}" for n in names), r['smoothed_label'],
                   *(f"{r['smoothed'][n]:.6f}" for n in names)]


def plot_timeline(result: Dict[str, Any], path, overwrite: bool = False) -> bool:
    """One panel per face: its smoothed probability of every class over time, written to `path` under the
    rules of timm_msanet.utils.outputs. Needs matplotlib (`plot`); False when it is missing or no face was seen."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = result['label_names']
    ids = sorted(result['faces'])
    if not ids:
        return False
    fig, axes = plt.subplots(len(ids), 1, figsize=(9, 2.2 * len(ids) + 0.6), sharex=True, squeeze=False)
    colors = plt.get_cmap('tab10')
    for ax, face in zip(axes[:, 0], ids):
        rows = [r for r in result['rows'] if r['face'] == face]
        ts = [r['time'] for r in rows]
        for k, n in enumerate(names):
            ax.plot(ts, [r['smoothed'][n] for r in rows], color=colors(k % 10), label=n, lw=1.6, marker='.', ms=3)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f'face {face}')
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc='upper left', bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel('time (s)')
    smooth = result.get('smooth_s') or 0
    fig.suptitle(f"{Path(result['input']).name}: expression probabilities per face"
                 + (f' (mean over the last {smooth:g} s)' if smooth else ''), fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, overwrite, dpi=110)
    return True


class AnnotatedVideoWriter:
    """Writes the sampled frames with each face's box, id and smoothed label (`on_frame` of analyze_video).

    Frames go to a temporary file beside `path` (timm_msanet.utils.outputs); `close()` puts it in place, `close(False)`
    (the analysis failed) removes it, so a failed run never leaves a half-written video under the real name."""

    def __init__(self, path, fps: float, inputs=(), overwrite: bool = False):
        self.path = check_output(path, inputs, overwrite, 'annotated video')
        self.fps = fps
        self.writer = None
        self._output = atomic_path(self.path, inputs, overwrite, 'annotated video')
        self._tmp = None

    def __call__(self, index: int, t: float, img, rows: List[Dict[str, Any]]) -> None:
        import cv2
        import numpy as np
        drawn = annotate_image(img, dict(faces=[dict(box=r['box'], label=f"{r['face']}: {r['smoothed_label']}",
                                                     score=r['smoothed'][r['smoothed_label']]) for r in rows]))
        if self.writer is None:
            self._tmp = self._output.__enter__()
            self.writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*'mp4v'), self.fps, drawn.size)
            if not self.writer.isOpened():
                raise VideoError(f'cannot write {self.path} (OpenCV VideoWriter with MPEG-4 could not open it)')
        self.writer.write(cv2.cvtColor(np.asarray(drawn.convert('RGB')), cv2.COLOR_RGB2BGR))

    def close(self, ok: bool = True) -> None:
        if self.writer is None:
            return
        self.writer.release()
        if self._tmp is not None:
            self._tmp = None
            if ok:
                self._output.__exit__(None, None, None)
            else:
                self._output.__exit__(VideoError, VideoError('analysis failed'), None)


def summary_lines(result: Dict[str, Any]) -> List[str]:
    info = result['info']
    head = (f"{result['input']}: {info['frames_sampled']} of {info['frames_read']} frames analysed"
            + (f" (sampled at {info['sample_fps']:g} fps)" if info['sample_fps'] else '')
            + (', variable frame rate (timestamps used)' if info['variable_frame_rate'] else '')
            + (f", timestamps from {info['timestamps']}" if info['timestamps'] != 'container' else '')
            + (f", TRUNCATED: read {info['frames_read']} of {info['frames_declared']} frames; the rows cover what "
               f"was read" if info['truncated'] else ''))
    lines = [head]
    if result.get('error'):
        lines.append(f"{result['input']}: {result['error']}")
    for face, f in sorted(result['faces'].items()):
        lines.append(f"  face {face}: {f['first_time']:.2f}-{f['last_time']:.2f} s, {f['samples']} samples, "
                     f"mostly {f['label']} ({f['share'] * 100:.0f}% of them, smoothed)")
    return lines
