"""Winograd F(2x2, 3x3) convolution for 3x3 kernels at stride 1, with compiled transforms.

Each 4x4 tile d of the padded input (tiles overlap by 2) gives a 2x2 block of the output:
Y = A^T [(G g G^T) * (B^T d B)] A, summed over input channels. The sum over channels is 16
GEMMs, one per tile element: M[e] (C_out, T) = U[e] (C_out, C_in) @ V[e] (C_in, T), with T the
tiles of the whole batch, 2.25x fewer multiplications than the im2col GEMM, and the transformed
input V holds 4 values per input value where im2col's columns hold 9. The transforms are a few
additions per value, which NumPy cannot do in few passes: they are compiled (`fast` extra), and
Conv2d uses this only when the kernels are usable; otherwise its im2col formula runs, and the
tests hold the two equal.
"""
from .. import backend
from . import kernels
from .windows import out_size, pad

G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def applies(kernel_size, stride):
    return kernel_size == (3, 3) and stride == (1, 1)


def conv3x3(x, weight, padding):
    """Cross-correlation of x (N, C_in, H, W) with weight (C_out, C_in, 3, 3) at stride 1 and
    zero padding (ph, pw) -> (N, C_out, Ho, Wo)."""
    xp = backend.get_array_module(x)
    n, c_in, h, w = x.shape
    ho, wo = out_size(h, 3, 1, padding[0]), out_size(w, 3, 1, padding[1])
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    padded = pad(x, padding)
    # tiles read 2 t + 4 rows/columns: pad the far side up to that with zeros
    extra = (2 * th + 2 - padded.shape[2], 2 * tw + 2 - padded.shape[3])
    if extra != (0, 0):
        grown = xp.zeros((n, c_in, 2 * th + 2, 2 * tw + 2), dtype=x.dtype)
        grown[:, :, :padded.shape[2], :padded.shape[3]] = padded
        padded = grown
    v = xp.empty((16, c_in, n * th * tw), dtype=x.dtype)
    _input_transform(xp.ascontiguousarray(padded), th, tw, v)
    g = xp.asarray(G, dtype=x.dtype)
    u = xp.einsum("ak,oikl,bl->aboi", g, weight, g).reshape(16, len(weight), c_in)
    m = u @ v  # (16, C_out, T)
    y = xp.empty((n, len(weight), ho, wo), dtype=x.dtype)
    _output_transform(m, th, tw, y)
    return y


@kernels.compiled
def _input_transform(padded, th, tw, v):
    """v[4 r + k, c, tile] = (B^T d B)[r, k] for every 4x4 tile d of padded (N, C, ...);
    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]."""
    n, c = padded.shape[:2]
    for a in range(n):
        for ch in range(c):
            image = padded[a, ch]
            for i in range(th):
                row0, row1, row2, row3 = image[2 * i], image[2 * i + 1], image[2 * i + 2], \
                    image[2 * i + 3]
                base = (a * th + i) * tw
                for j in range(tw):
                    t, k = base + j, 2 * j
                    # B^T d, column by column
                    r0, r1, r2, r3 = row0[k] - row2[k], row1[k] + row2[k], row2[k] - row1[k], \
                        row1[k] - row3[k]
                    s0, s1, s2, s3 = row0[k + 1] - row2[k + 1], row1[k + 1] + row2[k + 1], \
                        row2[k + 1] - row1[k + 1], row1[k + 1] - row3[k + 1]
                    q0, q1, q2, q3 = row0[k + 2] - row2[k + 2], row1[k + 2] + row2[k + 2], \
                        row2[k + 2] - row1[k + 2], row1[k + 2] - row3[k + 2]
                    p0, p1, p2, p3 = row0[k + 3] - row2[k + 3], row1[k + 3] + row2[k + 3], \
                        row2[k + 3] - row1[k + 3], row1[k + 3] - row3[k + 3]
                    # (B^T d) B, row by row
                    v[0, ch, t], v[1, ch, t] = r0 - q0, s0 + q0
                    v[2, ch, t], v[3, ch, t] = q0 - s0, s0 - p0
                    v[4, ch, t], v[5, ch, t] = r1 - q1, s1 + q1
                    v[6, ch, t], v[7, ch, t] = q1 - s1, s1 - p1
                    v[8, ch, t], v[9, ch, t] = r2 - q2, s2 + q2
                    v[10, ch, t], v[11, ch, t] = q2 - s2, s2 - p2
                    v[12, ch, t], v[13, ch, t] = r3 - q3, s3 + q3
                    v[14, ch, t], v[15, ch, t] = q3 - s3, s3 - p3


@kernels.compiled
def _output_transform(m, th, tw, y):
    """y's 2x2 block of each tile = A^T M A, M the tile's 4x4 (m[4 r + k, o, tile])."""
    n, c, ho, wo = y.shape
    for a in range(n):
        for o in range(c):
            for i in range(th):
                for j in range(tw):
                    t = (a * th + i) * tw + j
                    # A^T M: rows 0 + 1 + 2 and 1 - 2 - 3, per column k
                    u0 = m[0, o, t] + m[4, o, t] + m[8, o, t]
                    u1 = m[1, o, t] + m[5, o, t] + m[9, o, t]
                    u2 = m[2, o, t] + m[6, o, t] + m[10, o, t]
                    u3 = m[3, o, t] + m[7, o, t] + m[11, o, t]
                    w0 = m[4, o, t] - m[8, o, t] - m[12, o, t]
                    w1 = m[5, o, t] - m[9, o, t] - m[13, o, t]
                    w2 = m[6, o, t] - m[10, o, t] - m[14, o, t]
                    w3 = m[7, o, t] - m[11, o, t] - m[15, o, t]
                    y[a, o, 2 * i, 2 * j] = u0 + u1 + u2
                    if 2 * j + 1 < wo:
                        y[a, o, 2 * i, 2 * j + 1] = u1 - u2 - u3
                    if 2 * i + 1 < ho:
                        y[a, o, 2 * i + 1, 2 * j] = w0 + w1 + w2
                        if 2 * j + 1 < wo:
                            y[a, o, 2 * i + 1, 2 * j + 1] = w1 - w2 - w3
