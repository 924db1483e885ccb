"""The opencl-mali schedules stay within Mali's limits (packer.compile.targets.MALI_LIMITS).

Measured on the scheduled tiny UNet, its kernels' buffers compacted to what one work-group
holds (the first passes of TVM's TIR lowering; before them a "shared" buffer still has the
whole tensor's shape), no code generated: every kernel's work-group (the product of its
threadIdx extents) and local ("shared") memory, in both dtypes. dlight reads the limits from
the target; this checks that it did.
"""

from __future__ import annotations

import pytest

from packer.compile import pipeline
from packer.compile.export import export_component
from packer.compile.targets import MALI_LIMITS, get_target
from tests.compile.tiny import tiny_unet


def _statements(stmt):
    """Every statement under ``stmt`` (TVM 0.27 exposes no TIR visitor to Python)."""
    yield stmt
    for field in ("body", "block", "then_case", "else_case", "init"):
        child = getattr(stmt, field, None)
        if child is not None and hasattr(child, "span"):
            yield from _statements(child)
    for child in getattr(stmt, "seq", None) or ():
        yield from _statements(child)


def _kernel_limits(mod) -> tuple[int, int, int]:
    """(kernels, largest work-group, most local-memory bytes) over the module's PrimFuncs."""
    import tvm
    from tvm import tirx

    kernels, largest_group, largest_local = 0, 0, 0
    for _, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        threads: dict[str, int] = {}
        local = 0
        for node in _statements(func.body):
            binding = getattr(node, "thread_binding", None)
            if binding is not None and str(binding.thread_tag).startswith("threadIdx"):
                threads[str(binding.thread_tag)] = int(node.extent)
            for buf in getattr(node, "alloc_buffers", None) or ():
                if str(buf.scope()) == "shared":
                    n = tvm.DataType(buf.dtype).bits // 8
                    for dim in buf.shape:
                        n *= int(dim)
                    local += n
        if threads:
            kernels += 1
            group = 1
            for extent in threads.values():
                group *= extent
            largest_group = max(largest_group, group)
            largest_local = max(largest_local, local)
    return kernels, largest_group, largest_local


def _compacted_kernels(mod, spec):
    """The module's PrimFuncs with each buffer shrunk to the region one work-group touches."""
    import tvm
    from tvm import tirx
    from tvm.s_tir import transform as st

    prims = tvm.IRModule({gv: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)})
    with spec.tvm_target():
        return tvm.transform.Sequential(
            [
                st.LowerCrossThreadReduction(),
                st.LowerInitBlock(),
                st.PlanAndUpdateBufferAllocationLocation(),
                st.ConvertBlocksToOpaque(),
                st.CompactBufferAllocation(),
            ]
        )(prims)


@pytest.fixture(scope="module")
def unet():
    return export_component("unet", tiny_unet(), (8, 8))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mali_kernels_fit_work_group_and_local_memory(unet, dtype):
    mali = get_target("opencl-mali")
    planned = pipeline.plan(pipeline.prepare_for(unet.mod, dtype, mali), mali)
    kernels, group, local = _kernel_limits(_compacted_kernels(planned, mali))
    assert kernels > 20, "no scheduled kernels found: the check would prove nothing"
    assert 32 <= group <= MALI_LIMITS["max_num_threads"], group
    assert local <= MALI_LIMITS["max_shared_memory_per_block"], local


def _elf(path) -> dict:
    """ELF facts read with binutils' readelf (it reads any architecture's files)."""
    import subprocess

    header = subprocess.run(
        ["readelf", "-h", str(path)], capture_output=True, text=True, check=True
    ).stdout
    symbols = subprocess.run(
        ["readelf", "--dyn-syms", "-W", str(path)], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(line.strip().split(":", 1) for line in header.splitlines() if ":" in line)
    defined = {
        line.split()[-1]
        for line in symbols.splitlines()
        if len(line.split()) >= 8 and line.split()[6] != "UND"
    }
    return {
        "machine": fields["Machine"].strip(),
        "type": fields["Type"].strip(),
        "symbols": defined,
    }


@pytest.mark.slow
def test_mali_library_is_an_aarch64_shared_object(tmp_path):
    from packer.compile import compile_component
    from tests.compile.tiny import tiny_clip

    clip = tiny_clip()
    cc = compile_component(
        "text_encoder",
        clip,
        configs=clip.config.to_dict(),
        latent_hw=(8, 8),
        target="opencl-mali",
        dtype="float16",
        cache_dir=tmp_path,
    )
    elf = _elf(cc.lib_path)
    assert elf["machine"] == "AArch64" and elf["type"].startswith("DYN"), elf
    # what TVM's loader looks up: the module blob (with the OpenCL kernels), its context slot,
    # and the host functions the VM calls
    assert {"__tvm_ffi__library_bin", "__tvm_ffi__library_ctx"} <= elf["symbols"]
    assert sum(name.startswith("__tvm_ffi_") for name in elf["symbols"]) > 10
    data = cc.lib_path.read_bytes()
    assert data.count(b"\x7fELF") == 1, "another ELF object is embedded in the library"
    assert b"cl_khr_fp16" in data  # the float16 kernels' OpenCL C source
    assert cc.requirements == {"arch": "aarch64", "features": ["cl_khr_fp16"]}
    assert cc.target_json["host"]["mtriple"] == "aarch64-linux-gnu"
