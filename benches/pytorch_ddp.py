"""PyTorch's side of benches/ddp.rs: the digits CNN trained with
DistributedDataParallel over the gloo backend, 2 processes on this machine,
each single-threaded, batch 64 per replica, Adam; prints
`images_per_second <value>` (all replicas' images over the slowest rank's
time). Run by `cargo bench --bench ddp -- --torch PYTHON`, or alone:
`python benches/pytorch_ddp.py --steps 200`."""

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def worker(rank, world, port, steps, warmup, out):
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)
    model = nn.parallel.DistributedDataParallel(cnn())
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    x = torch.rand(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    seconds = time.perf_counter() - start
    out[rank] = seconds
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--world", type=int, default=2)
    a = p.parse_args()
    with socket.socket() as s:  # a free port on the loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(worker, args=(a.world, port, a.steps, a.warmup, out), nprocs=a.world)
    seconds = max(out.values())
    print(f"images_per_second {a.world * 64 * a.steps / seconds:.1f}")


if __name__ == "__main__":
    main()
