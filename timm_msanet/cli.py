"""`timm-msanet` command: one subcommand per tool module.

Each tool module exposes `configure_parser(parser)` and `run(args) -> int`. The tool modules import torch,
timm and other heavy packages inside the functions that use them, and importing the package does not import
them either (see `timm_msanet/__init__.py`): `--help` and `--version` answer at once instead of after the
seconds torch and timm take to import.
"""
import argparse
import importlib
import os
import signal
import sys
import warnings
from typing import List, Optional

from .version import __version__

# subcommand -> (module, one-line help)
COMMANDS = {
    'info': ('timm_msanet.info', 'list the registered MSA-Net models with their params, GMACs and cfgs'),
    'eval': ('timm_msanet.evaluation.evaluate', 'FER evaluation: accuracy, mean class accuracy, per-class metrics, confusion matrix'),
    'export': ('timm_msanet.data.export', 'export RAF-DB, AffectNet, FER2013 or FERPlus to an ImageFolder tree for timm'),
    'verify': ('timm_msanet.evaluation.verify', 'check a release\'s published accuracy on your copy of the dataset (same protocol? same numbers?)'),
    'calibrate': ('timm_msanet.evaluation.calibration', 'fit a temperature on the validation split so scores are calibrated; ECE/NLL/Brier before and after'),
    'publish': ('timm_msanet.hub.publish', 'publish a trained checkpoint to the Hugging Face Hub (or --dry-run to a folder)'),
    'predict': ('timm_msanet.inference.predict_command', 'predict expressions for images and folders, optionally per detected face'),
    'explain': ('timm_msanet.inference.explain', 'draw CBAM spatial attention maps and the class activation map of an image'),
    'export-onnx': ('timm_msanet.inference.export_onnx', 'export a model to ONNX with its labels and data config, check it with onnxruntime'),
    'bench': ('timm_msanet.bench', 'training and inference throughput, TFLOP/s and peak memory next to timm CNNs'),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='timm-msanet', description='MSA-Net facial expression models for timm')
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().split('\n\n')[0])
        module.configure_parser(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        from .utils.errors import ToolError
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while torch and timm are still importing
        print('interrupted', file=sys.stderr)
        return 130

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f'timm-msanet {args.command}: warning: {message}', file=sys.stderr)

    # Called from Python, the caller's process goes on: the signal handlers a command leaves behind (export ignores
    # SIGINT/SIGTERM once its tree is in place or its cleanup has begun, as a process about to exit should) and
    # the warning hook are put back, or that process would ignore Ctrl-C and SIGTERM from then on.
    saved = _signal_handlers() if argv is not None else {}
    if saved.get(signal.SIGTERM, signal.getsignal(signal.SIGTERM)) is signal.SIG_DFL and _main_thread():
        # SIGTERM unwinds like Ctrl-C in every command, so `finally` blocks remove what they made (publish's
        # staging folder, an output's temporary file) instead of the process dying with them left behind
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    saved_showwarning = warnings.showwarning
    warnings.showwarning = one_line_warning  # e.g. "labels are meaningless" for an untrained head
    try:
        return int(args._run(args) or 0)
    except ToolError as e:  # bad input or set-up, from any subcommand: one line (errors.py)
        print(f'timm-msanet {args.command}: error: {e}', file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        # a second Ctrl-C / SIGTERM while the first one unwinds must not turn this line into a traceback
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        print('interrupted', file=sys.stderr)
        if argv is not None:
            return 130
        # the command line: the command's own handlers have cleaned up (partial outputs removed, workers
        # stopped); skip the interpreter's exit hooks, which join helper threads and processes that an
        # interrupt can leave waiting forever
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    finally:
        if argv is not None:
            warnings.showwarning = saved_showwarning
            for sig, handler in saved.items():
                signal.signal(sig, handler)


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _signal_handlers() -> dict:
    """SIGINT's and SIGTERM's handlers, when this is the main thread (the only one that may set them)."""
    if not _main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


if __name__ == '__main__':
    sys.exit(main())
