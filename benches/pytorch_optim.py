"""W7 in PyTorch (CPU): one Adam step over 100 parameters of 1,000 elements
each (float32, default options), printing the lines of
`cargo bench --bench optim`: `<workload> <metric> <value>` (medians).

`us_per_step` is torch.optim.Adam as constructed by default, with 2
threads as benches/pytorch_ref.py. On the CPU that is the per-parameter loop
(`foreach=None` picks the multi-tensor kernels only for CUDA-like devices);
`us_per_step_foreach` forces `foreach=True`, the multi-tensor
implementation; `us_per_step_1thread` is the default again on one thread
(PyTorch's small ops run on one thread anyway, but its 2-thread figure
suffers more when the machine is busy).

Run: python benches/pytorch_optim.py   (needs `pip install torch`)
"""
import statistics
import time

import torch

torch.manual_seed(0)
torch.set_num_threads(2)


def w7(metric, **options):
    params = [torch.randn(1000, requires_grad=True) for _ in range(100)]
    for p in params:
        p.grad = torch.randn(1000)
    opt = torch.optim.Adam(params, lr=1e-3, **options)
    for _ in range(50):
        opt.step()
    times = []
    for _ in range(1000):
        t = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t)
    print(f"W7 {metric} {statistics.median(times) * 1e6:.6f}", flush=True)


if __name__ == "__main__":
    w7("us_per_step")
    w7("us_per_step_foreach", foreach=True)
    torch.set_num_threads(1)
    w7("us_per_step_1thread")
