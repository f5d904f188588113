"""`timm-msanet predict VIDEO --faces`: real videos made here from scikit-image's astronaut photo (two copies of
her face moving in opposite directions, encoded with OpenCV's FFmpeg), decoded, tracked, classified, smoothed,
written as CSV/JSON, a timeline PNG and an annotated video; and the bad inputs a user has (not a video, empty,
truncated, no face, images mixed with videos)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip('cv2')

from timm_msanet.loading import load_model  # noqa: E402
from timm_msanet.inference.video import FaceTracker, VideoError, VideoReader, analyze_video, max_gap_for  # noqa: E402

from conftest import run_cli

FPS = 10
FRAMES = 30
W, H = 480, 260


def _cli(*argv, timeout=600):
    return run_cli(['predict', *argv], timeout=timeout)


def _frames(astronaut, n=FRAMES):
    """Two copies of the astronaut's face (a 200x200 crop), the left one moving down, the right one up."""
    face = np.ascontiguousarray(astronaut[20:220, 130:330])
    out = []
    for i in range(n):
        frame = np.full((H, W, 3), 40, np.uint8)
        dy = int(round(i * 50 / (n - 1)))
        frame[5 + dy:205 + dy, 20:220] = face
        frame[55 - dy:255 - dy, 260:460] = face
        out.append(frame)
    return out


def _write(path: Path, frames, fourcc='mp4v', fps=FPS) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (frames[0].shape[1], frames[0].shape[0]))
    assert w.isOpened()
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    return path


@pytest.fixture(scope='module')
def two_faces(astronaut, tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp('video') / 'two faces.mp4', _frames(astronaut))


@pytest.fixture(scope='module')
def model():
    return load_model('msanet_r18')


def test_cli_table_tracks_smoothing_timeline_and_annotated_video(two_faces, tmp_path):
    out = tmp_path / 'annotated'
    proc = _cli(two_faces, '--faces', '--csv', tmp_path / 'faces.csv', '--annotate', out)
    assert proc.returncode == 0, proc.stderr
    assert f'{two_faces}: 30 of 30 frames analysed' in proc.stdout
    assert 'face 1: 0.00-2.90 s, 30 samples, mostly happiness' in proc.stdout
    assert 'frames/s (decode' in proc.stderr  # the throughput line
    with open(tmp_path / 'faces.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * FRAMES
    assert {r['face'] for r in rows} == {'1', '2'}
    times = sorted({float(r['time']) for r in rows})
    np.testing.assert_allclose(times, np.arange(FRAMES) / FPS, atol=1e-3)
    for r in rows:  # the tracker keeps each person: face 1 is the left copy (seen first: largest-first ties)
        cx = (int(r['x0']) + int(r['x1'])) / 2
        assert (cx < W / 2) == (r['face'] == '1'), r
    names = ['anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise']
    for face in ('1', '2'):  # smoothed = mean of the face's raw probabilities over the trailing 1 s
        mine = [r for r in rows if r['face'] == face]
        raw = np.array([[float(r[n]) for n in names] for r in mine])
        t = np.array([float(r['time']) for r in mine])
        for k, r in enumerate(mine):
            expected = raw[(t >= t[k] - 1.0 - 1e-6) & (t <= t[k])].mean(0)
            np.testing.assert_allclose([float(r[f'smoothed_{n}']) for n in names], expected, atol=2e-6)
            assert r['smoothed_label'] == names[int(expected.argmax())]
    with Image.open(out / 'two faces_timeline.png') as png:
        png.load()
        assert png.size[0] > 500 and png.size[1] > 300
    cap = cv2.VideoCapture(str(out / 'two faces_annotated.mp4'))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == FRAMES and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == W


def test_fps_sampling_json_and_batching(two_faces, tmp_path, model):
    proc = _cli(two_faces, '--faces', '--fps', '2', '--json', tmp_path / 'r.json', '--smooth', '0')
    assert proc.returncode == 0, proc.stderr
    (res,) = json.loads((tmp_path / 'r.json').read_text())
    assert res['info']['frames_sampled'] == 6 and res['info']['frames_read'] == FRAMES
    assert sorted({r['time'] for r in res['rows']}) == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert all(r['smoothed'] == r['probabilities'] for r in res['rows'])  # --smooth 0: off
    from timm_msanet.inference.faces import resolve_detector
    assert res['detector'] == resolve_detector()  # dlib with the landmarks extra, else the Haar cascade
    if res['detector'] == 'dlib':
        assert all('aligned' in r and len(r['landmarks']) == 5 for r in res['rows'])
    # at 5 fps (every other frame: 15 frames, 30 crops) a batch of 7 still holds crops of several frames
    one = analyze_video(two_faces, model, fps=5, batch_size=1)
    seen = []
    many = analyze_video(two_faces, model, fps=5, batch_size=7,
                         on_frame=lambda i, t, img, rows: seen.append((i, t, img.size, len(rows))))
    assert [(r['frame'], r['face']) for r in one['rows']] == [(r['frame'], r['face']) for r in many['rows']]
    assert len(many['rows']) == 30
    for a, b in zip(one['rows'], many['rows']):
        np.testing.assert_allclose(list(a['probabilities'].values()), list(b['probabilities'].values()), atol=1e-5)
    assert [s[0] for s in seen] == list(range(0, FRAMES, 2)) and all(s[2] == (W, H) and s[3] == 2 for s in seen)


def test_tracker_numbers_faces_by_first_appearance_and_forgets_after_a_gap():
    tr = FaceTracker(max_gap_s=1.0)
    assert tr.update([(0, 0, 10, 10)], 0.0) == [1]
    assert tr.update([(100, 0, 110, 10), (1, 0, 11, 10)], 0.1) == [2, 1]
    assert tr.update([(101, 0, 111, 10)], 0.2) == [2]
    assert tr.update([(2, 0, 12, 10)], 1.05) == [1]  # 0.95 s after face 1 was last seen: still face 1
    assert tr.update([(2, 0, 12, 10)], 3.0) == [3]  # gone for longer than max_gap: a new face


def test_sparse_sampling_keeps_a_face_its_id():
    """At --fps 1 the kept frames are the first at or after each second (1.04 s apart at 25 fps): one face, one id."""
    times = [0.0, 1.04, 2.08, 3.12, 4.16]
    sparse = FaceTracker(max_gap_s=max_gap_for(1))
    assert [sparse.update([(k, 0, 10 + k, 10)], t)[0] for k, t in enumerate(times)] == [1] * 5
    fixed = FaceTracker(max_gap_s=1.0)  # what a fixed 1 s gap did: a new id at every sample
    assert [fixed.update([(k, 0, 10 + k, 10)], t)[0] for k, t in enumerate(times)] == [1, 2, 3, 4, 5]
    assert max_gap_for(None) == max_gap_for(25) == 1.0 and max_gap_for(0.5) == 5.0


def test_truncated_video_keeps_what_was_read(astronaut, tmp_path):
    full = _write(tmp_path / 'clip.avi', _frames(astronaut, 20), fourcc='MJPG')
    data = full.read_bytes()
    cut = tmp_path / 'cut.avi'
    cut.write_bytes(data[:int(len(data) * 0.6)])
    proc = _cli(cut, '--faces', '--json', tmp_path / 'cut.json')
    assert proc.returncode == 0, proc.stderr
    (res,) = json.loads((tmp_path / 'cut.json').read_text())
    assert res['info']['truncated'] is True and 5 <= res['info']['frames_read'] < 20
    assert len(res['rows']) == 2 * res['info']['frames_read']
    assert 'TRUNCATED: read' in proc.stdout


def test_bad_inputs_are_one_line_errors(astronaut, tmp_path, two_faces):
    text = tmp_path / 'notes.mp4'
    text.write_text('not a video at all\n' * 100)
    proc = _cli(text, '--faces')
    assert proc.returncode == 2 and 'cannot read' in proc.stderr and 'as a video' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    empty = tmp_path / 'empty.webm'
    empty.write_bytes(b'')
    proc = _cli(empty, '--faces')
    assert proc.returncode == 2 and 'is empty (0 bytes)' in proc.stderr
    proc = _cli(two_faces)
    assert proc.returncode == 2 and 'add --faces' in proc.stderr
    img = tmp_path / 'a.png'
    Image.fromarray(astronaut).save(img)
    proc = _cli(two_faces, img, '--faces')
    assert proc.returncode == 2 and 'not both' in proc.stderr
    with pytest.raises(VideoError, match='--fps must be a positive'):
        VideoReader(two_faces, fps=0)


def test_video_without_faces_says_so_and_keeps_its_frames(tmp_path):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(8)]
    video = _write(tmp_path / 'noise.mov', noise)
    proc = _cli(video, '--faces', '--json', tmp_path / 'n.json')
    assert proc.returncode == 1
    assert 'no face detected in any of the 8 sampled frames' in proc.stdout
    (res,) = json.loads((tmp_path / 'n.json').read_text())
    assert res['rows'] == [] and res['info']['frames_read'] == 8


def _variable_rate(mp4: bytes, fast_from: int) -> bytes:
    """The same MP4 with frames from `fast_from` on lasting half as long: a variable-frame-rate file, as phones
    record them. The video track's time-to-sample table (moov/trak/mdia/minf/stbl/stts) gets a second entry;
    the parent boxes grow by its 8 bytes (OpenCV writes the sample data before moov, so no offset moves)."""
    import struct

    def find(start, end, chain, path):
        i = start
        while i + 8 <= end:
            size, kind = struct.unpack('>I4s', mp4[i:i + 8])
            if kind == chain[0]:
                path.append((i, size))
                return (i, size) if len(chain) == 1 else find(i + 8, i + size, chain[1:], path)
            i += size
        raise AssertionError(f'no {chain[0]} box')

    path = []
    i, size = find(0, len(mp4), [b'moov', b'trak', b'mdia', b'minf', b'stbl', b'stts'], path)
    flags, entries, count, delta = struct.unpack('>IIII', mp4[i + 8:i + 24])
    assert entries == 1 and delta % 2 == 0
    stts = struct.pack('>I4sIIIIII', 32, b'stts', flags, 2, fast_from, delta, count - fast_from, delta // 2)
    out = bytearray(mp4[:i] + stts + mp4[i + size:])
    for j, s in path[:-1]:
        struct.pack_into('>I', out, j, s + 8)
    return bytes(out)


def test_variable_frame_rate_uses_each_frames_own_time(two_faces, tmp_path, model):
    vfr = tmp_path / 'phone.mp4'
    vfr.write_bytes(_variable_rate(two_faces.read_bytes(), 15))
    res = analyze_video(vfr, model, smooth=0)
    assert res['info']['variable_frame_rate'] is True and res['info']['frames_read'] == FRAMES
    times = sorted({r['time'] for r in res['rows']})
    expected = [k / FPS for k in range(15)] + [1.5 + k / (2 * FPS) for k in range(15)]
    np.testing.assert_allclose(times, expected, atol=1e-3)
    sampled = analyze_video(vfr, model, fps=5)  # one frame per 0.2 s of real time, not per 2 frames
    np.testing.assert_allclose(sorted({r['time'] for r in sampled['rows']}),
                               [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2], atol=1e-3)
    proc = _cli(vfr, '--faces')
    assert proc.returncode == 0 and 'variable frame rate (timestamps used)' in proc.stdout


def test_video_with_landmarks_aligns_every_face(two_faces, model):
    pytest.importorskip('dlib')
    res = analyze_video(two_faces, model, fps=5, detector='dlib')
    assert {r['face'] for r in res['rows']} == {1, 2} and len(res['rows']) == 2 * 15
    for r in res['rows']:
        assert len(r['landmarks']) == 5 and r['detector_score'] > 0.2 and abs(r['aligned']['rotation']) < 10
        assert r['label'] == 'happiness'
