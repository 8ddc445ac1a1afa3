"""Optimizer trajectories: 20 steps of each optimizer on two parameters, a "weight" that is
decayed and a "bias" that is not, with gradients g = 2 (p - target) + noise_t, so that every
step depends on the previous ones. PyTorch runs the same with two param groups (weight decay
only on the first) and the L1 penalty's gradient added by hand."""
import numpy as np

from dist_nn import optim

STEPS = 20
SHAPES = {"weight": (4, 3), "bias": (4,)}

# case name -> (our optimizer class, torch.optim class name, keyword arguments, l1)
CASES = {
    "sgd": (optim.SGD, "SGD", dict(lr=0.1), 0.0),
    "sgd_momentum": (optim.SGD, "SGD", dict(lr=0.05, momentum=0.9), 0.0),
    "sgd_nesterov_decay": (optim.SGD, "SGD",
                           dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1), 0.0),
    "sgd_l1_l2": (optim.SGD, "SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.01), 0.02),
    "adagrad": (optim.Adagrad, "Adagrad", dict(), 0.0),
    "adagrad_options": (optim.Adagrad, "Adagrad",
                        dict(lr=0.3, lr_decay=0.05, initial_accumulator_value=0.2,
                             weight_decay=0.1), 0.0),
    "rmsprop": (optim.RMSprop, "RMSprop", dict(), 0.0),
    "rmsprop_centered_momentum": (optim.RMSprop, "RMSprop",
                                  dict(lr=0.01, alpha=0.9, momentum=0.7, centered=True,
                                       weight_decay=0.05), 0.0),
    "adadelta": (optim.Adadelta, "Adadelta", dict(), 0.0),
    "adadelta_options": (optim.Adadelta, "Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.1),
                         0.01),
    "adam": (optim.Adam, "Adam", dict(lr=0.05), 0.0),
    "adam_amsgrad_decay": (optim.Adam, "Adam",
                           dict(lr=0.05, betas=(0.8, 0.99), amsgrad=True, weight_decay=0.1), 0.0),
    "adamw": (optim.AdamW, "AdamW", dict(lr=0.05), 0.0),
    "adamw_amsgrad": (optim.AdamW, "AdamW",
                      dict(lr=0.05, weight_decay=0.3, amsgrad=True, eps=1e-6), 0.0),
}


def make_inputs(seed):
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, shape in SHAPES.items():
        inputs[f"init.{name}"] = rng.standard_normal(shape)
        inputs[f"target.{name}"] = rng.standard_normal(shape)
        inputs[f"noise.{name}"] = 0.3 * rng.standard_normal((STEPS,) + shape)
    return inputs


def gradient(name, value, inputs, t):
    return 2 * (value - inputs[f"target.{name}"]) + inputs[f"noise.{name}"][t]


def torch_outputs(torch, case, inputs):
    _, torch_name, kwargs, l1 = CASES[case]
    params = {n: torch.tensor(inputs[f"init.{n}"], requires_grad=True) for n in SHAPES}
    decay = kwargs.get("weight_decay", 0.0)
    others = {k: v for k, v in kwargs.items() if k != "weight_decay"}
    groups = [{"params": [params["weight"]]}, {"params": [params["bias"]], "weight_decay": 0.0}]
    if "weight_decay" in kwargs:
        groups[0]["weight_decay"] = decay
    opt = getattr(torch.optim, torch_name)(groups, **others)
    trajectory = {n: [] for n in SHAPES}
    for t in range(STEPS):
        for n, p in params.items():
            p.grad = torch.tensor(gradient(n, p.detach().numpy(), inputs, t))
        params["weight"].grad += l1 * torch.sign(params["weight"].detach())
        opt.step()
        for n, p in params.items():
            trajectory[n].append(p.detach().numpy().copy())
    return {f"trajectory.{n}": np.stack(v) for n, v in trajectory.items()}


def our_outputs(case, inputs):
    from dist_nn import backend
    from dist_nn.nn import Parameter
    cls, _, kwargs, l1 = CASES[case]
    params = {"weight": Parameter(backend.to_device(inputs["init.weight"])),
              "bias": Parameter(backend.to_device(inputs["init.bias"]), weight_decay=False)}
    opt = cls(list(params.values()), l1=l1, **kwargs)
    trajectory = {n: [] for n in SHAPES}
    for t in range(STEPS):
        for n, p in params.items():
            p.grad[...] = backend.to_device(gradient(n, backend.to_host(p.data), inputs, t))
        opt.step()
        for n, p in params.items():
            trajectory[n].append(backend.to_host(p.data).copy())
    return {f"trajectory.{n}": np.stack(v) for n, v in trajectory.items()}


def generate(torch):
    cases = {}
    for i, case in enumerate(CASES):
        inputs = make_inputs(seed=i)
        cases[case] = {**inputs, **torch_outputs(torch, case, inputs)}
    return cases
