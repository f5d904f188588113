"""timm_msanet.utils.outputs, and the commands that write through it: outputs never destroy user files.

Each attack is the real command (a subprocess) on real files; the mechanism's own promises (atomic, no-clobber,
permissions) are tested on the module."""
import json
import os
import resource
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import timm
from PIL import Image

import timm_msanet  # noqa: F401
from timm_msanet.loading import write_weights
from timm_msanet.utils.outputs import OutputError, atomic_path, check_output, replace_folder, write_output

from conftest import run_cli

TINY = ['--model', 'msanet_r18_ms', '--no-pretrained', '--img-size', '32']


def _cli(*args, timeout=300, preexec_fn=None):
    return run_cli(args, timeout=timeout, preexec_fn=preexec_fn)


def _photo(path: Path, seed: int = 0, size=(64, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """A real checkpoint file (float32 safetensors with its architecture in the metadata)."""
    torch.manual_seed(0)
    model = timm.create_model('msanet_r18_ms', num_classes=7)
    path = tmp_path_factory.mktemp('w') / 'W.safetensors'
    write_weights(model.state_dict(), path, {'format': 'pt', 'arch': 'msanet_r18_ms', 'args': '{"img_size": 32}'},
                  half=False)
    return path


# ------------------------------------------------------------------------------------------- the mechanism

def test_write_is_atomic_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    old = tmp_path / 'results.json'
    old.write_text('{"old": true}')
    with pytest.raises(RuntimeError):
        with atomic_path(old, overwrite=True) as tmp:
            tmp.write_text('{"new": tr')  # half written, then the writer fails
            raise RuntimeError('disk went away')
    assert old.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['results.json']
    write_output(old, '{"new": true}', overwrite=True)
    assert json.loads(old.read_text()) == {'new': True} and len(list(tmp_path.iterdir())) == 1


def test_existing_files_links_folders_and_inputs_are_refused(tmp_path):
    mine = tmp_path / 'mine.txt'
    mine.write_text('user data')
    with pytest.raises(OutputError, match='exists; pass --overwrite'):
        write_output(mine, 'x')
    target = tmp_path / 'target.txt'
    target.write_text('keep')
    link = tmp_path / 'link.txt'
    link.symlink_to(target)
    with pytest.raises(OutputError, match='symbolic link'):
        write_output(link, 'x', overwrite=True)
    with pytest.raises(OutputError, match='is a folder'):
        write_output(tmp_path, 'x', overwrite=True)
    with pytest.raises(OutputError, match='not a regular file'):
        check_output('/dev/null', overwrite=True)
    with pytest.raises(OutputError, match='is one of the inputs'):
        write_output(mine, 'x', inputs=[str(tmp_path / '.' / 'mine.txt')], overwrite=True)
    assert mine.read_text() == 'user data' and target.read_text() == 'keep'


def test_no_clobber_a_file_created_while_writing_is_never_replaced(tmp_path):
    out = tmp_path / 'out.csv'
    with pytest.raises(OutputError, match='created by someone else'):
        with atomic_path(out) as tmp:
            tmp.write_text('ours')
            out.write_text('theirs')  # another process got there first
    assert out.read_text() == 'theirs' and len(list(tmp_path.iterdir())) == 1


def test_outputs_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_output(tmp_path / 'a.json', '{}')
        weights = write_weights({'w': torch.zeros(2)}, tmp_path / 'w.safetensors', {'format': 'pt'})
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644 and (weights.stat().st_mode & 0o777) == 0o644


def test_replace_folder_never_removes_a_folder_it_did_not_write(tmp_path):
    def staged():
        d = tmp_path / f'.staging{len(list(tmp_path.iterdir()))}'
        d.mkdir()
        (d / 'config.json').write_text('{}')
        return d
    folder = tmp_path / 'release'
    replace_folder(staged(), folder, overwrite=False, is_ours=lambda p: True)
    with pytest.raises(OutputError, match='not empty; pass --overwrite'):
        replace_folder(staged(), folder, overwrite=False, is_ours=lambda p: True)
    (folder / 'notes.txt').write_text('mine')
    with pytest.raises(OutputError, match='did not write'):
        replace_folder(staged(), folder, overwrite=True, is_ours=lambda p: not (p / 'notes.txt').exists())
    assert (folder / 'notes.txt').read_text() == 'mine'


# ------------------------------------------------------------------------------------------- the commands

def test_predict_never_writes_its_results_over_an_input(tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    victim = _photo(photos / 'victim.jpg')
    other = _photo(photos / 'other.png', 1)
    for args in (['--json', photos / 'victim.jpg'], ['--csv', photos / 'other.png'],
                 ['--json', photos / 'victim.jpg', '--overwrite']):
        proc = _cli('predict', photos / 'victim.jpg', photos, *TINY, *args)
        assert proc.returncode == 2 and 'is one of the inputs' in proc.stderr, proc.stderr
        assert 'Traceback' not in proc.stderr
    assert (photos / 'victim.jpg').read_bytes() == victim and (photos / 'other.png').read_bytes() == other


def test_predict_video_never_writes_over_the_video(tmp_path):
    cv2 = pytest.importorskip('cv2')
    clip = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*'mp4v'), 5, (64, 64))
    for i in range(5):
        writer.write(np.full((64, 64, 3), 40 * i, np.uint8))
    writer.release()
    before = clip.read_bytes()
    proc = _cli('predict', clip, '--faces', '--detector', 'haar', *TINY, '--json', clip)
    assert proc.returncode == 2 and 'is one of the inputs' in proc.stderr and clip.read_bytes() == before


def test_existing_outputs_need_overwrite_and_are_checked_before_the_work(tmp_path):
    photo = tmp_path / 'face.png'
    _photo(photo)
    old = tmp_path / 'old.json'
    old.write_text('[]')
    proc = _cli('predict', photo, *TINY, '--json', old)
    assert proc.returncode == 2 and 'exists; pass --overwrite' in proc.stderr and old.read_text() == '[]'
    assert 'inputs predicted' not in proc.stderr  # refused before any image was read
    proc = _cli('predict', photo, *TINY, '--json', old, '--overwrite')
    assert proc.returncode == 0 and json.loads(old.read_text())[0]['input'] == str(photo)
    # unwritable destinations: one line, before the work
    for bad in (photo / 'x.json', tmp_path, '/dev/full'):  # under a file, a folder, a device
        proc = _cli('predict', photo, *TINY, '--json', bad)
        assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and 'Traceback' not in proc.stderr, proc.stderr


def test_annotate_never_overwrites_unrelated_files_or_writes_through_links(tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    _photo(photos / 'a.png')
    out = tmp_path / 'annotated'
    out.mkdir()
    (out / 'a.png').write_bytes(b'an unrelated file of the user')
    proc = _cli('predict', photos, *TINY, '--annotate', out)
    assert proc.returncode == 2 and 'exists; pass --overwrite' in proc.stderr
    assert (out / 'a.png').read_bytes() == b'an unrelated file of the user'
    (out / 'a.png').unlink()
    secret = tmp_path / 'secret.png'
    secret.write_bytes(b'precious')
    (out / 'a.png').symlink_to(secret)
    proc = _cli('predict', photos, *TINY, '--annotate', out, '--overwrite')
    assert proc.returncode == 2 and 'symbolic link' in proc.stderr and secret.read_bytes() == b'precious'
    (out / 'a.png').unlink()
    proc = _cli('predict', photos, *TINY, '--annotate', out)
    assert proc.returncode == 0, proc.stderr
    with Image.open(out / 'a.png') as img:
        img.verify()


def test_a_failing_write_leaves_the_old_results(tmp_path):
    """A write that fails half-way (the file size limit: EFBIG) keeps the previous file whole."""
    photos = tmp_path / 'photos'
    photos.mkdir()
    for i in range(40):
        _photo(photos / f'{i:02d}_with_a_long_name_so_the_json_is_longer_than_the_limit.png', i, (16, 16))
    old = tmp_path / 'results.json'
    old.write_text('[{"previous": "results"}]')

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write() instead of a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    proc = _cli('predict', photos, *TINY, '--json', old, '--overwrite', preexec_fn=limit_file_size)
    assert proc.returncode == 2 and 'cannot write --json' in proc.stderr, proc.stderr
    assert old.read_text() == '[{"previous": "results"}]'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['photos', 'results.json']


def test_weights_are_never_written_over_their_checkpoint(weights, tmp_path):
    before = weights.read_bytes()
    proc = _cli('publish', weights, '--weights-only', weights, '--overwrite')
    assert proc.returncode == 2 and 'is one of the inputs' in proc.stderr
    proc = _cli('export-onnx', '--checkpoint', weights, '--output', weights, '--overwrite')
    assert proc.returncode == 2 and 'is one of the inputs' in proc.stderr
    proc = _cli('calibrate', '--checkpoint', weights, '--data-dir', tmp_path, '--save', weights, '--overwrite')
    assert proc.returncode == 2 and 'is one of the inputs' in proc.stderr
    assert weights.read_bytes() == before
    copy = tmp_path / 'copy.safetensors'
    assert _cli('publish', weights, '--weights-only', copy).returncode == 0
    proc = _cli('publish', weights, '--weights-only', copy)
    assert proc.returncode == 2 and 'exists; pass --overwrite' in proc.stderr
    assert _cli('publish', weights, '--weights-only', copy, '--overwrite').returncode == 0
    assert (copy.stat().st_mode & 0o044) == 0o044  # readable by others (umask 022), not mkstemp's 0600


# ------------------------------------------------------------------- hostile inputs, round two (docs/security.md)

def _one_line_error(proc, status: int, *fragments: str) -> str:
    said = ' '.join(proc.stderr.split())
    assert proc.returncode == status, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr and all(f in said for f in fragments), said
    return said


def test_a_fifo_or_a_link_to_dev_zero_in_an_eval_split_is_refused_before_any_is_opened(tmp_path):
    for name, make in (('fifo', lambda p: os.mkfifo(p)), ('zero', lambda p: p.symlink_to('/dev/zero')),
                       ('loop', lambda p: p.symlink_to(p))):
        split = tmp_path / name / 'test' / 'anger'
        split.mkdir(parents=True)
        _photo(split / 'a.png')
        make(split / 'y.png')
        proc = _cli('eval', *TINY, '--data-dir', tmp_path / name, '--split', 'test', '--out', tmp_path / f'{name}_ev',
                    '--workers', '0', timeout=120)
        _one_line_error(proc, 2, str(split / 'y.png'))
        assert not (tmp_path / f'{name}_ev').exists()


def test_json_is_read_from_regular_files_only_and_bounded_before_reading(tmp_path, weights):
    fifo = tmp_path / 'metrics.json'
    os.mkfifo(fifo)
    for source in (fifo, Path('/dev/zero')):
        proc = _cli('publish', weights, '--repo-id', 'org/x', '--dataset', 'fer2013', '--eval-json', source,
                    '--dry-run', tmp_path / 'rel', timeout=120)
        _one_line_error(proc, 2, f'--eval-json {source}', 'not a regular file')
        assert not (tmp_path / 'rel').exists()
    # a 4 GiB sparse config.json beside model.safetensors: refused from its size, never read into memory
    folder = tmp_path / 'release'
    folder.mkdir()
    (folder / 'model.safetensors').write_bytes(weights.read_bytes())
    with open(folder / 'config.json', 'wb') as f:
        f.truncate(4 * 2**30)
    _photo(tmp_path / 'x.png')
    proc = _cli('predict', tmp_path / 'x.png', '--checkpoint', folder, timeout=120)
    _one_line_error(proc, 2, 'config.json', '4,294,967,296 bytes, more than the')


def test_a_symlink_loop_is_one_input_error_and_an_unknown_opset_one_line(tmp_path):
    loop = tmp_path / 'self.jpg'
    loop.symlink_to(loop)
    proc = _cli('predict', loop, *TINY, timeout=120)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert 'self.jpg: ERROR OSError' in proc.stdout and 'symbolic links' in proc.stdout
    proc = _cli('export-onnx', *TINY, '--output', tmp_path / 'm.onnx', '--opset', '99999', timeout=300)
    _one_line_error(proc, 2, 'ONNX opset 99999 does not exist')
    assert not (tmp_path / 'm.onnx').exists()


def test_csv_cells_cannot_start_a_formula_and_names_cannot_reverse_a_line(tmp_path):
    from timm_msanet.utils.outputs import csv_cell, printable
    assert csv_cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")' and csv_cell('@SUM(A1)') == "'@SUM(A1)"
    assert csv_cell('-0.25') == '-0.25' and csv_cell(3) == 3 and csv_cell('anger') == 'anger'
    assert printable('a\u202egpj.exe') == 'a\\u202egpj.exe'
    photos = tmp_path / 'photos'
    photos.mkdir()
    _photo(photos / '=HYPERLINK(1).png')
    _photo(photos / 'b\u202egnp.png')
    proc = run_cli(['predict', '=HYPERLINK(1).png', 'b\u202egnp.png', *TINY, '--csv', tmp_path / 'p.csv'],
                   cwd=photos, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = (tmp_path / 'p.csv').read_text().splitlines()
    assert rows[1].startswith("'=HYPERLINK(1).png,") and not any(r.startswith('=') for r in rows)
    assert '\u202e' not in proc.stdout and 'b\\u202egnp.png' in proc.stdout


def test_an_annotated_copy_that_cannot_be_written_fails_the_command(tmp_path):
    """--annotate on a full disk (a 4 KiB file-size limit: EFBIG for the 64x64 noise PNG): exit 1 and one line
    on stderr, not '1 of 1 inputs predicted' and exit 0; the JSON (smaller than the limit) still says why."""
    photo = tmp_path / 'x.png'
    _photo(photo)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    proc = _cli('predict', photo, *TINY, '--annotate', tmp_path / 'annotated', '--json', tmp_path / 'r.json',
                preexec_fn=limit_file_size, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'x.png: --annotate copy not written' in proc.stderr and 'Traceback' not in proc.stderr
    [res] = json.loads((tmp_path / 'r.json').read_text())
    assert res['annotate_error'] and res['label']  # the prediction itself is kept
    assert not list((tmp_path / 'annotated').glob('*'))


def test_an_output_folder_inside_the_data_folder_is_refused(tmp_path):
    data = tmp_path / 'data' / 'test' / 'anger'
    data.mkdir(parents=True)
    _photo(data / 'a.png')
    for command in (['eval', '--split', 'test'], ['calibrate', '--split', 'test']):
        proc = _cli(*command, *TINY, '--data-dir', tmp_path / 'data', '--out', tmp_path / 'data' / 'test',
                    timeout=120)
        assert proc.returncode == 2 and 'is inside the input folder' in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / 'data' / 'test').iterdir()) == ['anger']


def test_a_full_disk_while_writing_weights_is_one_line_and_leaves_nothing(tmp_path, weights):
    """safetensors' own write errors are not OSErrors: a full disk (a 1 MiB file-size limit, EFBIG) under
    publish --weights-only and publish --dry-run is one line, exit 2, and no partial file or folder."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
    out = tmp_path / 'out'
    out.mkdir()
    proc = _cli('publish', weights, '--weights-only', out / 'w.safetensors', preexec_fn=limit_file_size)
    _one_line_error(proc, 2, 'cannot write weights')
    proc = _cli('publish', weights, '--repo-id', 'org/x', '--dataset', 'fer2013', '--dry-run', out / 'rel',
                preexec_fn=limit_file_size)
    _one_line_error(proc, 2, 'cannot write the release')
    assert list(out.iterdir()) == []


def test_sigterm_in_any_command_removes_what_it_was_writing(tmp_path):
    """SIGTERM unwinds like Ctrl-C in every command (not only export): predict --annotate, stopped while it writes
    its copies, exits 130 with 'interrupted' and leaves no temporary file behind."""
    import subprocess
    import sys
    import time
    photos = tmp_path / 'photos'
    photos.mkdir()
    for i in range(400):
        _photo(photos / f'{i:03d}.png', i, (96, 96))
    out = tmp_path / 'annotated'
    proc = subprocess.Popen([sys.executable, '-m', 'timm_msanet.cli', 'predict', str(photos), *TINY, '--annotate',
                             str(out), '--no-progress'], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    def finished():  # copies in place; a hidden temporary file being written does not count
        return [p for p in out.iterdir() if not p.name.startswith('.')] if out.is_dir() else []
    while time.time() < deadline and len(finished()) < 5:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and 'interrupted' in err and 'Traceback' not in err, err[-2000:]
    written = list(out.iterdir())
    assert 5 <= len(written) < 400 and not [p for p in written if p.name.startswith('.')]  # no .partial file
