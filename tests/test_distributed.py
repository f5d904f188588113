"""Multi-process training through torch.distributed, as timm's train.py runs under torchrun."""
import os
import re
import subprocess
import sys


def test_two_process_gloo_ddp_training_step():
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ddp_train_step.py')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', script],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # parsed from the whole output, not line by line: two processes share the pipe
    lines = sorted(re.findall(r'rank=\d+ world=\d+ loss=[\d.]+ weights_in_sync=\w+', proc.stdout))
    assert [line.split()[0] for line in lines] == ['rank=0', 'rank=1'], proc.stdout
    assert all('world=2' in line and 'weights_in_sync=True' in line for line in lines), lines
