"""A process that has imported torch and torchvision once and forks one child per `timm-msanet` command.

Every CLI test runs the command in a real process of its own (its own pid, stdout, stderr, exit status, cwd and
environment), as `python -m timm_msanet.cli ARGS` would; what the fork saves is the interpreter start and the
import of torch and torchvision (about 5 s of each command's 6-7 s on the 2-core VM).

Two kinds run side by side (`conftest.run_cli` picks one per command):
- cold (no argument): nothing of timm, huggingface_hub or timm_msanet is imported. They read the environment
  (HF_HOME, HF_HUB_OFFLINE, ...) when imported, so each child imports them under its own environment, as a fresh
  interpreter does.
- warm (`--warm`): also imports timm and every timm_msanet module (1-2 s of each command's own on the 2-core VM), with
  the working directory first on sys.path as `python -m` puts it. Its children are only commands whose
  environment and working directory are exactly the ones this process started with, so every import it made
  is the one a fresh interpreter would make. It imports no optional extra (OpenCV, dlib, ONNX): those stay
  the command's own, as in a fresh interpreter.
Commands whose environment changes what the interpreter itself reads at start-up (PYTHON*, OMP_*, MKL_*, LD_*)
go to neither: `conftest.run_cli` starts a fresh interpreter for them.

Protocol, one JSON object a line on stdin: {"argv", "env", "cwd", "stdout", "stderr"} (the last two: files the
child writes its streams to); the reply is {"pid": N} when the child starts, then {"status": S} when it ends
(S as subprocess's returncode: negative for a signal).
"""
import json
import os
import sys

import torch  # noqa: F401  (the point of this process)
import torchvision.ops  # noqa: F401  (pulls in torch._dynamo through timm.layers' fx helpers in every child)


def _child(request) -> None:
    import atexit
    import runpy
    import signal
    import threading
    import traceback
    os.setsid()  # a timeout kills the command's whole group, loader workers included
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request['stdout'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request['env'])
    os.chdir(request['cwd'])
    sys.path[0] = os.getcwd()  # as `python -m` puts the working directory first
    sys.argv = ['-m', *request['argv']]
    code = 0
    try:
        runpy._run_module_as_main('timm_msanet.cli')  # what `python -m` calls
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: B902  (as the interpreter does: traceback, status 1)
        traceback.print_exc()
        code = 1
    threading._shutdown()  # the interpreter's own order at exit: threads, then atexit hooks, then the streams
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def _import_the_package() -> bool:
    """Import timm and the package; False when the imports printed anything (a warning, a native library's
    line): a fresh interpreter would print it into each command's stderr, and a fork would not."""
    import importlib
    import pkgutil
    import tempfile
    import warnings
    sys.path[0] = os.getcwd()  # as `python -m` from here would have it, before anything is imported from it
    saved = os.dup(2)
    with tempfile.TemporaryFile() as printed:
        os.dup2(printed.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('default')  # shown once each here, as a fresh interpreter would show them
                import timm  # noqa: F401  (registers the models through the installed hook, as in a fresh interpreter)
                import timm_msanet
                for info in pkgutil.walk_packages(timm_msanet.__path__, 'timm_msanet.'):
                    if info.name != 'timm_msanet.cli':  # `python -m` runs it as __main__; imported here, runpy warns
                        importlib.import_module(info.name)
            sys.stderr.flush()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        printed.seek(0)
        text = printed.read().decode(errors='replace')
    if text:
        print(f'cli_zygote --warm: importing timm and timm_msanet printed this, so commands are not forked from '
              f'an interpreter that has imported them:\n{text}', file=sys.stderr)
    return not text


def main() -> None:
    if sys.argv[1:] == ['--warm']:
        if not _import_the_package():
            sys.exit(3)
        sys.stdout.write(json.dumps({'ready': True}) + '\n')
        sys.stdout.flush()
    channel = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        channel.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _child(request)
            finally:
                os._exit(70)
        channel.write(json.dumps({'pid': pid}) + '\n')
        channel.flush()
        _, status = os.waitpid(pid, 0)
        channel.write(json.dumps({'status': os.waitstatus_to_exitcode(status)}) + '\n')
        channel.flush()


if __name__ == '__main__':
    main()
