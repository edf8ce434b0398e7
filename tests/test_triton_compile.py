"""Every Triton kernel of the project compiles for real GPU targets.

Triton's interpreter (``tests/test_triton_pom.py``) checks the kernels'
numerics on the CPU but runs them as Python, so it accepts code that a GPU
compilation rejects (a plain-float global read inside ``@triton.jit``, a
loop-carried value that changes type, ...). Here every kernel is compiled
ahead of time to PTX and a cubin for Ampere (sm_80) and Hopper (sm_90) with
``triton.compile``, for every degree and dtype the code launches it with.
That needs Triton and its bundled ``ptxas``, not a GPU."""

import pytest

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from pom.ops.polynomial import fused as tp  # noqa: E402

TARGETS = [GPUTarget("cuda", 80, 32), GPUTarget("cuda", 90, 32)]
DEGREES = [1, 2, 3, 4]
# dtype of the projection a = W_1 x: fp32, or bf16 / fp16 under autocast
A_DTYPES = ["fp32", "bf16", "fp16"]
TILES = {"BT": tp.BLOCK_T, "BC": tp.BLOCK_C}


def signatures(a_dtype):
    """Argument types of each kernel as ``_PolynomialState`` launches it."""
    return {
        "_state_forward_kernel": {
            "a_ptr": f"*{a_dtype}", "w_ptr": "*fp32", "part_ptr": "*fp32",
            "T": "i32", "W": "i32", "KW": "i32", "NS": "i32", "SPAN": "i32",
        },
        "_state_backward_kernel": {
            "a_ptr": f"*{a_dtype}", "w_ptr": "*fp32", "dh_ptr": "*fp32", "da_ptr": f"*{a_dtype}",
            "T": "i32", "W": "i32", "KW": "i32", "NT": "i32",
        },
    }  # fmt: skip


def kernels():
    return {name: obj for name, obj in vars(tp).items() if isinstance(obj, JITFunction) and name.endswith("_kernel")}


def test_every_kernel_has_a_compile_signature():
    assert set(kernels()) == set(signatures("fp32")), "a kernel was added or renamed: list its arguments here"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"sm_{t.arch}")
@pytest.mark.parametrize("name", sorted(signatures("fp32")))
def test_kernel_compiles_for_gpu(name, target):
    kernel = kernels()[name]
    for a_dtype in A_DTYPES:
        signature = signatures(a_dtype)[name]
        assert list(signature) == [arg for arg in kernel.arg_names if arg not in ("K", *TILES)]
        for degree in DEGREES:
            constexprs = {"K": degree, **TILES}
            source = ASTSource(
                fn=kernel, signature={**signature, **dict.fromkeys(constexprs, "constexpr")}, constexprs=constexprs
            )
            compiled = triton.compile(source, target=target)
            assert compiled.asm["cubin"], f"{name}: no cubin for sm_{target.arch}, degree {degree}, {a_dtype}"
            assert f".target sm_{target.arch}" in compiled.asm["ptx"]
