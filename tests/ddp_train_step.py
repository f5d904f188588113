"""Run under torchrun (2 processes, gloo, CPU): two DDP training steps of msanet_r18, then compare weights."""

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
import timm
from torch.nn.parallel import DistributedDataParallel


def main():
    dist.init_process_group('gloo')
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # same init on every rank (DDP also broadcasts rank 0's weights)
    model = timm.create_model('msanet_r18', drop_path_rate=0.1)
    model = DistributedDataParallel(model, find_unused_parameters=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
    for _ in range(2):  # an unused parameter makes the second step raise
        x = torch.randn(2, 3, 64, 64, generator=gen)
        y = torch.randint(0, 7, (2,), generator=gen)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    same = all(torch.equal(gathered[0], g) for g in gathered)
    # one write of the whole line: print() writes the text and the newline separately, and the two ranks'
    # lines then interleave in the shared pipe
    sys.stdout.write(f'rank={rank} world={world} loss={loss.item():.4f} weights_in_sync={same}\n')
    sys.stdout.flush()
    dist.destroy_process_group()
    if not same:
        raise SystemExit(1)


if __name__ == '__main__':
    main()
