"""Plain EfficientNet-Lite0 inference written from the architecture description (Tan & Le 2019,
"Lite" variant: no squeeze-excitation, ReLU6, TensorFlow 'SAME' padding), one output pixel at a
time, with batch norm applied as its own step. Slow: for small random networks only."""

import numpy as np

EPS = 1e-3
# (blocks, stride of the first block) for the seven stages of EfficientNet-B0 / Lite0.
STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]


def same_pad(x, k, s):
    """x [C, H, W] padded as TensorFlow's 'SAME': total = max((ceil(n/s)-1)*s + k - n, 0), the
    odd pixel at the bottom/right."""
    pads = []
    for n in x.shape[1:]:
        out = int(np.ceil(n / s))
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0)] + pads)


def conv2d(x, w, s, groups=1):
    """x [C, H, W], w [O, C/groups, k, k]; direct loop over output pixels."""
    k = w.shape[-1]
    xp = same_pad(x, k, s)
    c_in = x.shape[0]
    out_h, out_w = int(np.ceil(x.shape[1] / s)), int(np.ceil(x.shape[2] / s))
    out = np.zeros((w.shape[0], out_h, out_w))
    per_group_in = c_in // groups
    per_group_out = w.shape[0] // groups
    for o in range(w.shape[0]):
        g = o // per_group_out
        channels = slice(g * per_group_in, (g + 1) * per_group_in)
        for i in range(out_h):
            for j in range(out_w):
                window = xp[channels, i * s:i * s + k, j * s:j * s + k]
                out[o, i, j] = np.sum(window * w[o])
    return out


def batch_norm(x, state, name):
    gamma, beta = state[name + ".weight"], state[name + ".bias"]
    mean, var = state[name + ".running_mean"], state[name + ".running_var"]
    return (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + EPS) * gamma[:, None, None] + beta[:, None, None]


def relu6(x):
    return np.minimum(np.maximum(x, 0.0), 6.0)


def forward(state, image):
    """image [H, W, 3] in 0..255 -> dict of levels (each [h, w, C]) and 'logits'."""
    x = (np.asarray(image, dtype=np.float64).transpose(2, 0, 1) - 127.0) / 128.0
    levels = {}
    x = relu6(batch_norm(conv2d(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    levels["stem"] = x
    block = 0
    for stage, (repeats, first_stride) in enumerate(STAGES, start=1):
        for r in range(repeats):
            p = f"_blocks.{block}."
            stride = first_stride if r == 0 else 1
            inputs = x
            if p + "_expand_conv.weight" in state:
                x = relu6(batch_norm(conv2d(x, state[p + "_expand_conv.weight"], 1), state, p + "_bn0"))
            x = relu6(batch_norm(conv2d(x, state[p + "_depthwise_conv.weight"], stride, groups=x.shape[0]),
                                 state, p + "_bn1"))
            x = batch_norm(conv2d(x, state[p + "_project_conv.weight"], 1), state, p + "_bn2")
            if stride == 1 and x.shape == inputs.shape:
                x = x + inputs
            block += 1
        levels[f"stage{stage}"] = x
    x = relu6(batch_norm(conv2d(x, state["_conv_head.weight"], 1), state, "_bn1"))
    levels["head"] = x
    pooled = x.mean(axis=(1, 2))
    levels = {k: v.transpose(1, 2, 0) for k, v in levels.items()}
    levels["logits"] = state["_fc.weight"] @ pooled + state["_fc.bias"]
    return levels


def random_state(rng, widths=(4, 3, 4, 5, 6, 6, 7, 8), head=10, classes=5, expand=3):
    """A random state dict with EfficientNet-Lite0's keys and structure at tiny widths.
    widths = (stem, stage1..stage7 outputs); kernels as Lite0 (3, 3, 5, 3, 5, 5, 3)."""
    kernels = (3, 3, 5, 3, 5, 5, 3)
    state = {}

    def conv(name, o, i, k):
        state[name + ".weight"] = rng.normal(size=(o, i, k, k)) * np.sqrt(2.0 / (i * k * k))

    def bn(name, c):
        state[name + ".weight"] = rng.uniform(0.5, 1.5, c)
        state[name + ".bias"] = rng.normal(size=c) * 0.1
        state[name + ".running_mean"] = rng.normal(size=c) * 0.1
        state[name + ".running_var"] = rng.uniform(0.5, 2.0, c)
        state[name + ".num_batches_tracked"] = np.array(7, dtype=np.int64)

    conv("_conv_stem", widths[0], 3, 3)
    bn("_bn0", widths[0])
    c_in, block = widths[0], 0
    for stage, (repeats, _) in enumerate(STAGES):
        c_out, k = widths[stage + 1], kernels[stage]
        for _r in range(repeats):
            p = f"_blocks.{block}."
            hidden = c_in
            if stage > 0:  # stage 1 has expand ratio 1: no expand conv
                hidden = c_in * expand
                conv(p + "_expand_conv", hidden, c_in, 1)
                bn(p + "_bn0", hidden)
            state[p + "_depthwise_conv.weight"] = rng.normal(size=(hidden, 1, k, k)) * np.sqrt(2.0 / (k * k))
            bn(p + "_bn1", hidden)
            conv(p + "_project_conv", c_out, hidden, 1)
            bn(p + "_bn2", c_out)
            c_in = c_out
            block += 1
    conv("_conv_head", head, c_in, 1)
    bn("_bn1", head)
    state["_fc.weight"] = rng.normal(size=(classes, head))
    state["_fc.bias"] = rng.normal(size=classes)
    return {k: np.asarray(v, dtype=np.int64 if k.endswith("num_batches_tracked") else np.float32)
            for k, v in state.items()}
