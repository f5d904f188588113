"""The face and video figures of docs/inference.md and docs/speed.md, from photos installed with scikit-image.

Not a test: it prints tables; a few minutes on 2 cores. Needs the faces, landmarks and plot extras.

    PYTHONPATH=. python examples/measure_faces.py detectors       # Haar vs dlib on the astronaut and copies of it
    PYTHONPATH=. python examples/measure_faces.py alignment       # aligned vs square crops of the tilted astronaut
    PYTHONPATH=. python examples/measure_faces.py framing DIR     # eye framing of FER2013 faces (DIR: train/ class folders)
    PYTHONPATH=. python examples/measure_faces.py video [--fps 5] # predict VIDEO --faces on a generated 640x480 clip
"""
import argparse
import glob
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _astronaut() -> Image.Image:
    from skimage import data
    return Image.fromarray(data.astronaut())


def detectors() -> None:
    from timm_msanet.faces import locate_faces
    photo = _astronaut()
    tile = np.asarray(photo.resize((256, 256)))
    cases = [('upright, 512 px', photo)]
    cases += [(f'rotated {a} degrees', photo.rotate(a, resample=Image.BICUBIC)) for a in (15, 30, 45)]
    cases += [(f'scaled {s}x', photo.resize((int(512 * s),) * 2, Image.BICUBIC)) for s in (0.5, 0.25)]
    cases += [('3x3 tiles at 256 px (9 faces)', Image.fromarray(np.tile(tile, (3, 3, 1))))]
    locate_faces(photo, 'dlib')  # loads the landmark model once, outside the timings
    print('| image | haar | dlib |\n|---|---|---|')
    for name, img in cases:
        row = []
        for det in ('haar', 'dlib'):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                found = locate_faces(img, det)
                times.append(time.perf_counter() - start)
            row.append(f'{len(found)} ({min(times) * 1e3:.0f} ms)')
        print(f'| {name} | {row[0]} | {row[1]} |')


def alignment() -> None:
    from timm_msanet.loading import load_model
    from timm_msanet.predict import predict
    model = load_model('msanet_r18')
    photo = _astronaut()

    def probs(img, align):
        (res,) = predict([img], model, faces=True, detector='dlib', align=align)
        return np.array(list(res['faces'][0]['probabilities'].values()))

    upright = {a: probs(photo, a) for a in (True, False)}
    angles = (-35, -25, -15, 15, 25, 35)
    rows = {True: [], False: []}
    for angle in angles:
        tilted = photo.rotate(angle, resample=Image.BICUBIC)
        for a in (True, False):
            rows[a].append(np.abs(probs(tilted, a) - upright[a]).sum())
    print('| rotation | ' + ' | '.join(map(str, angles)) + ' |\n|---|' + '---|' * len(angles))
    print('| square crop of the box | ' + ' | '.join(f'{v:.3f}' for v in rows[False]) + ' |')
    print('| aligned crop | ' + ' | '.join(f'{v:.3f}' for v in rows[True]) + ' |')


def framing(root: str, n: int = 1500) -> None:
    from timm_msanet.faces import locate_faces
    files = sorted(glob.glob(f'{root}/train/*/*'))
    random.Random(0).shuffle(files)
    eye_y, eye_dist = [], []
    for f in files[:n]:
        img = Image.open(f).convert('RGB').resize((192, 192), Image.BICUBIC)  # 48 px faces, upscaled 4x
        faces = locate_faces(img, 'dlib')
        if faces:
            (rx, ry), (lx, ly) = faces[0].landmarks['right_eye'], faces[0].landmarks['left_eye']
            eye_y.append((ry + ly) / 2 / 192)
            eye_dist.append(np.hypot(lx - rx, ly - ry) / 192)
    print(f'{len(eye_y)} of {min(n, len(files))} faces found; eye_y median {np.median(eye_y):.3f}, '
          f'eye_dist median {np.median(eye_dist):.3f}')


def video(fps) -> None:
    import cv2
    photo = np.asarray(_astronaut())
    face = np.ascontiguousarray(photo[20:220, 130:330])
    background = (cv2.resize(photo, (640, 480)) * 0.4).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / 'clip.mp4')
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 25, (640, 480))
        for i in range(250):  # 10 s at 25 fps, two faces moving up and down
            frame = background.copy()
            dy = int(100 * abs(np.sin(i / 40)))
            frame[40 + dy:240 + dy, 40:240] = face
            frame[240 - dy:440 - dy, 400:600] = face
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        cmd = [sys.executable, '-m', 'timm_msanet.cli', 'predict', path, '--faces', '--no-progress']
        cmd += ['--fps', str(fps)] if fps else []
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print(proc.stderr.strip().splitlines()[-1])  # frames/s with decode, detect and model time
        from timm_msanet.video import VideoReader
        reader = VideoReader(path)
        frames = sum(1 for _ in reader)
        print(f'decode only: {frames / reader.info["decode_s"]:,.0f} frames/s')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('what', choices=('detectors', 'alignment', 'framing', 'video'))
    parser.add_argument('root', nargs='?', help='framing: a FER2013 folder layout')
    parser.add_argument('--fps', type=float, default=None)
    args = parser.parse_args()
    if args.what == 'framing':
        framing(args.root)
    elif args.what == 'video':
        video(args.fps)
    else:
        {'detectors': detectors, 'alignment': alignment}[args.what]()


if __name__ == '__main__':
    main()
