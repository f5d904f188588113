"""`timm-msanet`: every subcommand that takes a model reports a bad model source in one line, exit 2."""

import pytest

from conftest import run_cli


@pytest.mark.parametrize('argv', [
    ['predict', '{img}'],
    ['explain', '{img}'],
    ['export-onnx', '--output', '{tmp}/m.onnx'],
    ['eval', '--data-dir', '{tmp}'],
])
def test_missing_weights_are_a_clean_error(tmp_path, argv):
    from PIL import Image
    img = tmp_path / 'face.png'
    Image.new('RGB', (32, 32), (128, 100, 90)).save(img)
    args = [a.format(img=img, tmp=tmp_path) for a in argv] + ['--checkpoint', str(tmp_path / 'missing.pth.tar')]
    proc = run_cli(args, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert 'missing.pth.tar does not exist' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'm.onnx').exists()


def test_no_model_source_means_the_packaged_model(tmp_path):
    # without --model/--checkpoint/--hf-hub the installed FER2013 model is used; here eval then stops, in one
    # line, at the missing split folder (it got past loading the model)
    proc = run_cli(['eval', '--data-dir', str(tmp_path)], timeout=300)
    assert proc.returncode == 2 and f'split folder {tmp_path}/test not found' in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr and '--model NAME' not in proc.stderr


@pytest.mark.parametrize('argv, status, message', [
    (['predict', '{tmp}/empty'], 1, 'no image files found in'),
    (['explain', '{img}', '--out', '{img}'], 2, 'is one of the inputs'),
    (['publish', '{tmp}/missing.pth.tar'], 2, '--repo-id and --dataset required'),
    (['bench', '--models', 'resnet18', '--repeats', '0'], 2, 'argument --repeats: expected an integer of at least 1'),
    # every option is checked by its argparse type, before any model or file is touched
    (['predict', '{img}', '--batch-size', '0'], 2, 'argument --batch-size: expected an integer of at least 1'),
    (['predict', '{img}', '--device', 'foo'], 2, "argument --device: expected cpu, cuda, cuda:N or mps, got 'foo'"),
    (['predict', '{img}', '--device', 'cuda'], 2, 'argument --device: cuda was asked for, but torch finds no CUDA GPU'),
    (['predict', '{img}', '--faces', '--fps', 'inf'], 2, "argument --fps: expected a finite number above 0"),
    (['predict', '{img}', '--faces', '--margin', 'nan'], 2, 'argument --margin: expected a finite number'),
    (['predict', '{img}', '--faces', '--margin', '-5'], 2, "argument --margin: expected a finite number of at least 0"),
    (['eval', '--data-dir', '{tmp}', '--workers', '-1'], 2, 'argument --workers: expected an integer of at least 0'),
    (['explain', '{img}', '--max-faces', '0'], 2, 'argument --max-faces: expected an integer of at least 1'),
    (['export-onnx', '--output', '{tmp}', '--no-pretrained', '--model', 'msanet_r18_ms'], 2, 'is a folder'),
    (['eval', '--data-dir', '{tmp}', '--out', '{img}'], 2, 'is not a folder'),
    (['publish', '{img}', '--repo-id', '../..', '--dataset', 'fer2013', '--dry-run', '{tmp}/rel'], 2,
     '--repo-id must be ORG/NAME'),
    # messages that say what was found and what is expected
    (['predict', '{img}', '--checkpoint', '{img}'], 2, 'is not a checkpoint or safetensors file (it is a PNG image)'),
    (['predict', '{img}', '--model', 'msanet_r19'], 2, "'msanet_r19' is not a registered model; did you mean"),
    (['explain', '{img}', '--target', 'happy', '--out', '{tmp}/x.png'], 2,
     "--target 'happy' is not a class of this model: give a name (anger, disgust"),
    (['explain', '{img}', '--target', '-1', '--out', '{tmp}/x.png'], 2, 'or an index from 0 to 6'),
    (['export', 'rafdb', '{tmp}/no-such-dataset', '{tmp}/out'], 2, 'no-such-dataset'),
    (['eval', '--checkpoint', '{tmp}/missing.pth.tar', '--hf-hub', 'org/repo', '--data-dir', '{tmp}'], 2,
     'give one model source'),
])
def test_one_error_path_one_line_with_the_commands_prefix(tmp_path, argv, status, message):
    if '--device' in argv and 'cuda' in argv:
        pytest.importorskip('torch').cuda.is_available() and pytest.skip('this machine has a GPU')
    from PIL import Image
    img = tmp_path / 'face.png'
    Image.new('RGB', (32, 32), (128, 100, 90)).save(img)
    (tmp_path / 'empty').mkdir()
    args = [a.format(img=img, tmp=tmp_path) for a in argv]
    proc = run_cli(args, timeout=300)
    assert proc.returncode == status, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if 'error:' in line]
    assert len(errors) == 1 and errors[0].startswith(f'timm-msanet {argv[0]}: error: ') and message in errors[0], \
        proc.stderr
    assert 'Traceback' not in proc.stderr


def test_label_names_for_a_model_with_its_own_names_warn_what_they_rename(tmp_path):
    from PIL import Image
    img = tmp_path / 'face.png'
    Image.new('RGB', (32, 32), (128, 100, 90)).save(img)
    proc = run_cli(['predict', img, '--label-names', 'a,b,c,d,e,f,g'], timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'renames the outputs of a model that has its own names: anger -> a, disgust -> b' in proc.stderr
    assert proc.stdout.split(': ')[1].split()[0] in 'abcdefg'


def _fer2013_folders(root):
    from PIL import Image
    for split in ('train', 'test'):
        for i, label in enumerate(('angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise')):
            (root / split / label).mkdir(parents=True)
            Image.new('L', (48, 48), 30 * i + (split == 'test') * 7).save(root / split / label / f'{split}{i}.png')
    return root


def test_called_from_python_the_callers_signal_handlers_come_back(tmp_path):
    """An export in place sets SIGINT/SIGTERM to ignored (a command-line process about to exit 0 must not turn
    into 'interrupted'); `main(argv)` called from Python gives the caller its own handlers back."""
    import signal
    import warnings
    from timm_msanet.cli import main
    src = _fer2013_folders(tmp_path / 'src')
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    showwarning = warnings.showwarning
    assert main(['export', 'fer2013', str(src), str(tmp_path / 'out'), '--quiet', '--workers', '1']) == 0
    assert (tmp_path / 'out' / 'manifest.json').is_file()
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert warnings.showwarning is showwarning
    assert main(['export', 'fer2013', str(src), str(tmp_path / 'out'), '--quiet']) == 2  # exists: an error
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers


def test_an_api_export_does_not_leave_the_next_cli_export_deferring_ctrl_c(tmp_path):
    """The Python API marks its finished run as committed; the CLI's interrupt handling starts from a clean state,
    so Ctrl-C during a later export in the same process unwinds instead of being deferred."""
    import os
    import signal
    from timm_msanet.data.export import _interrupts_unwind_once, export_fer2013
    export_fer2013(str(_fer2013_folders(tmp_path / 'src')), str(tmp_path / 'out'))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(KeyboardInterrupt):
            with _interrupts_unwind_once():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(100):  # the handler runs between bytecodes of the main thread
                    pass
    finally:  # an unwound (or, were this broken, a deferred) export leaves the signals ignored: not in pytest
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_help_says_that_missing_output_folders_are_created():
    """`--json /no/dir/x` creates /no/dir: every command that writes says so in --help, before anyone finds out."""
    for command in ('predict', 'eval', 'calibrate', 'export-onnx', 'explain', 'bench'):
        proc = run_cli([command, '--help'], timeout=60)
        assert proc.returncode == 0 and 'as mkdir -p does' in ' '.join(proc.stdout.split()), command
