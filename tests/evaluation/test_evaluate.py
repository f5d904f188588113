"""FER evaluation: metrics against hand-computed values, label alignment by name, checkpoints, errors."""
import argparse
import json

import pytest
import torch
import torch.nn as nn
from PIL import Image

import timm
from timm.data import create_transform, resolve_data_config

from timm_msanet import FER7_LABELS
from timm_msanet.evaluation.evaluate import EvalError, align_labels, evaluate, metrics_from_confusion
from timm_msanet.loading import CheckpointError, ExpressionModel, load_model

from conftest import run_cli


class BrightnessModel(nn.Module):
    """A fixed 'model': predicts class floor(mean brightness * n). Its outputs are known in advance."""

    def __init__(self, label_names):
        super().__init__()
        self.num_classes = len(label_names)
        self.pretrained_cfg = dict(
            architecture='brightness', label_names=tuple(label_names), input_size=(3, 16, 16), crop_pct=1.0,
            crop_mode='squash', interpolation='bilinear', mean=(0., 0., 0.), std=(1., 1., 1.), num_classes=len(label_names))
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        idx = (x.mean(dim=(1, 2, 3)) * self.num_classes).floor().clamp(0, self.num_classes - 1).long()
        return nn.functional.one_hot(idx, self.num_classes).float() + self.dummy


def _level(cls_idx, n=7):
    """A grey level the BrightnessModel maps to class cls_idx."""
    return int(round((cls_idx + 0.5) / n * 255))


def _write(root, folder, name, level, size=(20, 12)):
    path = root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', size, (level, level, level)).save(path)


@pytest.fixture
def fixed_split(tmp_path):
    """test split: per true class, how many images are predicted as which class (model order = FER7)."""
    plan = {  # true class -> list of predicted classes
        'anger': ['anger', 'anger', 'fear'],
        'happiness': ['happiness'] * 5 + ['neutral'],
        'neutral': ['neutral', 'sadness'],
        'surprise': ['surprise'],
    }
    for true, preds in plan.items():
        for i, pred in enumerate(preds):
            _write(tmp_path, f'test/{true}', f'{i}.png', _level(FER7_LABELS.index(pred)))
    return tmp_path, plan


def test_metrics_match_hand_computation(fixed_split):
    root, plan = fixed_split
    m = evaluate(BrightnessModel(FER7_LABELS), str(root), split='test', batch_size=4, workers=0)
    # by hand: 12 images, correct = 2 + 5 + 1 + 1 = 9
    assert m['num_samples'] == 12
    assert m['accuracy'] == pytest.approx(9 / 12)
    # recalls: anger 2/3, happiness 5/6, neutral 1/2, surprise 1/1; mean over the 4 classes present
    assert m['mean_class_accuracy'] == pytest.approx((2 / 3 + 5 / 6 + 1 / 2 + 1) / 4)
    pc = m['per_class']
    assert pc['neutral']['precision'] == pytest.approx(1 / 2)  # predicted neutral: 1 true neutral, 1 happiness
    assert pc['neutral']['recall'] == pytest.approx(1 / 2)
    assert pc['fear']['precision'] == 0.0 and pc['fear']['support'] == 0
    assert pc['anger']['f1'] == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))
    cm = m['confusion_matrix']
    a, f, h, n, s = (FER7_LABELS.index(x) for x in ('anger', 'fear', 'happiness', 'neutral', 'sadness'))
    assert cm[a][a] == 2 and cm[a][f] == 1 and cm[h][n] == 1 and cm[n][s] == 1
    assert sum(map(sum, cm)) == 12 and m['label_names'] == list(FER7_LABELS)


def test_balanced_accuracy_is_over_the_whole_split_not_per_batch(fixed_split):
    root, _ = fixed_split
    model = BrightnessModel(FER7_LABELS)
    for bs in (1, 5, 64):
        assert evaluate(model, str(root), split='test', batch_size=bs, workers=0)['mean_class_accuracy'] == \
            pytest.approx((2 / 3 + 5 / 6 + 1 / 2 + 1) / 4)


def test_label_order_is_matched_by_name(tmp_path):
    # a model trained with another class order, on a tree using the FER2013 redistribution's folder names
    model_order = ['surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral']  # RAF-DB file order
    folders = {'angry': 'anger', 'happy': 'happiness', 'sad': 'sadness', 'surprise': 'surprise'}
    for folder, label in folders.items():
        for i in range(2):
            _write(tmp_path, f'val/{folder}', f'{i}.png', _level(model_order.index(label)))
    m = evaluate(BrightnessModel(model_order), str(tmp_path), split='val', workers=0)
    assert m['accuracy'] == 1.0 and m['mean_class_accuracy'] == 1.0
    assert m['label_names'] == model_order and m['per_class']['anger']['support'] == 2
    assert m['dataset_classes'] == ['angry', 'happy', 'sad', 'surprise']


def test_unmatched_class_lists_both_name_sets():
    with pytest.raises(EvalError) as e:
        align_labels(['anger', 'bored'], FER7_LABELS)
    assert "'bored'" in str(e.value) and 'happiness' in str(e.value) and 'anger' in str(e.value)
    assert align_labels(['Angry', 'contempt'], ('anger', 'contempt')) == [0, 1]


def test_errors_for_missing_split_and_empty_split(tmp_path):
    model = BrightnessModel(FER7_LABELS)
    (tmp_path / 'train' / 'anger').mkdir(parents=True)
    with pytest.raises(EvalError, match=r'split folder .*test not found .*train'):
        evaluate(model, str(tmp_path), split='test', workers=0)
    (tmp_path / 'test' / 'anger').mkdir(parents=True)
    with pytest.raises(EvalError, match='no images'):
        evaluate(model, str(tmp_path), split='test', workers=0)
    with pytest.raises(EvalError, match='no samples'):
        metrics_from_confusion([[0, 0], [0, 0]], ['a', 'b'])


@pytest.mark.parametrize('broken', ['empty', 'truncated'])
@pytest.mark.parametrize('workers', [0, 2])
def test_an_unreadable_image_stops_the_evaluation_naming_it(fixed_split, broken, workers):
    """timm's ImageDataset would log the broken file and score its neighbour in its place (counted twice, under
    the neighbour's class); here the evaluation stops with one line naming the file, in this process and
    through loader worker processes alike, and the file is left as it was."""
    root, _ = fixed_split
    good = (root / 'test' / 'anger' / '0.png').read_bytes()
    bad = root / 'test' / 'anger' / '1.png'
    data = b'' if broken == 'empty' else good[:len(good) // 2]
    bad.write_bytes(data)
    with pytest.raises(EvalError) as info:
        evaluate(BrightnessModel(FER7_LABELS), str(root), split='test', batch_size=4, workers=workers)
    message = str(info.value)
    assert message.startswith(f'{bad} cannot be read as an image') and 'none is skipped' in message, message
    assert '\n' not in message and 'Traceback' not in message
    assert bad.read_bytes() == data


@pytest.mark.parametrize('name', ['1.webp', '1.BMP', '1.tif'])
def test_photos_timm_does_not_read_stop_the_evaluation(fixed_split, name):
    """timm's ImageFolder reader takes .png/.jpg/.jpeg only and passes over other photos without a word, so a
    split with a .webp face would be scored without it. The evaluation stops and counts them by extension; a
    file that is not an image (notes, metadata) is no photo and is left alone."""
    root, _ = fixed_split
    model = BrightnessModel(FER7_LABELS)
    (root / 'test' / 'anger' / 'notes.txt').write_text('not a face')
    Image.new('RGB', (20, 12)).save(root / 'test' / 'anger' / 'sheet.pdf')  # a format Pillow writes, never reads
    assert evaluate(model, str(root), split='test', workers=0)['num_samples'] == 12
    photo = root / 'test' / 'anger' / name
    Image.new('RGB', (20, 12), (9, 9, 9)).save(photo, format={'.webp': 'WEBP', '.bmp': 'BMP', '.tif': 'TIFF'}[
        photo.suffix.lower()])
    with pytest.raises(EvalError) as info:
        evaluate(model, str(root), split='test', workers=0)
    message = str(info.value)
    assert f'holds 1 image(s) that timm\'s ImageFolder reader does not read (1 {photo.suffix.lower()}; ' \
           f'e.g. {photo})' in message and 'convert them to PNG or JPEG' in message, message
    assert photo.is_file()


def test_an_image_outside_the_class_folders_stops_the_evaluation(fixed_split):
    """timm files an image lying in the split folder itself under a class named ''; the message says where it
    belongs instead of reporting an unknown class ''."""
    root, _ = fixed_split
    loose = root / 'test' / 'face.png'
    Image.new('RGB', (20, 12), (9, 9, 9)).save(loose)
    with pytest.raises(EvalError, match=r'face\.png lies in the split folder itself \(1 image\(s\) there\): a '
                                        r'split holds one folder per class'):
        evaluate(BrightnessModel(FER7_LABELS), str(root), split='test', workers=0)


def test_the_split_dataset_pickles_for_spawned_loader_workers(fixed_split):
    """Loader workers started by spawn (macOS, Windows) or forkserver (Linux from Python 3.14) get the dataset
    pickled: the evaluation's dataset must survive that and give the same samples."""
    import pickle
    from timm_msanet.evaluation.evaluate import StrictImageDataset
    root, _ = fixed_split
    dataset = StrictImageDataset(str(root / 'test'))
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(copy) == len(dataset) == 12
    for i in (0, 11):
        (a, ya), (b, yb) = dataset[i], copy[i]
        assert ya == yb and list(a.getdata()) == list(b.getdata())


# ------------------------------------------------------------------ a real msanet checkpoint from training

@pytest.fixture(scope='module')
def trained_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp('ckpt')
    torch.manual_seed(0)
    model = timm.create_model('msanet_r18_ms', num_classes=7)
    ema = timm.create_model('msanet_r18_ms', num_classes=7)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        loss = model(torch.randn(4, 3, 64, 64)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    args = argparse.Namespace(model='msanet_r18_ms', num_classes=7, lr=0.1, epochs=1)
    path = root / 'model_best.pth.tar'
    torch.save(dict(epoch=0, arch='msanet_r18_ms', state_dict=model.state_dict(), state_dict_ema=ema.state_dict(),
                    args=args, version=2), path)
    data = root / 'data'
    for ci, label in enumerate(FER7_LABELS[:4]):
        for i in range(3):
            _write(data, f'test/{label}', f'{i}.jpg', 40 + 50 * ci + 10 * i, size=(48, 48))
    return path, model.eval(), ema.eval(), data


def _manual_confusion(model, data, split='test'):
    transform = create_transform(**resolve_data_config({}, model=model))
    cm = [[0] * 7 for _ in range(7)]
    for folder in sorted((data / split).iterdir()):
        for img in sorted(folder.iterdir()):
            with Image.open(img) as im:
                x = transform(im.convert('RGB')).unsqueeze(0)
            pred = int(model(x).argmax())
            cm[FER7_LABELS.index(folder.name)][pred] += 1
    return cm


def test_checkpoint_ema_and_model_weights(trained_checkpoint):
    path, model, ema, data = trained_checkpoint
    loaded_ema = load_model(checkpoint=path)
    loaded = load_model(checkpoint=path, use_ema=False)
    assert ExpressionModel.of(loaded_ema).source.entry == "state_dict_ema" and ExpressionModel.of(loaded_ema).source.ema
    assert ExpressionModel.of(loaded).source.entry == "state_dict" and ExpressionModel.of(loaded).source.ema is False
    assert loaded_ema.pretrained_cfg['label_names'] == FER7_LABELS
    for k, v in ema.state_dict().items():
        assert torch.equal(loaded_ema.state_dict()[k], v)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with torch.no_grad():
        m = evaluate(loaded, str(data), split='test', batch_size=5, workers=0)
        assert m['confusion_matrix'] == _manual_confusion(model, data)


def test_checkpoint_errors(trained_checkpoint, tmp_path):
    path, *_ = trained_checkpoint
    with pytest.raises(CheckpointError, match='wrong class count: the checkpoint has 7 classes, not 8'):
        load_model(checkpoint=path, num_classes=8)
    with pytest.raises(CheckpointError, match='--model msanet_r18 but the checkpoint was trained as msanet_r18_ms'):
        load_model(model_name='msanet_r18', checkpoint=path)
    with pytest.raises(CheckpointError, match='does not exist'):
        load_model(checkpoint=tmp_path / 'nope.pth.tar')


def test_cli_eval_writes_metrics_csv_and_png(trained_checkpoint, tmp_path):
    path, model, ema, data = trained_checkpoint
    out = tmp_path / 'eval'
    proc = run_cli(['eval', '--checkpoint', path, '--data-dir', data, '--split', 'test', '--out', out, '--workers', '0',
                    '--tta-hflip'], timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'mean class accuracy' in proc.stdout
    metrics = json.loads((out / 'metrics.json').read_text())
    for key in ('accuracy', 'mean_class_accuracy', 'per_class', 'confusion_matrix', 'label_names', 'model',
                'data_dir', 'split'):
        assert key in metrics
    assert metrics['model'] == 'msanet_r18_ms' and metrics['num_samples'] == 12 and metrics['hflip_tta'] is True
    rows = (out / 'confusion_matrix.csv').read_text().splitlines()
    assert rows[0].split(',')[1:] == list(FER7_LABELS) and len(rows) == 8
    if (out / 'confusion_matrix.png').exists():  # matplotlib installed (the `plot` extra)
        with Image.open(out / 'confusion_matrix.png') as im:
            assert im.format == 'PNG'


def test_cli_eval_amp_warns_where_bf16_is_emulated(trained_checkpoint):
    from timm_msanet.utils.precision import native_bf16
    path, model, ema, data = trained_checkpoint
    proc = run_cli(['eval', '--checkpoint', path, '--data-dir', data, '--split', 'test', '--workers', '0', '--amp'],
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'mean class accuracy' in proc.stdout
    assert ('bf16 is emulated on this CPU' in proc.stderr) == (not native_bf16('cpu'))


def test_cli_eval_bad_input_exit_code(tmp_path):
    proc = run_cli(['eval', '--checkpoint', tmp_path / 'x.pth', '--data-dir', tmp_path], timeout=300)
    assert proc.returncode == 2 and 'does not exist' in proc.stderr and 'Traceback' not in proc.stderr
