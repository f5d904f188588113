"""Re-evaluate a release on your own copy of its dataset and compare with the numbers it was published with.

    timm-msanet verify RELEASE --data-dir ROOT [--tolerance PP] [--require-same-protocol] [--out DIR]

RELEASE is a registered tag (`msanet_r18.fer2013`, or `msanet_r18` for its default), a release folder
(`timm-msanet publish --dry-run OUTDIR`, or `local-dir:PATH`), or a Hub repo (`hf-hub:ORG/NAME` or
`ORG/NAME`, read from the local cache when offline). The published numbers are the release's `eval.json`
(what `publish --eval-json` uploaded), or for a packaged tag its entry in `releases.py`.

Decisions:

* The split and horizontal-flip TTA are the ones the release was evaluated with (`--split` must agree when
  the release records a split; comparing another split would compare different things).
* Metrics compared: accuracy, mean class accuracy and ECE, whichever the release records. A metric agrees
  when it is within `--tolerance` percentage points (default 0.1: card figures are rounded to 0.01 points,
  and one FER2013 test image is 0.03 points, so a few predictions may flip on other hardware or BLAS).
* The protocol (`evaluate.evaluation_protocol`) is compared field by field: file list and labels, file
  bytes, class order, preprocessing, TTA; the weights hash is compared too. A different protocol is
  reported; it fails the run only with `--require-same-protocol` (the figures may still agree).
* Exit status 0: every recorded metric agrees (and, with `--require-same-protocol`, the protocol is the
  same); 1: they disagree; 2: the release or data cannot be read (one-line error).
"""
import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..utils import safe_json
from ..utils.errors import ToolError
from .evaluate import OUTPUT_FILES, evaluate, exported_dataset, write_outputs
from ..loading import load_expression_model
from ..utils.options import device, non_negative_float, non_negative_int, positive_int
from ..utils.outputs import add_overwrite_argument, check_folder_outputs, write_output
from ..releases import PUBLISHED, export_name

__all__ = ['DEFAULT_TOLERANCE_PP', 'VerifyError', 'release_claim', 'compare', 'verify', 'format_report',
           'configure_parser', 'run']

DEFAULT_TOLERANCE_PP = 0.1
METRICS = (('accuracy', 'accuracy'), ('mean_class_accuracy', 'mean class accuracy'), ('ece', 'ECE'))
PROTOCOL_FIELDS = ('sha256', 'num_images', 'files_sha256', 'content_sha256', 'class_order', 'preprocessing', 'tta')


class VerifyError(ToolError):
    """The release or its published numbers cannot be read; the message says what was expected."""


def _fraction(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value / 100 if value > 1 else float(value)  # cards may quote percentages


def _claim_from_eval(ev: Any, where: str) -> Dict[str, Any]:
    if not isinstance(ev, Mapping):
        raise VerifyError(f'{where} must hold a JSON object (the metrics.json of `timm-msanet eval`)')
    metrics = {k: _fraction(ev.get(k)) for k, _ in METRICS if _fraction(ev.get(k)) is not None}
    if not metrics:
        raise VerifyError(f'{where} records none of {[k for k, _ in METRICS]}: nothing to verify')
    protocol = ev.get('protocol') if isinstance(ev.get('protocol'), Mapping) else None
    split = ev.get('split') or (protocol or {}).get('split')
    if split is not None and not (isinstance(split, str) and re.fullmatch(r'[\w][\w.-]{0,63}', split)):
        # a split is a folder name inside your data dir, never a path a file can choose
        raise VerifyError(f'{where}: split {split!r} is not a split folder name (train, validation, test, ...)')
    tta = bool(ev.get('hflip_tta')) or (protocol or {}).get('tta') == 'hflip'
    dataset = ev.get('dataset') or (protocol or {}).get('dataset')
    return dict(metrics=metrics, protocol=protocol, split=split, hflip_tta=tta, num_samples=ev.get('num_samples'),
                dataset=dataset if isinstance(dataset, str) else None)


def _read_json(path: Path, what: str) -> Any:
    try:
        return safe_json.read(path)
    except FileNotFoundError:
        raise VerifyError(f'{what} has no eval.json: nothing records the numbers to verify (publish the release '
                          f'with `timm-msanet publish --eval-json metrics.json`)') from None
    except (ValueError, UnicodeDecodeError) as e:
        raise VerifyError(f'{path} is not valid JSON: {e}') from None


def release_claim(release: str) -> Dict[str, Any]:
    """How to load RELEASE (`load`: load_model kwargs) and what it claims (`metrics` as fractions, `protocol`,
    `split`, `hflip_tta`)."""
    name = str(release)
    if name.startswith('local-dir:') or (':' not in name and Path(name).is_dir()):
        folder = Path(name.split(':', 1)[1] if name.startswith('local-dir:') else name)
        if not folder.is_dir():
            raise VerifyError(f'release folder {folder} does not exist')
        where = folder / 'eval.json'
        claim = _claim_from_eval(_read_json(where, f'release folder {folder}'), str(where))
        return dict(claim, release=str(folder), kind='folder', load=dict(model_name=f'local-dir:{folder}'))
    if name.startswith('hf-hub:') or re.fullmatch(r'[\w.-]+/[\w.-]+(@[\w./-]+)?', name):
        repo = name.split(':', 1)[1] if name.startswith('hf-hub:') else name
        return dict(release=repo, kind='hub', load=dict(hf_hub=repo), eval_json_repo=repo)
    arch, _, tag = name.partition('.')
    for entry in PUBLISHED:
        if entry['arch'] == arch and (entry['tag'] == tag or (not tag and entry.get('default'))):
            metrics = {k: _fraction(entry['metrics'].get(k)) for k, _ in METRICS
                       if _fraction(entry['metrics'].get(k)) is not None}
            protocol = dict(entry['protocol']) if entry.get('protocol') else {}
            tag = f"{arch}.{entry['tag']}"
            return dict(release=tag, kind='packaged', load=dict(model_name=tag), metrics=metrics,
                        dataset=export_name(entry['dataset']),
                        protocol=protocol or None, split=protocol.get('split', 'test'),
                        hflip_tta=protocol.get('tta') == 'hflip', num_samples=protocol.get('num_images'))
    known = [f"{e['arch']}.{e['tag']}" for e in PUBLISHED]
    raise VerifyError(f'{name} is not a release: give a published tag ({", ".join(known)}), a release folder '
                      f'(publish --dry-run OUTDIR) or a Hub repo (hf-hub:ORG/NAME)')


def _hub_eval_json(repo: str) -> Dict[str, Any]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf_errors
    repo_id, _, revision = repo.partition('@')
    try:
        path = hf_hub_download(repo_id, 'eval.json', revision=revision or None)
    except hf_errors.EntryNotFoundError:
        raise VerifyError(f'{repo} has no eval.json: nothing records the numbers to verify') from None
    except (hf_errors.LocalEntryNotFoundError, OSError) as e:
        raise VerifyError(f'cannot read eval.json of {repo}: not in the local Hugging Face cache and the Hub cannot '
                          f'be reached ({type(e).__name__}); download the repo once while online') from None
    return _claim_from_eval(_read_json(Path(path), repo), f'{repo}/eval.json')


def _protocol_differences(card: Optional[Mapping[str, Any]], measured: Mapping[str, Any]) -> Tuple[str, List[Dict]]:
    if not card:
        return 'not recorded', []
    diffs = [dict(field=k, card=card[k], measured=measured.get(k)) for k in PROTOCOL_FIELDS
             if k in card and card[k] != measured.get(k)]
    return ('same' if not diffs else 'different'), diffs


def compare(claim: Mapping[str, Any], measured: Mapping[str, Any], tolerance_pp: float = DEFAULT_TOLERANCE_PP,
            require_same_protocol: bool = False) -> Dict[str, Any]:
    """Metric by metric (percentage points) and field by field; `agrees` is the verdict."""
    rows = []
    for key, title in METRICS:
        if key not in claim['metrics']:
            continue
        card, got = claim['metrics'][key] * 100, float(measured[key]) * 100
        rows.append(dict(metric=key, title=title, card_pct=round(card, 4), measured_pct=round(got, 4),
                         diff_pp=round(got - card, 4), within_tolerance=abs(got - card) <= tolerance_pp + 1e-9))
    status, diffs = _protocol_differences(claim.get('protocol'), measured['protocol'])
    card_weights = (claim.get('protocol') or {}).get('weights_sha256')
    weights = None if not card_weights else card_weights == measured['protocol']['weights_sha256']
    metrics_agree = all(r['within_tolerance'] for r in rows)
    agrees = metrics_agree and (status == 'same' or not require_same_protocol)
    return dict(release=claim['release'], kind=claim['kind'], split=measured['split'], tolerance_pp=tolerance_pp,
                metrics=rows, metrics_agree=metrics_agree, protocol=status, protocol_differences=diffs,
                same_weights=weights, require_same_protocol=require_same_protocol, agrees=agrees,
                measured_protocol=measured['protocol'], num_samples=measured['num_samples'])


def verify(release: str, data_dir: str, split: Optional[str] = None, tolerance_pp: float = DEFAULT_TOLERANCE_PP,
           require_same_protocol: bool = False, batch_size: int = 64, workers: int = 2, device: str = 'cpu',
           progress: bool = False) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Evaluate RELEASE on `data_dir` as its card was evaluated; returns (report, the new metrics)."""
    if not tolerance_pp >= 0:
        raise VerifyError(f'--tolerance must be a number of percentage points >= 0, got {tolerance_pp}')
    claim = release_claim(release)
    model = load_expression_model(**claim['load'])
    if claim['kind'] == 'hub':
        claim = dict(claim, **_hub_eval_json(claim['eval_json_repo']))
    exported = exported_dataset(data_dir)
    if claim.get('dataset') and exported and exported != claim['dataset']:
        raise VerifyError(f"{claim['release']} was evaluated on {claim['dataset']}, but {data_dir} is an export of "
                          f"{exported} (its manifest.json): verify a release on its own dataset, e.g. "
                          f"`timm-msanet export {claim['dataset']} SOURCE OUT`")
    if split is not None and claim.get('split') and split != claim['split']:
        raise VerifyError(f'{claim["release"]} was evaluated on split {claim["split"]!r}; --split {split} would '
                          f'compare different things (drop --split)')
    measured = evaluate(model, data_dir, split=split or claim.get('split') or 'test', batch_size=batch_size,
                        workers=workers, device=device, hflip_tta=claim['hflip_tta'], progress=progress)
    return compare(claim, measured, tolerance_pp, require_same_protocol), measured


def format_report(report: Mapping[str, Any]) -> str:
    p = report['measured_protocol']
    lines = [f"release   {report['release']} ({report['kind']})",
             f"data      {p.get('dataset') or ''} {report['split']}: {report['num_samples']} images, protocol "
             f"{p['sha256'][:16]}"]
    if report['protocol'] == 'same':
        lines.append('protocol  same as the release\'s evaluation (file list, labels, file bytes, class order, '
                     'preprocessing, TTA)')
    elif report['protocol'] == 'not recorded':
        lines.append('protocol  not recorded with the release: the figures can be compared, not the data')
    else:
        fields = ', '.join(
            f"{d['field']} ({d['card']} vs {d['measured']})" if d['field'] in ('num_images', 'tta') else d['field']
            for d in report['protocol_differences'])
        lines.append(f'protocol  DIFFERENT from the release\'s evaluation: {fields}')
    if report['same_weights'] is not None:
        lines.append('weights   ' + ('the ones evaluated for the release' if report['same_weights'] else
                                     'DIFFERENT from the ones evaluated for the release'))
    lines.append(f"{'metric':20s} {'release':>8s} {'measured':>9s} {'diff (pp)':>10s}")
    for r in report['metrics']:
        lines.append(f"{r['title']:20s} {r['card_pct']:8.2f} {r['measured_pct']:9.2f} {r['diff_pp']:+10.2f}  "
                     f"{'ok' if r['within_tolerance'] else 'DIFFERS'}")
    tol = report['tolerance_pp']
    if report['agrees']:
        lines.append(f'verified: every published metric is reproduced within {tol:g} percentage points')
    elif not report['metrics_agree']:
        bad = ', '.join(f"{r['title']} by {r['diff_pp']:+.2f}" for r in report['metrics'] if not r['within_tolerance'])
        lines.append(f'NOT verified: {bad} percentage points (tolerance {tol:g})')
    else:
        lines.append('NOT verified: the figures agree but the protocol differs (--require-same-protocol)')
    return '\n'.join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('release', metavar='RELEASE',
                        help='msanet_r18.fer2013 (a packaged tag), a release folder, or hf-hub:ORG/NAME')
    parser.add_argument('--data-dir', required=True, help='your export of the dataset (timm-msanet export)')
    parser.add_argument('--split', default=None, help='split folder (default: the one the release was evaluated on)')
    parser.add_argument('--tolerance', type=non_negative_float, default=DEFAULT_TOLERANCE_PP, metavar='PP',
                        help=f'allowed difference per metric in percentage points (default {DEFAULT_TOLERANCE_PP:g})')
    parser.add_argument('--require-same-protocol', action='store_true',
                        help='also fail when the data, preprocessing or TTA differ from the release\'s evaluation')
    parser.add_argument('--out', type=Path, help='folder for verify.json and the new metrics.json')
    parser.add_argument('--batch-size', type=positive_int, default=64)
    parser.add_argument('--workers', type=non_negative_int, default=2)
    parser.add_argument('--device', type=device, default='cpu')
    add_overwrite_argument(parser, 'the --out files')


def run(args: argparse.Namespace) -> int:
    if args.out:  # before the work
        check_folder_outputs(args.out, ('verify.json', *OUTPUT_FILES), (), args.overwrite, input_dirs=[args.data_dir])
    report, measured = verify(args.release, args.data_dir, split=args.split, tolerance_pp=args.tolerance,
                              require_same_protocol=args.require_same_protocol, batch_size=args.batch_size,
                              workers=args.workers, device=args.device, progress=sys.stderr.isatty())
    print(format_report(report))
    if args.out:
        print(f'wrote {write_output(args.out / "verify.json", json.dumps(report, indent=2), (), args.overwrite)}')
        for path in write_outputs(measured, args.out, args.overwrite):
            print(f'wrote {path}')
    return 0 if report['agrees'] else 1
