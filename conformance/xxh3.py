"""XXH3 64-bit with seed 0, in plain Python: the checksum of the shmarena format.

Written from the XXH3 specification (xxhash's doc/xxhash_spec.md, "XXH3 64-bit"), for the
default 192-byte secret and seed 0 only. Slow (a few MB/s) but exact; `test_conformance.py`
checks it against the Rust `xxhash-rust` crate on inputs of every length 0..=300 and a few
large ones.
"""

M64 = (1 << 64) - 1

P32_1 = 0x9E3779B1
P32_2 = 0x85EBCA77
P32_3 = 0xC2B2AE3D
P64_1 = 0x9E3779B185EBCA87
P64_2 = 0xC2B2AE3D27D4EB4F
P64_3 = 0x165667B19E3779F9
P64_4 = 0x85EBCA77C2B2AE63
P64_5 = 0x27D4EB2F165667C5
PRIME_MX1 = 0x165667919E3779F9
PRIME_MX2 = 0x9FB21C651E98DF25

SECRET = bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e"
    "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e"
)
assert len(SECRET) == 192

STRIPE_LEN = 64
SECRET_CONSUME_RATE = 8
ACC_NB = 8


def _u32(b, i):
    return int.from_bytes(b[i : i + 4], "little")


def _u64(b, i):
    return int.from_bytes(b[i : i + 8], "little")


def _fold(a, b):
    p = a * b
    return (p ^ (p >> 64)) & M64


def _avalanche_xxh64(h):
    h ^= h >> 33
    h = (h * P64_2) & M64
    h ^= h >> 29
    h = (h * P64_3) & M64
    return h ^ (h >> 32)


def _avalanche(h):
    h ^= h >> 37
    h = (h * PRIME_MX1) & M64
    return h ^ (h >> 32)


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def _bswap64(x):
    return int.from_bytes(x.to_bytes(8, "little"), "big")


def _mix16(data, i, s):
    lo = _u64(data, i) ^ _u64(SECRET, s)
    hi = _u64(data, i + 8) ^ _u64(SECRET, s + 8)
    return _fold(lo, hi)


def _len_0to16(data):
    n = len(data)
    if n > 8:
        flip1 = _u64(SECRET, 24) ^ _u64(SECRET, 32)
        flip2 = _u64(SECRET, 40) ^ _u64(SECRET, 48)
        lo = _u64(data, 0) ^ flip1
        hi = _u64(data, n - 8) ^ flip2
        acc = (n + _bswap64(lo) + hi + _fold(lo, hi)) & M64
        return _avalanche(acc)
    if n >= 4:
        in1 = _u32(data, 0)
        in2 = _u32(data, n - 4)
        flip = _u64(SECRET, 8) ^ _u64(SECRET, 16)
        keyed = ((in2 + (in1 << 32)) & M64) ^ flip
        # rrmxmx
        h = keyed ^ _rotl(keyed, 49) ^ _rotl(keyed, 24)
        h = (h * PRIME_MX2) & M64
        h ^= ((h >> 35) + n) & M64
        h = (h * PRIME_MX2) & M64
        return h ^ (h >> 28)
    if n > 0:
        combo = (data[0] << 16) | (data[n >> 1] << 24) | data[n - 1] | (n << 8)
        flip = _u32(SECRET, 0) ^ _u32(SECRET, 4)
        return _avalanche_xxh64(combo ^ flip)
    return _avalanche_xxh64(_u64(SECRET, 56) ^ _u64(SECRET, 64))


def _len_17to128(data):
    n = len(data)
    acc = (n * P64_1) & M64
    if n > 32:
        if n > 64:
            if n > 96:
                acc += _mix16(data, 48, 96) + _mix16(data, n - 64, 112)
            acc += _mix16(data, 32, 64) + _mix16(data, n - 48, 80)
        acc += _mix16(data, 16, 32) + _mix16(data, n - 32, 48)
    acc += _mix16(data, 0, 0) + _mix16(data, n - 16, 16)
    return _avalanche(acc & M64)


def _len_129to240(data):
    n = len(data)
    acc = (n * P64_1) & M64
    for i in range(8):
        acc += _mix16(data, 16 * i, 16 * i)
    acc = _avalanche(acc & M64)
    for i in range(8, n // 16):
        acc += _mix16(data, 16 * i, 16 * (i - 8) + 3)
    acc += _mix16(data, n - 16, 136 - 17)
    return _avalanche(acc & M64)


# The secret words every stripe uses, precomputed once.
_SECRET_WORDS = [_u64(SECRET, i) for i in range(0, 192 - 7)]


def _accumulate_512(acc, data, i, s):
    words = [int.from_bytes(data[i + 8 * k : i + 8 * k + 8], "little") for k in range(8)]
    for k in range(8):
        v = words[k]
        key = v ^ _SECRET_WORDS[s + 8 * k]
        acc[k ^ 1] = (acc[k ^ 1] + v) & M64
        acc[k] = (acc[k] + (key & 0xFFFFFFFF) * (key >> 32)) & M64


def _scramble(acc):
    s = 192 - STRIPE_LEN
    for k in range(8):
        a = acc[k]
        a ^= a >> 47
        a ^= _SECRET_WORDS[s + 8 * k]
        acc[k] = (a * P32_1) & M64


def _long(data):
    n = len(data)
    acc = [P32_3, P64_1, P64_2, P64_3, P64_4, P32_2, P64_5, P32_1]
    stripes_per_block = (192 - STRIPE_LEN) // SECRET_CONSUME_RATE
    block_len = STRIPE_LEN * stripes_per_block
    blocks = (n - 1) // block_len
    for b in range(blocks):
        for s in range(stripes_per_block):
            _accumulate_512(acc, data, b * block_len + s * STRIPE_LEN, s * SECRET_CONSUME_RATE)
        _scramble(acc)
    stripes = ((n - 1) - block_len * blocks) // STRIPE_LEN
    for s in range(stripes):
        _accumulate_512(acc, data, blocks * block_len + s * STRIPE_LEN, s * SECRET_CONSUME_RATE)
    _accumulate_512(acc, data, n - STRIPE_LEN, 192 - STRIPE_LEN - 7)
    result = (n * P64_1) & M64
    for k in range(4):
        result += _fold(
            acc[2 * k] ^ _u64(SECRET, 11 + 16 * k), acc[2 * k + 1] ^ _u64(SECRET, 11 + 16 * k + 8)
        )
    return _avalanche(result & M64)


def xxh3_64(data) -> int:
    """XXH3 64-bit of `data` (bytes-like) with seed 0."""
    data = bytes(data)
    n = len(data)
    if n <= 16:
        return _len_0to16(data)
    if n <= 128:
        return _len_17to128(data)
    if n <= 240:
        return _len_129to240(data)
    return _long(data)
