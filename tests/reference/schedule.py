"""Learning-rate schedules: the lr of 20 consecutive steps, against torch.optim.lr_scheduler.
PlateauDecay is fed a fixed metric sequence that stalls, improves and stalls again."""
import math

import numpy as np

from dist_nn import optim

STEPS = 20
BASE_LR = 0.1
METRIC = np.array([1.0, 0.9, 0.9, 0.95, 0.9, 0.89, 0.7, 0.71, 0.72, 0.7, 0.7, 0.69, 0.5,
                   0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])


def _torch_warmup_cosine(torch, opt):
    s = torch.optim.lr_scheduler
    return s.SequentialLR(opt, [s.LinearLR(opt, start_factor=0.1, total_iters=5),
                                s.CosineAnnealingLR(opt, T_max=15, eta_min=0.01)], milestones=[5])


# case name -> (our schedule builder, torch scheduler builder, uses the metric)
CASES = {
    "step": (lambda o: optim.StepDecay(o, step_size=6, gamma=0.5),
             lambda torch, o: torch.optim.lr_scheduler.StepLR(o, step_size=6, gamma=0.5), False),
    "multistep": (lambda o: optim.MultiStepDecay(o, milestones=[12, 3, 7], gamma=0.3),
                  lambda torch, o: torch.optim.lr_scheduler.MultiStepLR(o, [3, 7, 12], 0.3), False),
    "exponential": (lambda o: optim.ExponentialDecay(o, k=0.15),
                    lambda torch, o: torch.optim.lr_scheduler.ExponentialLR(o, math.exp(-0.15)),
                    False),
    "inverse_time": (lambda o: optim.InverseTimeDecay(o, k=0.3),
                     lambda torch, o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + 0.3 * t)),
                     False),
    "cosine": (lambda o: optim.CosineDecay(o, total=STEPS, min_lr=0.001),
               lambda torch, o: torch.optim.lr_scheduler.CosineAnnealingLR(o, STEPS, 0.001), False),
    "warmup_cosine": (lambda o: optim.Warmup(o, steps=5, start_factor=0.1,
                                             after=optim.CosineDecay(o, total=15, min_lr=0.01)),
                      _torch_warmup_cosine, False),
    "plateau_min_rel": (lambda o: optim.PlateauDecay(o, factor=0.5, patience=2, threshold=0.01),
                        lambda torch, o: torch.optim.lr_scheduler.ReduceLROnPlateau(
                            o, factor=0.5, patience=2, threshold=0.01), True),
    "plateau_max_abs_cooldown": (
        lambda o: optim.PlateauDecay(o, mode="max", factor=0.3, patience=1, threshold=0.05,
                                     threshold_mode="abs", cooldown=2, min_lr=0.005),
        lambda torch, o: torch.optim.lr_scheduler.ReduceLROnPlateau(
            o, mode="max", factor=0.3, patience=1, threshold=0.05, threshold_mode="abs",
            cooldown=2, min_lr=0.005), True),
}


def metric_for(case):
    # "max" cases see the negated sequence so that improvements point the same way
    return -METRIC if "max" in case else METRIC


def torch_outputs(torch, case):
    _, build, uses_metric = CASES[case]
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=BASE_LR)
    scheduler = build(torch, opt)
    lrs = []
    for t in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step(metric_for(case)[t]) if uses_metric else scheduler.step()
    return {"lr": np.array(lrs)}


def our_outputs(case):
    from dist_nn.nn import Parameter
    build, _, uses_metric = CASES[case]
    opt = optim.SGD([Parameter(np.zeros(1))], lr=BASE_LR)
    schedule = build(opt)
    lrs = []
    for t in range(STEPS):
        lrs.append(opt.lr)
        opt.step()
        schedule.step(metric_for(case)[t]) if uses_metric else schedule.step()
    return {"lr": np.array(lrs)}


def generate(torch):
    return {case: torch_outputs(torch, case) for case in CASES}
