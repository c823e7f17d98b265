"""Weight hashes (backbones/fingerprint.py): the SVD cache key of a matrix and a base model's identity, which
decides whether an adapter may be applied. Expected digests are computed here with xxhash directly."""
import torch
import xxhash

from medclipsvd.backbones.fingerprint import state_fingerprint, tensor_hash


def _by_hand(t: torch.Tensor) -> str:
    h = xxhash.xxh3_128()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_tensor_hash_is_xxh3_of_dtype_shape_and_bytes():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert tensor_hash(t) == _by_hand(t)
    assert tensor_hash(t.T) == _by_hand(t.T.contiguous())  # a view hashes as its values, not its storage
    assert tensor_hash(t.requires_grad_(True)) == _by_hand(t.detach())
    assert tensor_hash(t.to(torch.bfloat16)) == _by_hand(t.to(torch.bfloat16))


def test_tensor_hash_tells_dtype_shape_and_values_apart():
    t = torch.arange(12, dtype=torch.float32)
    hashes = {tensor_hash(t), tensor_hash(t.reshape(3, 4)), tensor_hash(t.double()), tensor_hash(t + 1),
              tensor_hash(t.to(torch.bfloat16)), tensor_hash(t.to(torch.float16))}
    assert len(hashes) == 6


def test_tensor_hash_of_empty_tensors():
    a, b = torch.zeros(0), torch.zeros(0, 3)
    assert tensor_hash(a) == xxhash.xxh3_128(b"torch.float32|(0,)|").hexdigest()
    assert tensor_hash(a) != tensor_hash(b)


def test_state_fingerprint_is_order_free_and_names_count():
    a, b = torch.ones(2), torch.zeros(3)
    h = xxhash.xxh3_128()
    for name, t in (("a", a), ("b", b)):
        h.update(name.encode())
        h.update(_by_hand(t).encode())
    assert state_fingerprint({"b": b, "a": a}) == h.hexdigest()
    assert state_fingerprint({"a": b, "b": a}) != h.hexdigest()
    assert state_fingerprint({}) == xxhash.xxh3_128().hexdigest()
