"""Compile the Triton kernels for an NVIDIA GPU on a machine without one, and read what they need.

A GPU launch that asks for more shared memory than the device has fails (``OutOfResources``),
and register spills make a kernel slow; both are decided at compile time, so they can be seen
before any GPU is at hand. :func:`compile_only` runs the kernels' own Python wrappers (forward
and backward) on CPU tensors with every kernel launch replaced by an ahead-of-time compile for
the target, through Triton's binder and compiler: the same specialisation (dtypes, constexprs,
16-byte divisibility) that the launch would compile on that GPU. The cubin's resource usage
is then read with the ``cuobjdump`` that ships with Triton.

    with compile_only(arch=90) as launches:   # sm_90: H100 / H200
        seq_mixer_conv_triton(*cpu_args).sum().backward()
    for launch in launches: print(launch)

Used by ``bench/kernels.py --compile-for`` and by the CI tests (tests/kernels/test_compiled.py),
which load this file by its path (bench/ is not a package). A development tool: it patches the
kernels' wrappers (``unittest.mock``), so it stays out of the installed package.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any
from unittest import mock

# Largest dynamic shared memory one block may use (cudaDevAttrMaxSharedMemoryPerBlockOptin), by arch.
SHARED_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448}
_WRAPPERS = {"seq_mixer_conv": "m2bert.kernels.seq_mixer_conv", "blockdiag_glu": "m2bert.kernels.blockdiag_glu"}


@dataclass
class Launch:
    """One compiled kernel specialisation and what it needs on the target."""

    kernel: str
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    shared_bytes: int
    shared_limit: int
    registers: int | None
    spill_bytes: int | None  # the per-thread local stack, mostly register spills
    compile_s: float

    @property
    def fits(self) -> bool:
        return self.shared_bytes <= self.shared_limit

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fits": self.fits}


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, stack bytes) of the cubin's kernel, from cuobjdump -res-usage."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None, None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=False).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


class _Compiler:
    """Stands in for a kernel module: ``mod.kernel[grid](*args)`` compiles instead of launching."""

    def __init__(self, module: ModuleType, arch: int, launches: list[Launch], seen: set[str]) -> None:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend

        self._module = module
        self._arch = arch
        self._target = GPUTarget("cuda", arch, 32)
        self._backend = make_backend(self._target)
        self._launches = launches
        self._seen = seen

    def __getattr__(self, name: str) -> Any:
        kernel = getattr(self._module, name)
        compiler = self

        class _Grid:
            def __getitem__(self, grid: Any):
                return lambda *args, **kwargs: compiler.compile(kernel, args, kwargs)

        return _Grid()

    def compile(self, kernel: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        from triton.compiler import ASTSource
        from triton.compiler import compile as triton_compile
        from triton.runtime.jit import create_function_from_signature, find_paths_if, get_iterable_path

        # As JITFunction.run does before compiling (triton 3.3), with this target's backend.
        binder = create_function_from_signature(kernel.signature, kernel.params, self._backend)
        bound_args, specialization, _ = binder(*args, **kwargs)
        options = self._backend.parse_options(kwargs)
        key = f"{kernel.__name__}{specialization}{options}"
        if key in self._seen:
            return
        self._seen.add(key)
        sigvals = [s[0] for s in specialization]
        signature = {p.name: v for p, v in zip(kernel.params, sigvals)}
        paths = find_paths_if(sigvals, lambda _, v: v == "constexpr")
        constexprs = {path: get_iterable_path(list(bound_args.values()), path) for path in paths}
        attrvals = [s[1] for s in specialization]
        attr_paths = find_paths_if(attrvals, lambda _, x: isinstance(x, str))
        attrs = {p: self._backend.parse_attr(get_iterable_path(attrvals, p)) for p in attr_paths}
        t0 = time.perf_counter()
        compiled = triton_compile(ASTSource(kernel, signature, constexprs, attrs), target=self._target,
                                  options=options.__dict__)
        regs, stack = _resource_usage(compiled.asm["cubin"])
        named = {p.name: bound_args[p.name] for p in kernel.params if p.is_constexpr}
        self._launches.append(Launch(
            kernel=kernel.__name__, constexprs={k: v for k, v in named.items() if isinstance(v, (int, str, bool))},
            num_warps=options.num_warps, num_stages=options.num_stages, shared_bytes=compiled.metadata.shared,
            shared_limit=SHARED_LIMIT.get(self._arch, SHARED_LIMIT[80]), registers=regs, spill_bytes=stack,
            compile_s=round(time.perf_counter() - t0, 2)))


@contextlib.contextmanager
def compile_only(arch: int = 90) -> Iterator[list[Launch]]:
    """Within the block, the fused kernels' wrappers compile for sm_``arch`` instead of launching.

    Outputs of the wrappers are then uninitialised; only the list of launches means anything.
    Each distinct specialisation is compiled once.
    """
    import importlib

    from m2bert.kernels._loader import _load

    launches: list[Launch] = []
    seen: set[str] = set()
    compilers = {name: _Compiler(_load(name, interpret=False), arch, launches, seen) for name in _WRAPPERS}
    with contextlib.ExitStack() as stack:
        for name, modname in _WRAPPERS.items():
            wrapper = importlib.import_module(modname)
            stack.enter_context(mock.patch.object(wrapper, "kernel_module",
                                                  lambda _name, _device, _c=compilers[name]: (_c, False)))
        yield launches
