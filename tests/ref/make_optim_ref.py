#!/usr/bin/env python3
"""Reference trajectories of tapegrad's optimizers, computed with PyTorch.

Run from the repository root (PyTorch is needed here only, never by the tests):

    python tests/ref/make_optim_ref.py        # writes tests/ref/optim_ref.txt

The problem: three float64 parameters a [3], b [2, 2] and c [2], and at step
t (counted from 1) the loss

    L_t = sum(w_a (a - y_a)^2) + sum(w_b (b - y_b)^2) + [t even] sum(w_c (c - y_c)^2)

with fixed weights w and targets y. So c has no gradient on odd steps
(zero_grad sets it to None): an optimizer must skip it there and keep its
state, including its own step count. Every case runs one optimizer
configuration, with an optional learning-rate schedule stepped after each
optimizer step, for a number of steps, and records the parameters and the
learning rate after every step. tests/optim.rs runs the same loop in
tapegrad and compares (1e-10 in f64).

Options a case does not name keep the optimizer's defaults, so the defaults
are compared too.

File format (tokens separated by single spaces; floats are Python repr, the
shortest string that round-trips the f64 exactly):

    # comment
    torch VERSION
    param NAME [SHAPE] V V V ...     initial value, row-major
    weight NAME V V V ...            w of NAME's term
    target NAME V V V ...            y of NAME's term
    every NAME K                     NAME's term is in the loss when t % K == 0
    case NAME KEY=VALUE ...          opt=sgd|adam|adamw, lr, momentum, dampening,
                                     nesterov=0|1, weight_decay, betas=B1,B2, eps,
                                     amsgrad=0|1, schedule=step:SIZE,GAMMA or
                                     cosine:T_MAX,ETA_MIN, steps
    step T lr LR                     after step T (and the schedule's step): the lr
    value NAME V V V ...             NAME after step T
    end
"""

import os
import sys

import torch

DT = torch.float64

PARAMS = [
    ("a", [3], [0.5, -1.0, 2.0]),
    ("b", [2, 2], [1.0, 0.0, -0.5, 0.25]),
    ("c", [2], [0.3, -0.7]),
]
WEIGHTS = {"a": [1.0, 0.5, 2.0], "b": [0.25, 1.5, 1.0, 3.0], "c": [0.75, 1.25]}
TARGETS = {"a": [1.5, 2.0, -1.0], "b": [0.5, -2.0, 1.0, 0.0], "c": [-1.0, 0.5]}
EVERY = {"a": 1, "b": 1, "c": 2}

CASES = [
    ("sgd_plain", dict(opt="sgd", lr=0.1)),
    ("sgd_momentum", dict(opt="sgd", lr=0.1, momentum=0.9)),
    ("sgd_dampening", dict(opt="sgd", lr=0.1, momentum=0.9, dampening=0.5)),
    ("sgd_nesterov", dict(opt="sgd", lr=0.1, momentum=0.9, nesterov=1)),
    ("sgd_weight_decay", dict(opt="sgd", lr=0.1, weight_decay=0.1)),
    ("sgd_all", dict(opt="sgd", lr=0.05, momentum=0.8, nesterov=1, weight_decay=0.05)),
    ("sgd_momentum_weight_decay_dampening", dict(opt="sgd", lr=0.05, momentum=0.7, dampening=0.2, weight_decay=0.3)),
    ("adam_default", dict(opt="adam", lr=0.1)),
    ("adam_weight_decay", dict(opt="adam", lr=0.1, weight_decay=0.1)),
    ("adam_amsgrad", dict(opt="adam", lr=0.1, amsgrad=1, betas=(0.8, 0.9), eps=1e-3)),
    ("adam_betas_eps", dict(opt="adam", lr=0.05, betas=(0.5, 0.9), eps=0.01)),
    ("adam_weight_decay_amsgrad", dict(opt="adam", lr=0.1, weight_decay=0.5, amsgrad=1)),
    ("adamw_default", dict(opt="adamw", lr=0.1)),
    ("adamw_weight_decay_amsgrad", dict(opt="adamw", lr=0.1, weight_decay=0.2, amsgrad=1, betas=(0.8, 0.9))),
    ("sgd_momentum_step_lr", dict(opt="sgd", lr=0.1, momentum=0.9, schedule=("step", 3, 0.5))),
    ("adam_step_lr", dict(opt="adam", lr=0.1, schedule=("step", 4, 0.3))),
    ("adam_cosine", dict(opt="adam", lr=0.1, schedule=("cosine", 4, 0.001), steps=14)),
    ("adamw_cosine", dict(opt="adamw", lr=0.1, schedule=("cosine", 5, 0.0), steps=12)),
    ("sgd_nesterov_cosine", dict(opt="sgd", lr=0.1, momentum=0.9, nesterov=1, schedule=("cosine", 3, 0.01), steps=10)),
]
STEPS = 10


def fmt(values):
    return " ".join(repr(float(v)) for v in values)


def make_optimizer(params, cfg):
    kwargs = {"lr": cfg["lr"]}
    for key in ("momentum", "dampening", "weight_decay", "eps"):
        if key in cfg:
            kwargs[key] = cfg[key]
    if "nesterov" in cfg:
        kwargs["nesterov"] = bool(cfg["nesterov"])
    if "amsgrad" in cfg:
        kwargs["amsgrad"] = bool(cfg["amsgrad"])
    if "betas" in cfg:
        kwargs["betas"] = cfg["betas"]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg["opt"]]
    return cls(params, **kwargs)


def make_schedule(opt, cfg):
    if "schedule" not in cfg:
        return None
    kind, n, x = cfg["schedule"]
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=n, gamma=x)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n, eta_min=x)


def config_tokens(cfg):
    out = []
    for key, v in cfg.items():
        if key == "betas":
            out.append(f"betas={v[0]!r},{v[1]!r}")
        elif key == "schedule":
            out.append(f"schedule={v[0]}:{v[1]},{v[2]!r}")
        else:
            out.append(f"{key}={v!r}" if isinstance(v, float) else f"{key}={v}")
    return " ".join(out)


def run(name, cfg, out):
    params = {n: torch.tensor(init, dtype=DT).reshape(shape).requires_grad_(True) for n, shape, init in PARAMS}
    weights = {n: torch.tensor(v, dtype=DT).reshape(params[n].shape) for n, v in WEIGHTS.items()}
    targets = {n: torch.tensor(v, dtype=DT).reshape(params[n].shape) for n, v in TARGETS.items()}
    opt = make_optimizer(list(params.values()), cfg)
    schedule = make_schedule(opt, cfg)
    out.append(f"case {name} {config_tokens(cfg)}")
    for t in range(1, cfg.get("steps", STEPS) + 1):
        opt.zero_grad()
        loss = sum(
            ((params[n] - targets[n]) * (params[n] - targets[n]) * weights[n]).sum()
            for n in params
            if t % EVERY[n] == 0
        )
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()
        out.append(f"step {t} lr {opt.param_groups[0]['lr']!r}")
        for n, p in params.items():
            out.append(f"value {n} {fmt(p.detach().reshape(-1).tolist())}")
    out.append("end")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "optim_ref.txt")
    out = [
        "# Optimizer trajectories from PyTorch (float64); written by tests/ref/make_optim_ref.py",
        f"torch {torch.__version__}",
    ]
    for n, shape, init in PARAMS:
        out.append(f"param {n} [{','.join(map(str, shape))}] {fmt(init)}")
        out.append(f"weight {n} {fmt(WEIGHTS[n])}")
        out.append(f"target {n} {fmt(TARGETS[n])}")
        out.append(f"every {n} {EVERY[n]}")
    for name, cfg in CASES:
        run(name, cfg, out)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {len(CASES)} cases to {path}")


if __name__ == "__main__":
    main()
