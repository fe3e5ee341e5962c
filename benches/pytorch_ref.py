"""The seven workloads of benches/README.md in PyTorch (CPU), printing the
same machine-readable lines as `cargo bench --bench workloads`:
`<workload> <metric> <value>` (times are medians).

Run: python benches/pytorch_ref.py [W1 W2 ...]   (needs `pip install torch`)
"""
import ctypes
import statistics
import sys
import threading
import time

import torch

torch.manual_seed(0)
torch.set_num_threads(2)


def timed(warmup, runs, f):
    for _ in range(warmup):
        f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def report(workload, metric, value):
    print(f"{workload} {metric} {value:.6f}", flush=True)


def status_bytes(field):
    """A line `<field>: <n> kB` of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) << 10
    raise KeyError(field)


def peak_rss_during(f):
    """The peak resident set during f() above the resident set before it, in
    bytes: VmHWM after resetting it to the current VmRSS (by writing 5 to
    /proc/self/clear_refs), as benches/workloads.rs measures tapegrad.
    Memory that earlier steps freed but glibc kept is given back first
    (malloc_trim), so that the step cannot hide its peak in it. Linux and
    glibc only."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    f()
    return status_bytes("VmHWM") - before


def w1():
    x = torch.randn(16, requires_grad=True)

    def run():
        y = x
        for _ in range(10_000):
            y = torch.tanh(y * 1.0001 + 0.0001)
        y.sum().backward()
        x.grad = None

    report("W1", "us_per_op", timed(1, 5, run) * 1e6 / 30_000)


def w2():
    x = torch.randn(128, 784)
    labels = torch.tensor([(i * 7 + 3) % 10 for i in range(128)])
    layers = [torch.nn.Linear(784, 512), torch.nn.Linear(512, 512), torch.nn.Linear(512, 10)]
    opt = torch.optim.SGD([p for layer in layers for p in layer.parameters()], lr=0.01)

    def step():
        h = torch.relu(layers[0](x))
        h = torch.relu(layers[1](h))
        loss = torch.nn.functional.cross_entropy(layers[2](h), labels)
        loss.backward()
        opt.step()
        opt.zero_grad()

    report("W2", "ms_per_step", timed(5, 50, step) * 1e3)


def w3():
    n = 1024
    a = torch.randn(n, n, requires_grad=True)
    b = torch.randn(n, n, requires_grad=True)

    def fwd():
        with torch.no_grad():
            a @ b

    report("W3", "forward_gflops", 2 * n**3 / timed(2, 11, fwd) / 1e9)

    def both():
        (a @ b).sum().backward()
        a.grad = None
        b.grad = None

    report("W3", "fwd_bwd_ms", timed(2, 11, both) * 1e3)


def w4():
    from torch.utils.checkpoint import checkpoint_sequential

    depth = 32
    layers = [torch.nn.Linear(1024, 1024) for _ in range(depth)]
    x = torch.randn(256, 1024)
    modules = [lambda h, layer=layer: torch.tanh(layer(h)) for layer in layers]

    class Seq(torch.nn.Module):
        def __init__(self, fns):
            super().__init__()
            self.fns = fns

        def forward(self, h):
            for f in self.fns:
                h = f(h)
            return h

    seq = torch.nn.Sequential(*[Seq([f]) for f in modules])
    segments = round(depth**0.5)

    for name, forward in [
        ("plain", lambda: seq(x)),
        ("sqrt_segments", lambda: checkpoint_sequential(seq, segments, x, use_reentrant=False)),
    ]:
        saved = []

        def pack(t):
            saved.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = forward()
        # Bytes of distinct storages saved (the checkpoint keeps only inputs).
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
        params = {p.untyped_storage().data_ptr() for layer in layers for p in layer.parameters()}
        mib = sum(v for k, v in storages.items() if k not in params) / 2**20
        del y, saved

        def run():
            forward().sum().backward()
            for layer in layers:
                layer.zero_grad()

        report("W4", f"{name}_ms", timed(1, 5, run) * 1e3)
        report("W4", f"{name}_saved_mib", mib)
        # A step's peak resident memory, the weights' gradients (128 MiB)
        # made by its backward.
        report("W4", f"{name}_peak_rss_mib", peak_rss_during(run) / 2**20)


def w5():
    result = {}

    def run():
        def chain():
            x = torch.ones(1, requires_grad=True)
            y = x
            for _ in range(200_000):
                y = y * 1.000001
            y.backward()
            del y

        result["s"] = timed(0, 3, chain)

    threading.stack_size(64 << 20)  # PyTorch's own backward needs no deep stack; Python's frames might
    t = threading.Thread(target=run)
    t.start()
    t.join()
    report("W5", "seconds", result["s"])


def w6():
    nn = torch.nn
    cnn = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )
    x = torch.rand(64, 1, 8, 8)
    labels = torch.tensor([(i * 7 + 3) % 10 for i in range(64)])
    opt = torch.optim.Adam(cnn.parameters(), lr=0.003)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(cnn(x), labels).backward()
        opt.step()

    report("W6", "ms_per_step", timed(10, 200, step) * 1e3)


def w7():
    """`us_per_step` is torch.optim.Adam with foreach=True, its multi-tensor
    implementation (PyTorch's default on CUDA, and the faster one here);
    `us_per_step_for_loop` is Adam as constructed by default, which on the
    CPU is the loop over the parameters (foreach=None picks the multi-tensor
    kernels only for CUDA-like devices)."""
    for metric, foreach in [("us_per_step", True), ("us_per_step_for_loop", None)]:
        params = [torch.randn(1000, requires_grad=True) for _ in range(100)]
        for p in params:
            p.grad = torch.randn(1000)
        opt = torch.optim.Adam(params, lr=1e-3, foreach=foreach)
        report("W7", metric, timed(50, 1000, opt.step) * 1e6)


if __name__ == "__main__":
    wanted = [a for a in sys.argv[1:] if a.startswith("W")]
    for name, f in [("W1", w1), ("W2", w2), ("W3", w3), ("W4", w4), ("W5", w5), ("W6", w6),
                    ("W7", w7)]:
        if not wanted or name in wanted:
            f()
